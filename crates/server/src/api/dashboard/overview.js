// Overview: the server's status for everyone; with the token, live numbers and the last
// 15 minutes as charts (from /api/v1/admin/history).
import { api, needToken } from "./app.js";
import { el, ms, bytes } from "./ui.js";
import { lineChart } from "./chart.js";

const FUNCTION_ROUTE = "POST /api/v1/function";

function card(label, value, id) {
  return el("div", { class: "card", id }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

export default function overview({ main, every, hasToken }) {
  const status = el("section", { "aria-label": "Status" });
  const live = el("section", { "aria-labelledby": "live-title" });
  const charts = el("section", { "aria-labelledby": "charts-title" });
  const details = el("section", { "aria-labelledby": "details-title" });
  main.append(el("h1", {}, "Overview"), status, live, charts, details);
  every(3000, async () => {
    const health = await api("/healthcheck");
    const jails = health.jails || {};
    const toolchains = (health.toolchains || []).map((t) => t.version).join(", ") || "none";
    const runtimes = (health.runtimes || []).map((r) => r.available ? `${r.runtime} ${r.version}` : `${r.runtime} (unavailable: ${r.error})`);
    status.replaceChildren(
      el("div", { class: "cards" },
        card("status", el("span", { class: health.status, id: "status" }, health.status)),
        card("version", `${health.version}`),
        card("uptime", duration(health.uptime_seconds)),
        card("jails running", `${jails.running ?? "–"} / ${jails.capacity ?? "–"}`, "jails-card"),
        card("warm · pre-started", `${jails.warm ?? 0} · ${(jails.prestarted?.ready ?? 0) + (jails.prestarted?.starting ?? 0)}`),
        card("queued: calls · runs · builds", `${health.queued?.requests ?? 0} · ${health.queued?.executions ?? 0} · ${health.queued?.builds ?? 0}`),
        card("async: queued · running", health.async?.available ? `${health.async.queued} · ${health.async.running}` : "unavailable"),
        card("Redis", health.redis ? (health.redis.connected ? "connected" : "disconnected") : "not configured")));
    details.replaceChildren(
      el("h2", { id: "details-title" }, "Toolchains and caches"),
      el("dl", { class: "facts" },
        el("dt", {}, "Go toolchains"), el("dd", {}, toolchains),
        el("dt", {}, "runtimes"), el("dd", {}, runtimes.join(", ") || "none"),
        el("dt", {}, "binary cache"), el("dd", {}, `${health.binary_cache?.entries ?? 0} entries, ${bytes(health.binary_cache?.bytes)}`),
        el("dt", {}, "source cache"), el("dd", {}, `${health.source_cache?.entries ?? 0} entries, ${bytes(health.source_cache?.bytes)}`),
        el("dt", {}, "request cache"), el("dd", {}, `${health.request_cache?.entries ?? 0} entries, ${bytes(health.request_cache?.bytes)}`),
        el("dt", {}, "open circuits"), el("dd", {}, String(Array.isArray(health.open_circuits) ? health.open_circuits.length : health.open_circuits ?? 0))));
    if (!hasToken()) {
      live.replaceChildren();
      charts.replaceChildren();
      needToken(live);
      return;
    }
    const [stats, history] = await Promise.all([api("/api/v1/admin/api-stats"), api("/api/v1/admin/history")]);
    const calls = stats.routes?.[FUNCTION_ROUTE] || { count: 0, client_errors: 0, server_errors: 0, p50_ms: null, p99_ms: null };
    live.replaceChildren(
      el("h2", { id: "live-title" }, "Since start-up"),
      el("div", { class: "cards" },
        card("function calls", el("span", { id: "calls-total" }, String(calls.count))),
        card("client errors (4xx)", String(calls.client_errors)),
        card("server errors (5xx)", String(calls.server_errors)),
        card("call p50 · p99", `${calls.count ? ms(calls.p50_ms) : "–"} · ${calls.count ? ms(calls.p99_ms) : "–"}`),
        card("requests (all routes)", String(stats.requests))));
    const points = history.points || [];
    const times = points.map((p) => p.t);
    const pick = (key) => points.map((p) => p[key] ?? null);
    const perSecond = (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1)) + "/s";
    const count = (v) => String(Math.round(v));
    charts.replaceChildren(
      el("h2", { id: "charts-title" }, "Last 15 minutes"),
      points.length === 0
        ? el("p", { class: "muted", id: "no-history" }, `The first point comes ${history.interval_seconds} s after start-up.`)
        : el("div", { class: "charts" },
          lineChart({ id: "chart-calls", title: "Calls per second", times, format: perSecond, series: [
            { label: "ok", values: pick("ok_per_second") },
            { label: "4xx", values: pick("client_errors_per_second") },
            { label: "5xx", values: pick("server_errors_per_second") }] }),
          lineChart({ id: "chart-latency", title: "Latency", times, format: ms, series: [
            { label: "p50", values: pick("p50_ms") }, { label: "p99", values: pick("p99_ms") }] }),
          lineChart({ id: "chart-cache", title: "Request cache hit ratio", times, format: (v) => `${Math.round(v * 100)}%`, series: [
            { label: "hits", values: pick("cache_hit_ratio") }] }),
          lineChart({ id: "chart-jails", title: "Jails", times, format: count, series: [
            { label: "running", values: pick("jails_running") }, { label: "capacity", values: pick("jail_capacity") },
            { label: "warm", values: pick("warm_jails") }, { label: "pre-started", values: pick("prestarted_jails") }] }),
          lineChart({ id: "chart-queues", title: "Queues", times, format: count, series: [
            { label: "requests", values: pick("queued_requests") }, { label: "executions", values: pick("queued_executions") },
            { label: "builds", values: pick("queued_builds") }, { label: "async", values: pick("async_queued") }] })));
  });
}

function duration(seconds) {
  if (seconds === undefined) return "–";
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${s} s` : `${s} s`;
}
