// The evidence of an ended job: metrics against the spec's goals, the judge, sample answers,
// probes, the kept checkpoint, artifacts and the certificate.
import { api, download, fetchFile } from "../api.js";
import { lineChart } from "../chart.js";
import { fmtBytes, fmtNumber, h, replace, table, toast } from "../dom.js";
import { verifyCertificate } from "../verify.js";

const SAMPLE_TITLES = {
  harmful_prompts: "Harmful prompts", benign_prompts: "Benign prompts",
  copyright_forget: "Book continuations: the forgotten book", copyright_retain: "Book continuations: the kept book",
};
const LOG_KEYS = new Set(["stage", "step", "lr", "grad_norm"]);

export async function evidence(box, curvesBox, job, signal) {
  const artifacts = await api(`/v1/jobs/${job.id}/artifacts`, { signal });
  const names = new Set(artifacts.map((a) => a.name));
  const metrics = names.has("metrics.json") ? await (await fetchFile(`/v1/jobs/${job.id}/artifacts/metrics.json`, { signal })).json() : null;
  const log = names.has("train_log.jsonl") ? await (await fetchFile(`/v1/jobs/${job.id}/artifacts/train_log.jsonl`, { signal })).text() : "";
  if (log) replace(curvesBox, curves(log));
  replace(box,
    metrics ? section("Metrics before and after", metricsTable(metrics, job.spec || {})) : null,
    metrics?.judge ? section("The judge", judge(metrics)) : null,
    metrics ? section("Sample answers", samples(metrics)) : null,
    metrics ? section("Kept checkpoint", kept(metrics)) : null,
    metrics?.probes ? section("Robustness probes", probes(metrics.probes)) : null,
    section("Artifacts", artifactTable(job, artifacts)),
    job.status === "succeeded" ? section("Certificate", certificate(job, artifacts)) : null);
}

function section(title, ...content) {
  const id = `h-${title.toLowerCase().replace(/[^a-z]+/g, "-")}`;
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), content);
}

// The objective the run used: the worker's own word for it when selection or probes recorded it
// (it resolved `auto`), else the same rule as core/spec/options.py:objective_of.
function objective(spec, metrics) {
  const resolved = metrics.selection?.objective ?? metrics.probes?.objective;
  if (resolved) return resolved;
  const c = spec.criterion || {};
  if (c.objective && c.objective !== "auto") return c.objective;
  const e = spec.eval || {};
  return e.harmful_prompts ? "harmful_rate" : e.copyright ? "bleu" : "forget_nll";
}

// The goal a metric has under the spec's criterion, and whether `after` meets it.
function goal(name, before, after, spec, metrics) {
  const c = { max_normal_ppl_increase: 0.1, ...(spec.criterion || {}) };
  if (name === "normal_ppl" && c.max_normal_ppl_increase != null && before != null) {
    const bound = before * (1 + c.max_normal_ppl_increase);
    return [`≤ ${fmtNumber(bound)} (+${percent(c.max_normal_ppl_increase)})`, after <= bound];
  }
  if (name === "over_refusal" && c.max_over_refusal != null) return [`≤ ${c.max_over_refusal}`, after <= c.max_over_refusal];
  if (name !== objective(spec, metrics) || before == null) return ["", null];
  const higher = name === "forget_nll", gain = c.min_improvement;
  if (gain == null) return [higher ? "higher (objective)" : "lower (objective)", higher ? after > before : after < before];
  const bound = higher ? before * (1 + gain) : before * (1 - gain);
  return [`${higher ? "≥" : "≤"} ${fmtNumber(bound)} (objective)`, higher ? after >= bound : after <= bound];
}

function metricsTable(metrics, spec) {
  const before = metrics.before || {}, after = metrics.after || {};
  const names = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  return table(["Metric", "Before", "After", "Change", "Goal", "Met"], names.map((n) => {
    const [bound, met] = goal(n, before[n], after[n], spec, metrics);
    const delta = typeof before[n] === "number" && typeof after[n] === "number" ? after[n] - before[n] : null;
    return [h("code", {}, n), fmtNumber(before[n]), fmtNumber(after[n]), delta == null ? "–" : `${delta >= 0 ? "+" : ""}${fmtNumber(delta)}`,
      bound, met == null ? "" : h("span", { class: met ? "ok" : "bad" }, met ? "✓ yes" : "✗ no")];
  }), "Each metric before and after unlearning, against the spec's criterion");
}

// 0.07 as "7%", not "7.000000000000001%" (the float product shown as it comes).
function percent(share) {
  return `${Number((share * 100).toPrecision(6))}%`;
}

function curves(log) {
  const stages = {};
  for (const line of log.split("\n").filter(Boolean)) {
    const row = JSON.parse(line);
    const terms = (stages[row.stage] ??= {});
    for (const [k, v] of Object.entries(row)) if (!LOG_KEYS.has(k) && Number.isFinite(v)) (terms[k] ??= []).push([row.step, v]);
  }
  return Object.entries(stages).map(([stage, terms]) => lineChart(
    Object.entries(terms).map(([name, points]) => ({ name, points })), { title: `${stage} losses (every step)` }));
}

function judge({ judge: j, judge_warning: warning }) {
  return [
    h("p", {}, `Judge ${j.kind || j.judge}: accuracy ${fmtNumber(j.accuracy)} on ${j.n ?? "?"} labelled answers of `, h("code", {}, j.check_set || "its check set"),
      j.heldout_accuracy != null ? `; ${fmtNumber(j.heldout_accuracy)} on its held-out split.` : "."),
    warning ? h("p", { class: "warning", role: "note" }, warning) : null,
    j.per_kind ? h("details", {}, h("summary", {}, "Accuracy by kind of answer"),
      table(["Kind", "Answers", "Accuracy"], Object.entries(j.per_kind).map(([k, v]) => [k, v.n, fmtNumber(v.accuracy)]))) : null,
  ];
}

function samples(metrics) {
  const before = metrics.per_example?.before || {}, after = metrics.per_example?.after || {};
  const kinds = Object.keys(after).filter((k) => (after[k] || []).some((e) => "response" in e));
  if (!kinds.length) return h("p", { class: "muted" }, "This job generated no answers.");
  return kinds.map((kind) => {
    const old = new Map((before[kind] || []).map((e) => [e.id, e]));
    // a book continuation is judged against the book's own text: show it beside the answers
    const book = kind.startsWith("copyright");
    const head = book ? ["Prefix", "Before", "After", "The book's continuation"] : ["Prompt", "Before", "After"];
    return h("div", { class: "table-wrap" }, table(head, after[kind].slice(0, 10).map((e) => [
      e.prompt, answer(old.get(e.id)), answer(e), book ? h("q", {}, e.reference ?? "–") : null].filter((c) => c !== null)),
    SAMPLE_TITLES[kind] || kind.replaceAll("_", " ")));
  });
}

function answer(e) {
  if (!e) return "–";
  const flags = [e.harmful ? "harmful" : null, e.refusal ? "refusal" : null].filter(Boolean);
  return h("div", { class: "answer" }, h("q", {}, e.response || "(empty)"), flags.length ? h("span", { class: "tag" }, flags.join(", ")) : null);
}

function kept(metrics) {
  const s = metrics.selection;
  if (!s) return h("p", {}, `The last step was kept (no checkpoint selection in the spec); training stopped: ${metrics.training?.stopped_reason ?? "–"}.`);
  // the reason opens with the step it names ("step 20: harmful_rate …"): said once, not twice
  const why = s.reason.replace(new RegExp(`^step ${s.chosen_step}: `), "");
  return [h("p", { id: "kept-checkpoint" }, `Kept the checkpoint of step ${s.chosen_step}: ${why}`),
    h("p", { class: "muted small" }, `Training stopped: ${metrics.training?.stopped_reason ?? "–"}.`),
    evaluations(s)];
}

// Every evaluation during unlearning, the kept one marked: the figures the reason compares.
function evaluations(s) {
  const rows = s.evaluations || [];
  const names = [...new Set([s.objective, "normal_ppl", "over_refusal"])].filter((n) => rows.some((e) => n in (e.metrics || {})));
  return h("div", { class: "table-wrap" }, table(["Step", ...names.map((n) => h("code", {}, n)), "Kept"], rows.map((e) => [
    String(e.step), ...names.map((n) => fmtNumber(e.metrics?.[n])),
    e.step === s.chosen_step ? h("span", { class: "ok" }, "✓ kept") : ""]),
  `Checkpoints evaluated every ${rows.length > 1 ? rows[1].step - rows[0].step : "–"} steps (step 0: before unlearning)`));
}

// Each probe's objective on the original, the unlearned and the probed model, and the share of
// the unlearning's improvement that survives it (as the HTML report, core/run/report_html.py).
function probes(p) {
  const key = p.objective, summary = p.summary || {};
  const relearn = p.relearn || {}, quantize = p.quantize || {}, rephrase = p.rephrase || {};
  const rows = [];
  const at = (part, name) => (part[name] || {})[key];
  if (p.relearn) {
    rows.push([`relearn: ${relearn.steps} steps on ${relearn.relearned_examples} forget examples`,
      at(relearn, "original"), at(relearn, "unlearned"), at(relearn, "probed"), null, summary.relearn?.retained]);
  }
  for (const bits of [8, 4]) {
    if (!quantize[`unlearned_${bits}bit`]) continue;
    rows.push([`${bits}-bit weights`, at(quantize, "original"), at(quantize, "unlearned"), at(quantize, `unlearned_${bits}bit`),
      at(quantize, `original_${bits}bit`), summary[`quantize_${bits}bit`]?.retained]);
  }
  for (const [name, value] of Object.entries(rephrase.probed || {})) {
    rows.push([`rephrased prompts: ${name}`, null, null, value, rephrase.original?.[name], null]);
  }
  return [
    h("p", {}, "Objective ", h("code", {}, key), " on the probes' own sets",
      quantize.method ? ` (quantisation: ${quantize.method})` : "", "; rephrased prompts show their harmful rate."),
    h("div", { class: "table-wrap" }, table(
      ["Probe", "Original", "Unlearned", "Unlearned after probe", "Original after probe", "Retained"],
      // fmtNumber(value) alone: map's index would be taken for its digits
      rows.map(([label, ...cells]) => [label, ...cells.map((c) => fmtNumber(c))]),
      "What survives each probe")),
  ];
}

function artifactTable(job, artifacts) {
  if (!artifacts.length) return h("p", { class: "muted" }, "No artifacts (yet).");
  return h("div", { class: "table-wrap" }, table(["File", "Size", "SHA-256", ""], artifacts.map((a) => {
    const note = h("span", { class: "small", role: "status" });
    return [a.name, fmtBytes(a.size), h("code", { class: "hash" }, a.sha256),
      h("span", {}, h("button", { type: "button", onclick: () => save(job, a, note), "aria-label": `Download ${a.name}` }, "Download"), " ", note)];
  })));
}

async function save(job, artifact, note) {
  note.textContent = "downloading…";
  try {
    const result = await download(`/v1/jobs/${job.id}/artifacts/${artifact.name}`, artifact.name);
    note.textContent = result.ok ? "✓ SHA-256 checked" : `✗ SHA-256 differs: got ${result.actual}`;
  } catch (err) {
    note.textContent = `failed: ${err.message}`;
  }
}

function certificate(job, artifacts) {
  const result = h("div", { "aria-live": "polite" });
  const check = async () => {
    replace(result, h("p", {}, "Checking…"));
    try {
      const bytes = await (await fetchFile(`/v1/jobs/${job.id}/certificate`)).arrayBuffer();
      const published = await api("/v1/signing-key");
      const { checks, ok, certificate: cert } = await verifyCertificate(bytes, published, job.id, artifacts);
      replace(result,
        h("p", { class: ok ? "ok big" : "bad big", id: "certificate-verdict" }, ok ? "✓ Certificate verified" : "✗ Certificate NOT verified"),
        table(["Check", "Result", ""], checks.map((c) => [c.check, h("span", { class: c.ok ? "ok" : "bad" }, c.ok ? "✓" : "✗"), c.note ?? ""])),
        h("p", { class: "muted small" }, `Issued ${cert.issued_at} by ${cert.issuer?.service} ${cert.issuer?.version}. `, cert.statement));
    } catch (err) {
      replace(result, h("p", { class: "bad", role: "alert" }, `Could not check the certificate: ${err.message}`));
    }
  };
  const get = () => download(`/v1/jobs/${job.id}/certificate`, `certificate-${job.id}.json`).catch((err) => toast(err.message));
  return [h("p", {}, "A signed statement of what was unlearned, from which data, with which result. The check runs here, in your browser, against the service's published signing key."),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", onclick: check }, "Verify certificate"),
      h("button", { type: "button", onclick: get }, "Download certificate")), result];
}
