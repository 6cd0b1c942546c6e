// The dashboard: system status from /healthcheck (open to everyone); API statistics and
// running jails from the admin API, only with the admin token the viewer types in. Every
// value is set with textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "skyisland-admin-token";
// The server writes its configured admin header into the page.
const ADMIN_HEADER = document.currentScript.dataset.header;

function cell(row, value) {
  const td = row.insertCell();
  td.textContent = value === undefined || value === null ? "–" : String(value);
  if (typeof value === "number") td.className = "n";
}

function fill(table, header, rows) {
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  header.forEach((h) => {
    const th = document.createElement("th");
    th.textContent = h;
    head.appendChild(th);
  });
  const body = table.createTBody();
  rows.forEach((values) => {
    const row = body.insertRow();
    values.forEach((v) => cell(row, v));
  });
}

function bytes(n) {
  if (typeof n !== "number") return n;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
  const m = Math.floor(seconds / 60) % 60, s = seconds % 60;
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + (d || h || m ? m + "m " : "") + s + "s";
}

async function system() {
  try {
    const h = await (await fetch("/healthcheck", { cache: "no-store" })).json();
    const toolchains = (h.toolchains || []).map((t) => t.version).join(", ");
    document.getElementById("build").textContent = `version ${h.version}, build ${h.git_sha}, Go toolchains: ${toolchains || "none"}`;
    const status = document.getElementById("status");
    status.textContent = h.status;
    status.className = h.status;
    const j = h.jails || {};
    fill(document.getElementById("system"), ["what", "value"], [
      ["uptime", duration(h.uptime_seconds)],
      ["jails running", `${j.running} (capacity ${j.capacity}, builds ${j.build_capacity})`],
      ["warm jails", j.warm],
      ["pre-started jails", j.prestarted ? `${j.prestarted.ready} ready, ${j.prestarted.starting} starting, for ${j.prestarted.functions} functions; ${j.prestarted.hits} hits, ${j.prestarted.misses} misses, ${j.prestarted.evictions} evictions, ${j.prestarted.failures} failures` : "–"],
      ["root clones, cgroups", `${j.backend}, cgroup ${j.cgroup}`],
      ["queued requests, executions, builds", `${h.queued.requests}, ${h.queued.executions}, ${h.queued.builds}`],
      ["binary cache", `${h.binary_cache.entries} binaries, ${bytes(h.binary_cache.bytes)}`],
      ["request cache", `${h.request_cache.entries} results, ${bytes(h.request_cache.bytes)}`],
      ["Redis", h.redis ? (h.redis.connected ? `connected (${h.redis.url})` : `down since ${new Date(h.redis.since * 1000).toLocaleTimeString()}: serving from local caches`) : "not configured"],
      ["repositories with an open circuit", h.open_circuits],
    ]);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    const status = document.getElementById("status");
    status.textContent = "unreachable";
    status.className = "down";
  }
}

async function admin() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return;
  const headers = { [ADMIN_HEADER]: token };
  const error = document.getElementById("admin-error");
  try {
    const [stats, jails] = await Promise.all(["/api/v1/admin/api-stats", "/api/v1/admin/jails"].map(async (path) => {
      const response = await fetch(path, { headers, cache: "no-store" });
      const body = await response.json();
      if (!response.ok) throw new Error(body.detail || body.error || `${path}: ${response.status}`);
      return body;
    }));
    error.textContent = "";
    document.getElementById("admin").hidden = false;
    const statuses = Object.entries(stats.statuses).map(([s, n]) => `${n}× ${s}`).join(", ");
    document.getElementById("stats-summary").textContent = `${stats.requests} requests since start-up: ${statuses || "none"}`;
    fill(document.getElementById("routes"), ["route", "count", "4xx", "5xx", "mean ms", "p50 ms", "p99 ms", "max ms"],
      Object.entries(stats.routes).map(([route, r]) =>
        [route, r.count, r.client_errors, r.server_errors, r.mean_ms, r.p50_ms, r.p99_ms, r.max_ms]));
    fill(document.getElementById("jails"), ["id", "kind", "running", "state", "ip4", "started"],
      jails.jails.map((j) => [j.id, j.kind, j.label, j.state, j.ip4, new Date(j.started_at_ms).toLocaleTimeString()]));
  } catch (err) {
    document.getElementById("admin").hidden = true;
    error.textContent = err.message;
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  admin();
});

function refresh() {
  system();
  admin();
}
refresh();
setInterval(refresh, 2000);
