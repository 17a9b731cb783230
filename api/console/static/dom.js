// Building the page: elements are made with text nodes only, never parsed from strings, so
// nothing the API returns (a job's name, a model's answer) can become markup or script.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "for") el.htmlFor = value;
    else if (name === "value") el.value = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function fmtNumber(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 1000 ? value.toFixed(0) : value.toPrecision(digits);
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// Who submitted a job: its key's name, else the key's id ("–": made before keys were recorded).
export function who(job) {
  if (job.submitted_by_name) return job.submitted_by_name;
  return job.submitted_by ? `key ${job.submitted_by}` : "–";
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function badge(status) {
  return h("span", { class: `badge s-${status}`, "data-status": status }, status);
}

export function progressBar(progress, label) {
  if (!progress || !progress.total) return h("span", { class: "muted" }, "–");
  const pct = Math.round((100 * progress.step) / progress.total);
  return h("span", { class: "prog" },
    h("progress", { max: progress.total, value: progress.step, "aria-label": label }),
    h("span", { class: "prog-text" }, `${progress.step}/${progress.total} (${pct}%)`));
}

export function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.textContent = ""; }, 6000);
}

// A table from rows of cells; `head` is a list of column names.
export function table(head, rows, caption) {
  return h("table", {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

// Shows problems `[{field, msg}]` next to the form control whose data-field matches, and the
// rest in `box`. Returns how many were shown.
export function showProblems(form, box, problems) {
  form.querySelectorAll(".field-error").forEach((e) => e.remove());
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  const rest = [];
  for (const p of problems) {
    const input = form.querySelector(`[data-field="${CSS.escape(p.field)}"]`);
    if (!input) { rest.push(p); continue; }
    const id = `${input.id}-error`;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", id);
    input.insertAdjacentElement("afterend", h("p", { class: "field-error", id }, p.msg));
  }
  replace(box, rest.length ? h("ul", { class: "problems" },
    rest.map((p) => h("li", {}, h("code", {}, p.field), ": ", p.msg))) : null);
  return problems.length;
}
