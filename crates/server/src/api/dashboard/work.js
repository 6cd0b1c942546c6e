// Async: recent invocations with their state, and the schedules with their next and last runs.
import { api, needToken, showError, clearError } from "./app.js";
import { el, time, dataTable, statusClass } from "./ui.js";

export default function work({ main, every, hasToken }) {
  main.append(el("h1", {}, "Async invocations and schedules"));
  if (!hasToken()) return needToken(main);
  const schedules = el("div", { id: "schedules" });
  const invocations = el("div", { id: "invocations" });
  main.append(el("h2", {}, "Schedules"), schedules, el("h2", {}, "Recent invocations"), invocations);
  let load = () => {};
  let schedulesTable = null, jobsTable = null;
  every(5000, load = async () => {
    const [rows, jobs] = await Promise.all([api("/api/v1/schedules"), api("/api/v1/invocations?limit=50")]);
    const pause = (name, paused) => async (event) => {
      event.target.disabled = true;
      try {
        await api(`/api/v1/schedules/${encodeURIComponent(name)}`, { method: "PUT", body: { paused } });
        clearError();
      } catch (e) {
        showError(e);
      }
      load();
    };
    if (schedulesTable) schedulesTable.update(rows.items);
    else schedules.replaceChildren(schedulesTable = dataTable({
      id: "schedules-table", label: "schedules", rows: rows.items, filter: false, empty: "No schedule: POST /api/v1/schedules makes one.",
      columns: [
        { key: "name", label: "name" },
        { key: "url", label: "url", code: true },
        { key: "call", label: "call", code: true },
        { key: "when", label: "when", value: (s) => s.cron ? `${s.cron}${s.timezone ? " " + s.timezone : ""}` : `every ${s.every}` },
        { key: "next_run_at", label: "next run", render: (s) => s.paused ? "paused" : time(s.next_run_at) },
        { key: "last", label: "last run", value: (s) => s.last_runs?.[0]?.created_at || "", render: (s) => {
          const run = s.last_runs?.[0];
          return run ? el("span", { class: run.http_status ? statusClass(run.http_status) : "" }, `${time(run.created_at)} · ${run.status}${run.http_status ? " " + run.http_status : ""}`) : "–";
        } },
        { key: "action", label: "", value: () => "", render: (s) => el("button", { type: "button", onclick: pause(s.name, !s.paused) }, s.paused ? "Resume" : "Pause") },
      ],
    }));
    if (jobsTable) return jobsTable.update(jobs.items);
    invocations.replaceChildren(jobsTable = dataTable({
      id: "async-table", label: "invocations", rows: jobs.items, empty: "No async invocation kept.",
      columns: [
        { key: "created_at", label: "created", render: (j) => time(j.created_at) },
        { key: "id", label: "id", code: true, render: (j) => el("details", {}, el("summary", {}, j.id), el("pre", {}, JSON.stringify(j, null, 2))) },
        { key: "status", label: "state" },
        { key: "url", label: "url", code: true, value: (j) => j.request?.url },
        { key: "call", label: "call", code: true, value: (j) => j.request?.call },
        { key: "attempts", label: "attempts", numeric: true, value: (j) => j.attempts?.length ?? 0 },
        { key: "http_status", label: "status", numeric: true, render: (j) => j.http_status ? el("span", { class: statusClass(j.http_status) }, String(j.http_status)) : "–" },
        { key: "schedule", label: "schedule" },
      ],
    }));
  });
}
