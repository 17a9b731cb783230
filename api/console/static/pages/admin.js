// Admin: the tenant's API keys (create with scopes, revoke) and its audit log, with the check
// of the log's hash chain. The API refuses all of it (403) to keys without the admin scope.
import { api, ApiError } from "../api.js";
import { fmtTime, h, replace, table, toast } from "../dom.js";

const SCOPES = ["read", "submit", "admin"];

export async function render(main, { signal }) {
  document.title = "Admin · Lethe";
  let keys;
  try {
    keys = await api("/v1/keys", { signal });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 403)) throw err;
    replace(main, h("h1", {}, "Admin"), h("p", { role: "alert" }, "This key has no admin scope: keys and the audit log are for admins."));
    return;
  }
  const keyBox = h("div", {}), auditBox = h("div", {});
  const reload = async () => replace(keyBox, keyTable(await api("/v1/keys"), reload));
  replace(keyBox, keyTable(keys, reload));
  replace(main, h("h1", {}, "Admin"),
    h("section", { "aria-labelledby": "h-keys" }, h("h2", { id: "h-keys" }, "API keys"), createForm(reload), keyBox),
    h("section", { "aria-labelledby": "h-audit" }, h("h2", { id: "h-audit" }, "Audit log"), chainCheck(), auditBox));
  await auditPage(auditBox, 0, signal);
}

function keyTable(keys, reload) {
  return h("div", { class: "table-wrap" }, table(["Id", "Name", "Scopes", "Created", "Revoked", ""], keys.map((k) => [
    h("code", {}, k.id), k.name || "–", k.scopes, fmtTime(k.created_at), k.revoked_at ? fmtTime(k.revoked_at) : "–",
    k.revoked_at ? "" : h("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.id}`, onclick: () => revoke(k, reload) }, "Revoke")]),
  "This tenant's keys (the keys themselves are never stored)"));
}

async function revoke(key, reload) {
  if (!confirm(`Revoke key ${key.id}? Requests with it will be refused from now on.`)) return;
  try {
    await api(`/v1/keys/${key.id}/revoke`, { method: "POST" });
    toast(`Key ${key.id} revoked.`);
    document.querySelectorAll(".notice").forEach((n) => n.remove());
    await reload();
  } catch (err) {
    toast(`Could not revoke: ${err.message}`);
  }
}

function createForm(reload) {
  const shown = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card", id: "key-form" },
    h("div", { class: "field" }, h("label", { for: "key-name" }, "Name"), h("input", { id: "key-name", name: "name", maxlength: 200 })),
    h("fieldset", {}, h("legend", {}, "Scopes"), SCOPES.map((s) => h("label", { class: "check" },
      h("input", { type: "checkbox", name: "scopes", value: s, checked: s === "read" }), ` ${s}`))),
    h("button", { type: "submit", class: "primary" }, "Create key"), shown);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const scopes = [...form.querySelectorAll("input[name=scopes]:checked")].map((i) => i.value);
    try {
      const key = await api("/v1/keys", { method: "POST", body: { scopes, name: form.elements.name.value } });
      const value = h("input", { id: "new-key", readonly: true, value: key.key, "aria-label": "The new key" });
      replace(shown, h("div", { class: "notice" }, h("p", {}, `Key ${key.id} (${key.scopes}). Copy it now: it is shown only once.`), value,
        h("button", { type: "button", onclick: () => navigator.clipboard?.writeText(key.key).then(() => toast("Copied.")) }, "Copy")));
      await reload();
    } catch (err) {
      replace(shown, h("p", { class: "error", role: "alert" }, err.message));
    }
  });
  return form;
}

function chainCheck() {
  const out = h("div", { "aria-live": "polite" });
  const run = async () => {
    replace(out, "Checking…");
    const r = await api("/v1/audit/verify");
    replace(out, h("p", { class: r.ok ? "ok" : "bad", id: "chain-verdict" },
      r.ok ? `✓ The chain is intact: ${r.checked} lines, each linked to the one before, up to line ${r.last_seq}.`
        : `✗ The chain is broken (${r.checked} lines checked):`),
    r.problems.length ? h("ul", {}, r.problems.map((p) => h("li", {}, p))) : null);
  };
  return h("div", { class: "actions" }, h("button", { type: "button", id: "verify-chain", onclick: run }, "Verify the chain"), out);
}

async function auditPage(box, after, signal) {
  const page = await api(`/v1/audit?after=${after}&limit=50`, { signal });
  const more = page.next_after ? h("button", { type: "button", onclick: () => auditPage(box, page.next_after) }, "Next 50 lines") : null;
  replace(box, h("div", { class: "table-wrap" }, table(["#", "When", "Actor", "Action", "Target", "Status", "Hash"], page.items.map((l) => [
    l.seq, fmtTime(l.ts), l.key_id ? `key ${l.key_id}` : l.actor, h("code", {}, l.action), l.target || "–", l.status_code ?? "–",
    h("code", { class: "hash", title: l.hash }, `${l.hash.slice(0, 12)}…`)]), "Audit lines, oldest first")), more);
}
