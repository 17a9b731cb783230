// A new job: upload datasets, start from an example spec or paste YAML, validate with the API's
// own checks (POST /v1/specs/validate), then submit (POST /v1/jobs).
import { api, ApiError } from "../api.js";
import { go } from "../app.js";
import { fmtBytes, h, replace, showProblems, table } from "../dom.js";

const SCHEMAS = ["pairs", "prompts", "book", "pku_saferlhf", "truthfulqa"];
const FORMATS = ["auto", "jsonl", "csv", "parquet", "text"];

export async function render(main, { signal }) {
  document.title = "New job · Lethe";
  const [datasets, examples] = await Promise.all([
    api("/v1/datasets?limit=200", { signal }), api("/v1/specs/examples", { signal })]);
  const list = h("div", {});
  const state = { datasets: datasets.items };
  const refresh = async () => {
    state.datasets = (await api("/v1/datasets?limit=200")).items;
    replace(list, datasetTable(state.datasets));
  };
  replace(list, datasetTable(state.datasets));
  replace(main, h("h1", {}, "New job"),
    h("section", { "aria-labelledby": "h-data" }, h("h2", { id: "h-data" }, "1. Datasets"), uploadForm(refresh), list),
    h("section", { "aria-labelledby": "h-spec" }, h("h2", { id: "h-spec" }, "2. Spec"), specForm(examples, state)));
}

function field(id, label, control, hint) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null);
}

function uploadForm(refresh) {
  const result = h("div", { role: "status" });
  const problems = h("div", {});
  const form = h("form", { class: "card", id: "upload-form" },
    field("ds-file", "File (JSONL, CSV, Parquet or text)", h("input", { id: "ds-file", name: "file", type: "file", required: true, "data-field": "file" })),
    field("ds-schema", "Schema", h("select", { id: "ds-schema", name: "schema", "data-field": "schema" }, SCHEMAS.map((s) => h("option", { value: s }, s))),
      "pairs: prompt and response; prompts: prompts alone; book: a text to continue"),
    field("ds-format", "Format", h("select", { id: "ds-format", name: "format", "data-field": "format" }, FORMATS.map((s) => h("option", { value: s }, s)))),
    field("ds-name", "Name (optional)", h("input", { id: "ds-name", name: "name", type: "text", maxlength: 200, "data-field": "name" })),
    problems, h("button", { type: "submit", class: "primary" }, "Upload"), result);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    replace(result, "Uploading…");
    try {
      const ds = await api("/v1/datasets", { method: "POST", form: new FormData(form) });
      showProblems(form, problems, []);
      await refresh();
      replace(result, h("p", { class: "ok" }, `Uploaded ${ds.name}: ${ds.row_count} rows (${ds.schema}), `, h("code", {}, ds.reference)));
    } catch (err) {
      replace(result, null);
      const shown = err instanceof ApiError && err.problems.length ? err.problems : [{ field: "file", msg: err.message }];
      showProblems(form, problems, shown.map((p) => ({ ...p, field: p.field.replace(/^(body|form)\./, "") })));
    }
  });
  return form;
}

function datasetTable(items) {
  if (!items.length) return h("p", { class: "muted" }, "No datasets uploaded yet.");
  return h("div", { class: "table-wrap" }, table(["Name", "Schema", "Rows", "Size", "Reference"],
    items.map((d) => [d.name, d.schema, d.row_count ?? "–", fmtBytes(d.size), h("code", {}, d.reference)]), "This tenant's datasets"));
}

// The local paths a spec names as `source:`: what the user maps to uploaded datasets.
function localSources(text) {
  const found = [...text.matchAll(/source:\s*["']?([^\s"'#]+)/g)].map((m) => m[1]);
  return [...new Set(found.filter((s) => !/^[a-z][a-z0-9+.-]*:/i.test(s)))];
}

function specForm(examples, state) {
  const text = h("textarea", { id: "spec-text", name: "text", rows: 22, spellcheck: "false", "data-field": "text", "aria-describedby": "spec-hint" });
  const mapping = h("div", { class: "mapping" });
  const problems = h("div", { id: "spec-problems", "aria-live": "polite" });
  const verdict = h("p", { role: "status", id: "spec-verdict" });
  const example = h("select", { id: "spec-example" }, h("option", { value: "" }, "— paste your own —"),
    examples.map((e) => h("option", { value: e.name, title: e.description }, e.name)));
  const form = h("form", { class: "card", id: "spec-form" },
    field("spec-example", "Start from an example", example),
    mapping,
    field("spec-text", "Spec (YAML)", text),
    h("p", { class: "hint", id: "spec-hint" }, "The same YAML as `lethe unlearn`. Datasets are named by reference (dataset:ID)."),
    problems, verdict,
    h("div", { class: "actions" },
      h("button", { type: "button", id: "validate", onclick: () => check(form, text, problems, verdict) }, "Validate"),
      h("button", { type: "submit", class: "primary" }, "Submit job")));
  example.addEventListener("change", () => {
    const chosen = examples.find((e) => e.name === example.value);
    if (chosen) text.value = chosen.text;
    drawMapping(mapping, text, state);
  });
  text.addEventListener("change", () => drawMapping(mapping, text, state));
  form.addEventListener("submit", (e) => { e.preventDefault(); submit(form, text, problems, verdict); });
  return form;
}

// One select per local path in the spec: choosing a dataset rewrites that path to its reference.
function drawMapping(box, text, state) {
  const paths = localSources(text.value);
  if (!paths.length) return replace(box, null);
  replace(box, h("fieldset", {}, h("legend", {}, "Datasets for the files this spec names"),
    paths.map((path, i) => {
      const id = `map-${i}`;
      const base = path.split("/").at(-1);
      const select = h("select", { id, "data-path": path }, h("option", { value: "" }, "— choose a dataset —"),
        state.datasets.map((d) => h("option", { value: d.reference, selected: d.name === base }, `${d.name} (${d.row_count ?? "?"} rows) ${d.reference.slice(0, 16)}…`)));
      return field(id, path, select);
    }),
    h("button", { type: "button", id: "use-datasets", onclick: () => {
      box.querySelectorAll("select[data-path]").forEach((s) => {
        if (s.value) text.value = text.value.replaceAll(s.dataset.path, s.value);
      });
      drawMapping(box, text, state);
    } }, "Use these datasets")));
}

// The line of the YAML where a problem's field is, found key by key (`unlearn.train.lr`).
function lineOf(text, fieldPath) {
  const lines = text.split("\n");
  let at = 0;
  for (const key of fieldPath.split(".")) {
    const i = lines.findIndex((l, n) => n >= at && new RegExp(`^\\s*-?\\s*${key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\s*:`).test(l));
    if (i < 0) continue;
    at = i;
  }
  return at + 1;
}

async function check(form, text, problems, verdict) {
  verdict.textContent = "Validating…";
  const result = await api("/v1/specs/validate", { method: "POST", body: { text: text.value } });
  const located = result.problems.map((p) => p.field === "text" ? p : { field: `line ${lineOf(text.value, p.field)}: ${p.field}`, msg: p.msg });
  showProblems(form, problems, located.map((p) => p.field === "text" ? { field: "text", msg: p.msg } : p));
  verdict.className = result.valid ? "ok" : "bad";
  verdict.textContent = result.valid ? "✓ Valid: this spec can be submitted." : `✗ ${result.problems.length} problem(s): fix them and validate again.`;
  return result;
}

async function submit(form, text, problems, verdict) {
  const result = await check(form, text, problems, verdict);
  if (!result.valid) return;
  try {
    const job = await api("/v1/jobs", { method: "POST", body: result.spec, extraHeaders: { "Idempotency-Key": crypto.randomUUID() } });
    go(`/jobs/${job.id}`);
  } catch (err) {
    showProblems(form, problems, err instanceof ApiError && err.problems.length ? err.problems : [{ field: "submit", msg: err.message }]);
    verdict.className = "bad";
    verdict.textContent = "✗ The service refused the job.";
  }
}
