// The jobs list: status filter, pages of 25, who and when, headline metrics, every row live
// through the tenant's one event stream (GET /v1/events/stream).
import { api, followTenant, openEvents } from "../api.js";
import { go } from "../app.js";
import { badge, fmtNumber, fmtTime, h, progressBar, replace, who } from "../dom.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const FINAL = ["succeeded", "failed", "cancelled"];
const PAGE = 25;

export async function render(main, { query, signal }) {
  document.title = "Jobs · Lethe";
  const status = STATUSES.includes(query.get("status")) ? query.get("status") : "";
  const cursors = (query.get("page") || "").split(",").filter(Boolean);
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (status) params.set("status", status);
  if (cursors.length) params.set("cursor", cursors.at(-1));
  // the stream first, then the list: the stream's start is fixed when it opens, so no event
  // between the two is missed (the wait is one round trip, not the stream's end)
  // no stream (an old server, a dropped connection): the list still shows, just not live
  const stream = await openEvents("/v1/events/stream", { signal }).catch(() => null);
  const page = await api(`/v1/jobs?${params}`, { signal });
  const rows = new Map(page.items.map((job) => [job.id, row(job)]));
  const body = h("tbody", {}, [...rows.values()].map((r) => r.tr));
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"), h("a", { href: "/jobs/new", class: "button primary" }, "New job")),
    filters(status),
    page.items.length
      ? h("form", { class: "table-wrap", onsubmit: compareSelected },
        h("table", { class: "jobs" },
          h("caption", { class: "sr-only" }, "Jobs of this key's tenant, newest first"),
          h("thead", {}, h("tr", {}, ["Compare", "Name", "Status", "Stage", "Progress", "Submitted by", "Created", "Forget NLL", "Harmful rate", "Normal PPL"].map((c) => h("th", { scope: "col" }, c)))),
          body),
        h("div", { class: "actions" },
          h("button", { type: "submit" }, "Compare selected"),
          pager(status, cursors, page.next_cursor)))
      : h("p", { class: "empty" }, status ? `No ${status} jobs.` : "No jobs yet: start one with New job."));
  if (stream) live(stream, rows, body, { status, first: !cursors.length }, signal);
}

function filters(status) {
  const select = h("select", { id: "status-filter", name: "status" },
    h("option", { value: "" }, "All"), STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));
  select.addEventListener("change", () => {
    go(select.value ? `/jobs?status=${select.value}` : "/jobs");
  });
  return h("div", { class: "filters" }, h("label", { for: "status-filter" }, "Status"), select);
}

function pager(status, cursors, next) {
  const link = (list) => {
    const q = new URLSearchParams();
    if (status) q.set("status", status);
    if (list.length) q.set("page", list.join(","));
    return `/jobs${q.size ? `?${q}` : ""}`;
  };
  return h("nav", { class: "pager", "aria-label": "Pages" },
    cursors.length ? h("a", { href: link(cursors.slice(0, -1)), rel: "prev" }, "← Newer") : null,
    h("span", { class: "muted" }, `Page ${cursors.length + 1}`),
    next ? h("a", { href: link([...cursors, next]), rel: "next" }, "Older →") : null);
}

function metric(job, name) {
  const m = job.metrics || {};
  const before = m.before?.[name], after = m.after?.[name];
  if (before === undefined && after === undefined) return "–";
  return `${fmtNumber(before)} → ${fmtNumber(after)}`;
}

function row(job) {
  const cells = {
    status: h("td", {}), stage: h("td", {}), progress: h("td", {}),
    metrics: ["forget_nll", "harmful_rate", "normal_ppl"].map(() => h("td", { class: "num" })),
  };
  const tr = h("tr", { "data-job": job.id },
    h("td", {}, h("input", { type: "checkbox", name: "compare", value: job.id, "aria-label": `Compare ${job.name}` })),
    h("td", {}, h("a", { href: `/jobs/${job.id}` }, job.name), h("div", { class: "muted small" }, job.id.slice(0, 8))),
    cells.status, cells.stage, cells.progress,
    h("td", {}, who(job)), h("td", {}, fmtTime(job.created_at)), cells.metrics);
  const update = (j) => {
    replace(cells.status, badge(j.status));
    replace(cells.stage, j.stage || "–");
    replace(cells.progress, progressBar(j.progress, `Progress of ${j.name}`));
    ["forget_nll", "harmful_rate", "normal_ppl"].forEach((m, i) => replace(cells.metrics[i], metric(j, m)));
  };
  update(job);
  return { tr, job, update };
}

// Applies the tenant's events to the rows shown: status, stage and progress at once; an ended
// job is read once more (its metrics); a new job appears on top of the first page.
function live(stream, rows, body, { status, first }, signal) {
  const added = async (id) => {
    const job = await api(`/v1/jobs/${id}`, { signal });
    if (rows.has(id) || (status && job.status !== status)) return;
    const r = row(job);
    rows.set(id, r);
    body.prepend(r.tr);
  };
  const onEvent = (event) => {
    const r = rows.get(event.job_id), p = event.payload;
    if (!r) {
      if (first && body.isConnected && event.kind === "status" && p.status === "queued") added(event.job_id).catch(() => {});
      return;
    }
    if (event.kind === "status") r.job.status = p.status;
    if (event.kind === "stage") r.job.stage = p.stage;
    if (event.kind === "progress") { r.job.progress = p; r.job.stage = p.stage; }
    r.update(r.job);
    if (event.kind === "status" && FINAL.includes(p.status)) {
      api(`/v1/jobs/${event.job_id}`, { signal }).then((job) => { r.job = job; r.update(job); }).catch(() => {});
    }
  };
  // reconnected without a place to resume from: reread the rows shown
  const onGap = () => rows.forEach((r, id) => api(`/v1/jobs/${id}`, { signal })
    .then((job) => { r.job = job; r.update(job); }).catch(() => {}));
  followTenant(stream, onEvent, { signal, onGap });
}

function compareSelected(e) {
  e.preventDefault();
  const ids = [...e.target.querySelectorAll("input[name=compare]:checked")].map((i) => i.value);
  go(`/compare?ids=${ids.join(",")}`);
}
