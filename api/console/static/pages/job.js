// One job: live stage progress and loss curves while it runs, then its evidence.
import { api, ApiError, follow } from "../api.js";
import { lineChart } from "../chart.js";
import { badge, fmtNumber, fmtTime, h, progressBar, replace, toast, who } from "../dom.js";
import { evidence } from "./jobparts.js";

const ORDER = ["loading", "finetune", "judge", "eval_before", "unlearn", "eval_after", "probes", "done"];
const TRAINING = new Set(["finetune", "unlearn"]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function render(main, { params: [id], signal }) {
  let job;
  try {
    if (!UUID.test(id)) throw new ApiError(404, "no such job");
    job = await api(`/v1/jobs/${id}`, { signal });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
    document.title = "Job not found · Lethe";
    replace(main, h("h1", {}, "Job not found"),
      h("p", { role: "alert" }, `There is no job ${id} for this key: it does not exist or belongs to another tenant.`),
      h("p", {}, h("a", { href: "/jobs" }, "Back to the jobs")));
    return;
  }
  const view = layout(main, job);
  const events = await api(`/v1/jobs/${id}/events`, { signal });
  const state = { job, events, progress: {}, curves: {} };
  events.forEach((e) => apply(state, e));
  draw(view, state);
  if (["queued", "running"].includes(job.status)) {
    await follow(id, events.at(-1)?.id ?? 0, (e) => { apply(state, e); draw(view, state); }, signal).catch((err) => {
      if (!signal.aborted) toast(`Live updates stopped: ${err.message}`);
    });
    if (signal.aborted) return;
    state.job = await api(`/v1/jobs/${id}`, { signal });
    draw(view, state);
  }
  await evidence(view.evidence, view.curves, state.job, signal);
}

function layout(main, job) {
  document.title = `${job.name} · Lethe`;
  const view = {
    status: h("span", {}), times: h("p", { class: "muted" }), actions: h("div", { class: "actions" }),
    error: h("div", {}), stages: h("ol", { class: "stages", "aria-label": "Stages" }),
    curves: h("div", { class: "curves", "aria-live": "off" }), evidence: h("div", {}),
  };
  replace(main,
    h("div", { class: "page-head" },
      h("h1", {}, job.name, " ", view.status),
      view.actions),
    h("p", { class: "muted small" }, "Job ", h("code", {}, job.id), ` · queue ${job.queue}`),
    view.times, view.error,
    h("section", { "aria-labelledby": "h-progress" }, h("h2", { id: "h-progress" }, "Progress"), view.stages),
    h("section", { "aria-labelledby": "h-curves" }, h("h2", { id: "h-curves" }, "Loss curves"), view.curves),
    view.evidence);
  return view;
}

function apply(state, event) {
  const p = event.payload;
  if (event.kind === "status") {
    state.job.status = p.status;
    if (p.status === "running") state.job.started_at ??= event.ts;
    if (["succeeded", "failed", "cancelled"].includes(p.status)) state.job.finished_at ??= event.ts;
  }
  if (event.kind === "stage") state.job.stage = p.stage;
  if (event.kind === "cancel_requested") state.job.cancel_requested = true;
  if (event.kind !== "progress") return;
  state.progress[p.stage] = p;
  state.job.stage = p.stage;
  if (!TRAINING.has(p.stage) || p.unit !== "step") return;
  const curves = (state.curves[p.stage] ??= {});
  for (const [term, value] of Object.entries(p.losses || {})) {
    if (Number.isFinite(value)) (curves[term] ??= []).push([p.step, value]);
  }
}

function draw(view, { job, progress, curves }) {
  replace(view.status, badge(job.status));
  view.times.textContent = `Submitted by ${who(job)} · created ${fmtTime(job.created_at)} · started ${fmtTime(job.started_at)} · finished ${fmtTime(job.finished_at)}`;
  const active = ["queued", "running"].includes(job.status);
  replace(view.actions,
    active ? h("button", { type: "button", class: "danger", disabled: job.cancel_requested, onclick: () => cancel(job, view) },
      job.cancel_requested ? "Cancelling…" : "Cancel job") : null,
    h("a", { href: `/compare?ids=${job.id}`, class: "button" }, "Compare…"));
  replace(view.error, job.error ? h("p", { class: "error", role: "alert" }, `Failed: ${job.error}`) : null);
  replace(view.stages, stageList(job, progress).map((s) => stageItem(s, job, progress)));
  replace(view.curves, Object.keys(curves).length
    ? Object.entries(curves).map(([stage, terms]) => lineChart(
      Object.entries(terms).map(([name, points]) => ({ name, points })), { title: `${stage} losses (live)` }))
    : h("p", { class: "muted" }, active ? "The curves appear when training starts." : "No training progress was recorded."));
}

function stageList(job, progress) {
  const spec = job.spec || {};
  const seen = new Set(Object.keys(progress));
  if (job.stage) seen.add(job.stage);
  return ORDER.filter((s) => seen.has(s) || ["loading", "eval_before", "unlearn", "eval_after", "done"].includes(s)
    || (s === "finetune" && spec.finetune) || (s === "probes" && spec.probes));
}

function stageItem(stage, job, progress) {
  const stages = stageList(job, progress);
  const current = stages.indexOf(job.stage);
  const index = stages.indexOf(stage);
  const ended = !["queued", "running"].includes(job.status);
  let state = index < current || (job.status === "succeeded") ? "done" : index === current ? (ended ? "stopped" : "running") : "pending";
  if (job.status === "queued") state = "pending";
  const p = progress[stage];
  return h("li", { class: `stage st-${state}`, "data-stage": stage },
    h("span", { class: "stage-name" }, stage.replace("_", " ")),
    h("span", { class: "stage-state" }, state),
    p ? progressBar(p, `${stage} progress`) : h("span", {}),
    h("span", { class: "muted small" }, p && state === "running" && p.eta_s != null ? `about ${fmtNumber(p.eta_s, 2)} s left` : ""));
}

async function cancel(job, view) {
  if (!confirm(`Cancel job ${job.name}?`)) return;
  try {
    const updated = await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" });
    job.cancel_requested = updated.cancel_requested;
    job.status = updated.status;
    toast(updated.status === "cancelled" ? "Job cancelled." : "Cancel requested: it stops at its next step.");
  } catch (err) {
    toast(`Could not cancel: ${err.message}`);
  }
  replace(view.status, badge(job.status));
}
