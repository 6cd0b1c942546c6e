// Keys: the API keys (never their secrets); make one (its secret shown once), revoke one.
import { api, needToken, showError, clearError } from "./app.js";
import { el, ago, dataTable, confirmAction } from "./ui.js";

export default function keys({ main, hasToken }) {
  main.append(el("h1", {}, "API keys"));
  if (!hasToken()) return needToken(main);
  const name = el("input", { id: "key-name", required: true, maxlength: 100, placeholder: "what the key is for" });
  const rate = el("input", { id: "key-rate", type: "number", min: "0.001", step: "any", placeholder: "[rate_limit]" });
  const burst = el("input", { id: "key-burst", type: "number", min: "1", step: "1", placeholder: "rate, rounded up" });
  const made = el("div", { id: "key-made", "aria-live": "polite" });
  const form = el("form", { class: "inline", id: "key-form" },
    el("label", {}, "name", name), el("label", {}, "requests per second", rate), el("label", {}, "burst", burst),
    el("button", { type: "submit", class: "primary" }, "Make a key"));
  const list = el("div", { id: "keys" });
  main.append(form, made, list);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim() };
    if (rate.value) body.per_second = Number(rate.value);
    if (burst.value) body.burst = Number(burst.value);
    try {
      const key = await api("/api/v1/admin/keys", { method: "POST", body });
      clearError();
      form.reset();
      made.replaceChildren(el("p", {}, `Key ${key.id} (${key.name}) made. Copy it now: it is not shown again.`), el("p", { class: "secret", id: "key-secret" }, key.key));
    } catch (e) {
      showError(e);
    }
    load();
  });
  async function load() {
    let answer;
    try {
      answer = await api("/api/v1/admin/keys");
    } catch (e) {
      return showError(e);
    }
    list.replaceChildren(dataTable({
      id: "keys-table", label: "keys", rows: answer.keys, empty: "No API key: calls need none unless auth.api_keys_required is set.",
      columns: [
        { key: "id", label: "id", code: true },
        { key: "name", label: "name" },
        { key: "source", label: "from" },
        { key: "rate", label: "rate", value: (k) => k.per_second ? `${k.per_second}/s burst ${k.burst ?? Math.ceil(k.per_second)}` : "[rate_limit]" },
        { key: "created_at", label: "created", numeric: true, render: (k) => k.created_at ? new Date(k.created_at * 1000).toLocaleString() : "–" },
        { key: "last_used_ms", label: "last used", numeric: true, render: (k) => ago(k.last_used_ms) },
        { key: "action", label: "", value: () => "", render: (k) => k.source === "file"
          ? el("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.id}`, "data-key": k.id, onclick: async () => {
            if (!(await confirmAction(`Revoke key ${k.id} (${k.name})? Calls with it are refused at once.`))) return;
            try { await api(`/api/v1/admin/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" }); clearError(); } catch (e) { showError(e); }
            load();
          } }, "Revoke")
          : el("span", { class: "muted" }, "in the configuration") },
      ],
    }));
  }
  load();
}
