// Jails: the running jails with their cgroups' memory and CPU use, and the pre-started ones
// waiting for a call; kill one, or all.
import { api, needToken, showError } from "./app.js";
import { el, ms, bytes, dataTable, confirmAction } from "./ui.js";

export default function jails({ main, every, hasToken }) {
  main.append(el("h1", {}, "Jails"));
  if (!hasToken()) return needToken(main);
  const summary = el("p", { id: "jails-summary" });
  const list = el("div", { id: "jails" });
  const killAll = el("button", { type: "button", class: "danger", id: "kill-all", onclick: async () => {
    if (!(await confirmAction("Kill every running jail (their calls are answered with an error) and every pre-started one?"))) return;
    try { await api("/api/v1/admin/jails", { method: "DELETE" }); } catch (e) { showError(e); }
    refresh();
  } }, "Kill all");
  const waiting = el("div", { id: "prestarted" });
  main.append(el("div", { class: "toolbar" }, summary, killAll), list,
    el("h2", {}, "Pre-started, waiting for a call"),
    el("p", { class: "muted" }, "Each serves one call, then exits; killed ones are started again as calls come."), waiting);
  let table = null, waitingTable = null;
  const columns = [
    { key: "jid", label: "jid", numeric: true },
    { key: "kind", label: "kind" },
    { key: "label", label: "function", code: true },
    { key: "state", label: "state" },
    { key: "started_at_ms", label: "age", numeric: true, render: (j) => ms(Math.max(0, Date.now() - j.started_at_ms)) },
    { key: "memory_bytes", label: "memory", numeric: true, render: (j) => bytes(j.memory_bytes) },
    { key: "cpu_ms", label: "CPU", numeric: true, render: (j) => ms(j.cpu_ms) },
    { key: "ip4", label: "ip4", render: (j) => j.ip4 || "–" },
    { key: "id", label: "", value: () => "", render: (j) => el("button", { type: "button", class: "danger kill", "data-focus-key": `kill-${j.id}`,
      "aria-label": `Kill jail ${j.jid || j.id}`, onclick: async (event) => {
        event.target.disabled = true;
        try { await api(`/api/v1/admin/jail/${encodeURIComponent(j.id)}`, { method: "DELETE" }); } catch (e) { showError(e); }
        refresh();
      } }, "Kill") },
  ];
  const refresh = async () => {
    const answer = await api("/api/v1/admin/jails");
    const prestarted = answer.prestarted || [];
    summary.textContent = `${answer.count} running · ${prestarted.length} pre-started`;
    if (table) {
      table.update(answer.jails);
      waitingTable.update(prestarted);
      return;
    }
    table = dataTable({ id: "jails-table", label: "jails", filter: false, sortBy: "started_at_ms", rows: answer.jails, empty: "No jail is running.", columns });
    waitingTable = dataTable({ id: "prestarted-table", label: "pre-started jails", filter: false, sortBy: "started_at_ms", rows: prestarted,
      empty: "None: functions called lately get some.", columns: columns.filter((c) => c.key !== "jid" && c.key !== "ip4") });
    list.replaceChildren(table);
    waiting.replaceChildren(waitingTable);
  };
  every(2000, refresh);
}
