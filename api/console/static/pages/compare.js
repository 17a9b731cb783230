// Two or more jobs side by side: their metrics, forgetting against retention, their curves.
import { api, fetchFile } from "../api.js";
import { go } from "../app.js";
import { lineChart, scatterChart } from "../chart.js";
import { fmtNumber, h, replace, table } from "../dom.js";

export async function render(main, { query, signal }) {
  document.title = "Compare · Lethe";
  const chosen = (query.get("ids") || "").split(",").filter(Boolean);
  const recent = (await api("/v1/jobs?status=succeeded&limit=50", { signal })).items;
  const jobs = await Promise.all(chosen.map((id) => api(`/v1/jobs/${id}`, { signal }).catch(() => null)));
  const found = jobs.filter(Boolean);
  replace(main, h("h1", {}, "Compare jobs"), picker(recent, chosen),
    found.length >= 2 ? await comparison(found, signal)
      : h("p", { class: "muted" }, "Pick two or more succeeded jobs to compare."));
}

function picker(recent, chosen) {
  const form = h("form", { class: "card", id: "compare-form" },
    h("fieldset", {}, h("legend", {}, "Succeeded jobs"),
      recent.length ? recent.map((j) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "ids", value: j.id, checked: chosen.includes(j.id) }),
        ` ${j.name} `, h("span", { class: "muted small" }, j.id.slice(0, 8)))) : h("p", { class: "muted" }, "No succeeded jobs yet.")),
    h("button", { type: "submit", class: "primary" }, "Compare"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const ids = [...form.querySelectorAll("input:checked")].map((i) => i.value);
    go(`/compare?ids=${ids.join(",")}`);
  });
  return form;
}

const label = (j) => `${j.name} (${j.id.slice(0, 8)})`;

async function comparison(jobs, signal) {
  const names = [...new Set(jobs.flatMap((j) => Object.keys(j.metrics?.after || {})))];
  const rows = names.map((n) => [h("code", {}, n), ...jobs.map((j) => {
    const b = j.metrics?.before?.[n], a = j.metrics?.after?.[n];
    return `${fmtNumber(b)} → ${fmtNumber(a)}`;
  })]);
  const change = (j, n) => {
    const b = j.metrics?.before?.[n], a = j.metrics?.after?.[n];
    return typeof a === "number" && typeof b === "number" && b !== 0 ? (100 * (a - b)) / Math.abs(b) : NaN;
  };
  const points = jobs.map((j) => ({ name: label(j), x: change(j, "normal_ppl"), y: change(j, "forget_nll") }));
  const curves = await Promise.all(jobs.map((j) => unlearnCurve(j, signal)));
  return [
    h("section", { "aria-labelledby": "h-cmp-metrics" }, h("h2", { id: "h-cmp-metrics" }, "Metrics (before → after)"),
      h("div", { class: "table-wrap" }, table(["Metric", ...jobs.map(label)], rows))),
    h("section", { "aria-labelledby": "h-cmp-tradeoff" }, h("h2", { id: "h-cmp-tradeoff" }, "Forgetting against retention"),
      h("p", { class: "muted" }, "Up: the forget set became less likely (forgotten). Right: normal text became less likely (damage). Best is up and left."),
      scatterChart(points, { title: "Forget NLL change against normal perplexity change", xLabel: "normal perplexity change (%)", yLabel: "forget NLL change (%)" })),
    h("section", { "aria-labelledby": "h-cmp-curves" }, h("h2", { id: "h-cmp-curves" }, "Unlearning curves"),
      lineChart(curves.filter(Boolean), { title: "unlearn: total loss by step" })),
  ];
}

async function unlearnCurve(job, signal) {
  try {
    const text = await (await fetchFile(`/v1/jobs/${job.id}/artifacts/train_log.jsonl`, { signal })).text();
    const points = text.split("\n").filter(Boolean).map((l) => JSON.parse(l))
      .filter((r) => r.stage === "unlearn" && Number.isFinite(r.loss)).map((r) => [r.step, r.loss]);
    return { name: label(job), points };
  } catch {
    return null;
  }
}
