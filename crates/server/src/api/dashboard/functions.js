// Functions: every package called since start-up, and one function's invocations and builds.
import { api, needToken, showError, clearError } from "./app.js";
import { el, ms, ago, dataTable, facts, statusClass } from "./ui.js";

const short = (commit) => (commit ? commit.slice(0, 10) : "–");
const functionLink = (url) => el("a", { href: `#/function?url=${encodeURIComponent(url)}` }, url);

export function functionsPage({ main, every, hasToken }) {
  main.append(el("h1", {}, "Functions"));
  if (!hasToken()) return needToken(main);
  const list = el("div", { id: "functions" });
  const cluster = el("span", { class: "muted", id: "functions-cluster" });
  main.append(el("p", { class: "muted" }, "Every package called since this server started (sync and async calls; refreshed every 5 s). ", cluster), list);
  let table = null;
  every(5000, async () => {
    const answer = await api("/api/v1/admin/functions");
    cluster.textContent = !answer.cluster ? "" : answer.cluster.available
      ? "With the other servers' calls (through Redis)."
      : `Only this server's: the other servers' cannot be read (${answer.cluster.error}).`;
    if (table) return table.update(answer.functions);
    list.replaceChildren(table = dataTable({
        id: "functions-table", label: "functions", sortBy: "last_call_ms", descending: true,
        empty: "No function was called since start-up: try one on the Try it page.",
        rows: answer.functions,
        columns: [
          { key: "url", label: "url", render: (f) => functionLink(f.url), code: true },
          { key: "runtime", label: "runtime" },
          { key: "commit", label: "commit", render: (f) => el("span", { class: "code", title: f.commit || "" }, short(f.commit)) },
          { key: "versions", label: "versions", numeric: true, value: (f) => f.commits.length },
          { key: "calls", label: "calls", numeric: true },
          { key: "errors", label: "errors", numeric: true, value: (f) => f.client_errors + f.server_errors },
          { key: "p50_ms", label: "p50", numeric: true, render: (f) => ms(f.p50_ms) },
          { key: "p99_ms", label: "p99", numeric: true, render: (f) => ms(f.p99_ms) },
          { key: "cache_hits", label: "cache hits", numeric: true },
          { key: "last_call_ms", label: "last call", numeric: true, render: (f) => ago(f.last_call_ms) },
          { key: "last_build_ms", label: "build time", numeric: true, render: (f) => ms(f.last_build_ms) },
          { key: "servers", label: "servers", numeric: true },
        ],
      }));
  });
}

export function functionPage({ main, params, hasToken }) {
  const url = params.get("url") || "";
  main.append(el("p", {}, el("a", { href: "#/functions" }, "← Functions")), el("h1", { class: "code" }, url));
  if (!hasToken()) return needToken(main);
  const body = el("div");
  const result = el("div", { id: "bust-result", "aria-live": "polite" });
  main.append(body, result);
  async function load() {
    let answer;
    try {
      answer = await api(`/api/v1/admin/function?url=${encodeURIComponent(url)}`);
    } catch (e) {
      return showError(e);
    }
    const f = answer.function;
    // The button makes the last call that worked (or the last call) again, with cache_bust.
    const last = answer.invocations.find((i) => i.status === 200) || answer.invocations[0];
    const bust = el("button", { type: "button", id: "cache-bust", disabled: !last, onclick: async () => {
      bust.disabled = true;
      result.replaceChildren(el("p", { class: "muted" }, `Fetching and building ${url} again, then calling ${last.call}…`));
      try {
        const done = await api("/api/v1/function", { method: "POST", body: { url, call: last.call, version: last.version || "", cache_bust: true } });
        clearError();
        result.replaceChildren(el("p", { class: "ok" }, `Rebuilt at ${short(done.commit)} in ${ms(done.duration_ms)}; ${last.call} printed:`), el("pre", {}, done.data));
      } catch (e) {
        result.replaceChildren();
        showError(e);
      }
      bust.disabled = false;
      load();
    } }, "cache_bust: fetch and build again");
    body.replaceChildren(
      facts([
        ["runtime", f.runtime], ["current commit", el("span", { class: "code" }, f.commit || "–")],
        ["versions that ran", f.commits.map(short).join(", ") || "–"],
        ["calls", `${f.calls} (${f.client_errors} 4xx, ${f.server_errors} 5xx, ${f.cache_hits} cache hits)`],
        ["latency", `p50 ${ms(f.p50_ms)} · p99 ${ms(f.p99_ms)}`], ["last call", ago(f.last_call_ms)],
        ["last build", ms(f.last_build_ms)],
      ]),
      el("div", { class: "toolbar" }, bust, el("button", { type: "button", onclick: () => load() }, "Refresh"),
        el("a", { href: `#/try?url=${encodeURIComponent(url)}${last ? "&call=" + encodeURIComponent(last.call) : ""}` }, "Try it")),
      el("h2", {}, "Recent invocations"),
      dataTable({
        id: "invocations-table", label: "invocations", sortBy: "at_ms", descending: true, rows: answer.invocations,
        columns: [
          { key: "at_ms", label: "time", numeric: true, render: (i) => new Date(i.at_ms).toLocaleTimeString() },
          { key: "call", label: "call", code: true },
          { key: "version", label: "version" },
          { key: "source", label: "source" },
          { key: "status", label: "status", numeric: true, render: (i) => el("span", { class: statusClass(i.status), title: i.error || "" }, String(i.status)) },
          { key: "duration_ms", label: "duration", numeric: true, render: (i) => ms(i.duration_ms) },
          { key: "jail_ms", label: "in jail", numeric: true, render: (i) => ms(i.jail_ms) },
          { key: "cache", label: "cached", value: (i) => i.cache === "hit" ? "yes" : i.cache === "miss" ? "no" : "–" },
          { key: "commit", label: "commit", render: (i) => short(i.commit) },
          { key: "error", label: "error", render: (i) => i.error || "" },
        ],
      }),
      el("h2", {}, "Builds"),
      answer.builds.length === 0
        ? el("p", { class: "muted" }, "No build since start-up (the binary came from the cache).")
        : el("ul", { id: "builds" }, answer.builds.map((b) => el("li", {},
          el("span", { class: b.ok ? "ok" : "bad" }, b.ok ? "built" : "failed"), ` ${new Date(b.at_ms).toLocaleString()} · ${ms(b.duration_ms)} · ${short(b.commit)} `,
          b.error ? el("div", {}, b.error) : null,
          b.output ? el("details", {}, el("summary", {}, "output"), el("pre", {}, b.output)) : null))));
  }
  load();
}
