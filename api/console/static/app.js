// The console's shell: the router (real paths, History API), sign-in and sign-out.
import { ApiError, session } from "./api.js";
import { h, replace } from "./dom.js";

const PAGES = [
  [/^\/jobs\/?$/, "jobs"],
  [/^\/jobs\/new$/, "newjob"],
  [/^\/jobs\/([^/]+)$/, "job"],
  [/^\/compare$/, "compare"],
  [/^\/admin$/, "admin"],
];
const main = document.getElementById("main");
let cleanup = null;

export function go(path) {
  history.pushState(null, "", path);
  render();
}

async function render() {
  if (cleanup) { cleanup(); cleanup = null; }
  const path = location.pathname;
  updateHeader();
  if (!session.key) return signInPage(path === "/sign-in" ? "/jobs" : path + location.search);
  if (path === "/sign-in") return go("/jobs");
  const found = PAGES.map(([re, name]) => [path.match(re), name]).find(([m]) => m);
  if (!found) return replace(main, h("h1", {}, "Not found"), h("p", {}, "No such page."));
  const [match, name] = found;
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.getAttribute("href") === path) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  const controller = new AbortController();
  cleanup = () => controller.abort();
  replace(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const page = await import(`./pages/${name}.js`);
    await page.render(main, { params: match.slice(1), query: new URLSearchParams(location.search), signal: controller.signal });
  } catch (err) {
    if (controller.signal.aborted) return;
    replace(main, h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, errorText(err)));
  }
}

export function errorText(err) {
  return err instanceof ApiError ? err.message : `The console could not load: ${err}`;
}

function updateHeader() {
  const signedIn = Boolean(session.key);
  document.querySelector("header nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  const match = (session.key || "").match(/^lethe_([A-Za-z0-9]+)_/);  // the key's public id only
  document.getElementById("who").textContent = signedIn ? (match ? `key ${match[1]}` : "signed in") : "";
}

function signInPage(next) {
  document.title = "Sign in · Lethe";
  if (location.pathname !== "/sign-in") history.replaceState(null, "", "/sign-in");
  const input = h("input", { id: "api-key", type: "password", name: "api-key", autocomplete: "off", required: true, "data-field": "key", spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert", id: "sign-in-error" });
  const form = h("form", { class: "card narrow", onsubmit: (e) => { e.preventDefault(); signIn(input, error, next); } },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste an API key (from ", h("code", {}, "lethe keys create"), " or your admin). It is kept in this tab only and sent in a header, never in a link."),
    h("label", { for: "api-key" }, "API key"), input, error,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  replace(main, form);
  input.focus();
}

async function signIn(input, error, next) {
  const key = input.value.trim();
  // the API decides: a key it refuses here (401) is not kept
  const response = await fetch("/v1/jobs?limit=1", { headers: { Authorization: `Bearer ${key}` } });
  if (response.status === 401 || response.status >= 500) {
    error.textContent = response.status === 401
      ? "This key is unknown or revoked." : `The service answered ${response.status}: try again.`;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", "sign-in-error");
    input.focus();
    return;
  }
  session.signIn(key);
  go(next);
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download") || e.ctrlKey || e.metaKey || e.shiftKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/v1") || url.pathname.startsWith("/docs")) return;
  e.preventDefault();
  go(url.pathname + url.search);
});
document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  go("/sign-in");
});
window.addEventListener("popstate", render);
window.addEventListener("lethe:unauthorized", () => {
  session.signOut();
  render();
});
render();
