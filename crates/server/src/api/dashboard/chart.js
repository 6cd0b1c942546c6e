// Line charts as SVG, drawn from the server's history (no chart library).
import { el } from "./ui.js";

const WIDTH = 400, HEIGHT = 130, LEFT = 38, BOTTOM = 16, TOP = 6;

/**
 * series: [{label, values: [number|null]}], times: [unix ms]; format(y) labels the axis.
 * A null value is a gap.
 */
export function lineChart({ title, series, times, format = (v) => String(v), id }) {
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  const max = niceMax(Math.max(0, ...all));
  const n = times.length;
  const x = (i) => LEFT + (n <= 1 ? 0 : (i / (n - 1)) * (WIDTH - LEFT - 4));
  const y = (v) => TOP + (1 - v / max) * (HEIGHT - TOP - BOTTOM);
  const svg = el("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": `${title}: ${describe(series, format)}` },
    el("line", { class: "axis", x1: LEFT, y1: y(0), x2: WIDTH, y2: y(0) }),
    el("line", { class: "axis", x1: LEFT, y1: y(max), x2: WIDTH, y2: y(max) }),
    el("text", { x: 2, y: y(max) + 4 }, format(max)),
    el("text", { x: 2, y: y(0) }, format(0)));
  if (n > 1) {
    const minutes = Math.round((times[n - 1] - times[0]) / 60000);
    svg.append(el("text", { x: LEFT, y: HEIGHT - 2 }, `−${minutes} min`), el("text", { x: WIDTH - 24, y: HEIGHT - 2 }, "now"));
  }
  series.forEach((s, index) => {
    let d = "";
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined || !Number.isFinite(v)) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    // A lone point (the first sample) is drawn as a short dash, so that it shows.
    if (d && !d.includes("L")) d = d.replace(/M([0-9.]+),([0-9.]+)$/, (_, px, py) => `M${Math.max(LEFT, px - 6)},${py}H${Math.min(WIDTH, Number(px) + 6)}`);
    if (d) svg.append(el("path", { class: `line s${index}`, d }));
  });
  const legend = el("div", { class: "legend" }, series.map((s, index) => {
    const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
    return el("span", {}, el("span", { class: `swatch s${index}` }), `${s.label}: ${last === undefined ? "–" : format(last)}`);
  }));
  return el("figure", { class: "chart", id }, el("h3", {}, title), svg, legend);
}

function describe(series, format) {
  return series.map((s) => {
    const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
    return `${s.label} ${last === undefined ? "none" : format(last)}`;
  }).join(", ");
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}
