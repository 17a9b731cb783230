// Small SVG charts drawn from data: line charts (loss curves) and a scatter plot (compare).
// Each chart is an <svg role="img"> with a title and a text summary for screen readers.

const NS = "http://www.w3.org/2000/svg";
export const COLORS = ["#1f5fbf", "#c0392b", "#1e7d32", "#8e44ad", "#b35900", "#00727a", "#5d4037", "#555"];
const W = 640, H = 260, PAD = { l: 56, r: 12, t: 16, b: 40 };

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function extent(values) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (!Number.isFinite(lo)) return [0, 1];
  if (lo === hi) { lo -= 1; hi += 1; }
  return [lo, hi];
}

function ticks([lo, hi], n = 5) {
  const step = (hi - lo) / (n - 1);
  return Array.from({ length: n }, (_, i) => lo + i * step);
}

function label(v) {
  const a = Math.abs(v);
  return a !== 0 && (a < 0.01 || a >= 1e5) ? v.toExponential(1) : Number(v.toPrecision(3)).toString();
}

function frame(title, xs, ys, xLabel, yLabel) {
  const sx = (x) => PAD.l + ((x - xs[0]) / (xs[1] - xs[0])) * (W - PAD.l - PAD.r);
  const sy = (y) => H - PAD.b - ((y - ys[0]) / (ys[1] - ys[0])) * (H - PAD.t - PAD.b);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart", "aria-label": title }, s("title", {}, title));
  const axes = s("g", { class: "axes" });
  for (const y of ticks(ys)) {
    axes.append(s("line", { x1: PAD.l, x2: W - PAD.r, y1: sy(y), y2: sy(y), class: "grid" }));
    axes.append(s("text", { x: PAD.l - 6, y: sy(y) + 4, "text-anchor": "end" }, label(y)));
  }
  for (const x of ticks(xs)) axes.append(s("text", { x: sx(x), y: H - PAD.b + 16, "text-anchor": "middle" }, label(x)));
  axes.append(s("text", { x: (PAD.l + W - PAD.r) / 2, y: H - 6, "text-anchor": "middle", class: "axis-label" }, xLabel));
  axes.append(s("text", { x: 12, y: PAD.t + (H - PAD.t - PAD.b) / 2, transform: `rotate(-90 12 ${PAD.t + (H - PAD.t - PAD.b) / 2})`, "text-anchor": "middle", class: "axis-label" }, yLabel));
  svg.append(axes);
  return { svg, sx, sy };
}

function legend(series) {
  const box = document.createElement("ul");
  box.className = "legend";
  series.forEach((serie, i) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch c${i % COLORS.length}`;
    item.append(swatch, serie.name);
    box.append(item);
  });
  return box;
}

// series: [{name, points: [[x, y], ...]}]. Returns a <figure> holding the chart and its legend.
export function lineChart(series, { title, xLabel = "step", yLabel = "loss" }) {
  const shown = series.filter((serie) => serie.points.length);
  const all = shown.flatMap((serie) => serie.points);
  const figure = document.createElement("figure");
  figure.className = "chart-box";
  if (!all.length) {
    figure.append(Object.assign(document.createElement("p"), { className: "muted", textContent: `${title}: no points yet` }));
    return figure;
  }
  const { svg, sx, sy } = frame(title, extent(all.map((p) => p[0])), extent(all.map((p) => p[1])), xLabel, yLabel);
  shown.forEach((serie, i) => {
    const d = serie.points.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
    svg.append(s("path", { d, class: `line c${i % COLORS.length}`, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2 }));
  });
  const caption = document.createElement("figcaption");
  caption.textContent = `${title}: ${shown.map((serie) => `${serie.name} ${label(serie.points[0][1])} → ${label(serie.points.at(-1)[1])}`).join("; ")}`;
  caption.className = "sr-only";
  const heading = Object.assign(document.createElement("p"), { className: "chart-title", textContent: title });
  heading.setAttribute("aria-hidden", "true");  // the chart's own label says it
  figure.append(heading, svg, legend(shown), caption);
  return figure;
}

// points: [{name, x, y}]: one labelled dot each.
export function scatterChart(points, { title, xLabel, yLabel }) {
  const figure = document.createElement("figure");
  figure.className = "chart-box";
  const valid = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  if (!valid.length) {
    figure.append(Object.assign(document.createElement("p"), { className: "muted", textContent: `${title}: nothing to plot` }));
    return figure;
  }
  const pad = (r) => [r[0] - 0.08 * (r[1] - r[0]), r[1] + 0.08 * (r[1] - r[0])];
  const { svg, sx, sy } = frame(title, pad(extent(valid.map((p) => p.x))), pad(extent(valid.map((p) => p.y))), xLabel, yLabel);
  valid.forEach((p, i) => {
    const color = COLORS[i % COLORS.length];
    svg.append(s("circle", { cx: sx(p.x), cy: sy(p.y), r: 6, fill: color }, s("title", {}, `${p.name}: ${label(p.x)}, ${label(p.y)}`)));
    const right = sx(p.x) > W / 2;  // labels point inwards, so none is cut at the edge
    svg.append(s("text", { x: sx(p.x) + (right ? -9 : 9), y: sy(p.y) - 8, class: "point-label", "text-anchor": right ? "end" : "start" }, p.name));
  });
  figure.append(svg, legend(valid));
  return figure;
}
