// Network: the IPv4 pool, who holds each address; mark one available or unavailable.
import { api, needToken, showError, clearError } from "./app.js";
import { el, dataTable, facts } from "./ui.js";

export default function network({ main, hasToken }) {
  main.append(el("h1", {}, "Network"));
  if (!hasToken()) return needToken(main);
  const body = el("div", { id: "network" });
  main.append(body);
  async function load() {
    let answer;
    try {
      answer = await api("/api/v1/admin/ips");
    } catch (e) {
      if (e.status === 404) return body.replaceChildren(el("p", { class: "notice" }, e.body?.error || e.message));
      return showError(e);
    }
    const set = (ip, state) => async (event) => {
      event.target.disabled = true;
      try {
        await api("/api/v1/admin/ips", { method: "PUT", body: { ip, state } });
        clearError();
      } catch (e) {
        showError(e);
      }
      await load();
      body.querySelector(`[data-ip="${CSS.escape(ip)}"]`)?.focus();
    };
    const free = answer.ips.filter((a) => a.state === "available" && !a.in_use_by).length;
    body.replaceChildren(
      facts([["bridge", answer.bridge], ["network", answer.cidr], ["gateway", answer.gateway], ["addresses", `${answer.count} (${free} free now)`]]),
      el("div", { class: "toolbar" }, el("button", { type: "button", onclick: () => load() }, "Refresh")),
      dataTable({
        id: "ips-table", label: "addresses", rows: answer.ips, sortBy: "order",
        columns: [
          { key: "order", label: "address", value: (a) => a.ip.split(".").reduce((n, part) => n * 256 + Number(part), 0), render: (a) => a.ip },
          { key: "state", label: "state", render: (a) => el("span", { class: a.state === "available" ? "ok" : "bad" }, a.state) },
          { key: "in_use_by", label: "held by", render: (a) => a.in_use_by || "–" },
          { key: "action", label: "", value: () => "", render: (a) => a.state === "available"
            ? el("button", { type: "button", "data-ip": a.ip, "aria-label": `Mark ${a.ip} unavailable`, onclick: set(a.ip, "unavailable") }, "Mark unavailable")
            : el("button", { type: "button", "data-ip": a.ip, "aria-label": `Mark ${a.ip} available`, onclick: set(a.ip, "available") }, "Mark available") },
        ],
      }));
  }
  load();
}
