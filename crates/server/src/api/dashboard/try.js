// Try it: a real call, its answer, status and timing, and the same call as command lines.
import { api, ApiError } from "./app.js";
import { el, ms } from "./ui.js";

const quote = (text) => `'${String(text).replaceAll("'", "'\\''")}'`;

export default function tryIt({ main, params }) {
  const field = (label, input) => [el("label", { for: input.id }, label), input];
  const url = el("input", { id: "try-url", required: true, placeholder: "github.com/owner/repo[/dir]", value: params.get("url") || "", spellcheck: "false" });
  const call = el("input", { id: "try-call", required: true, placeholder: "Encode(57.64911, 10.40744)", value: params.get("call") || "", spellcheck: "false" });
  const version = el("input", { id: "try-version", placeholder: "commit, tag or branch (optional)", spellcheck: "false" });
  const runtime = el("select", { id: "try-runtime" }, ["", "go", "python", "node", "lua"].map((r) => el("option", { value: r }, r || "detect")));
  const ip4 = el("input", { id: "try-ip4", type: "checkbox" });
  const cache = el("select", { id: "try-cache" }, el("option", { value: "" }, "server default"), el("option", { value: "true" }, "use"), el("option", { value: "false" }, "skip"));
  const submit = el("button", { type: "submit", class: "primary", id: "try-submit" }, "Call");
  const output = el("section", { id: "try-output", "aria-live": "polite" });
  const form = el("form", { class: "grid", id: "try-form" },
    field("url", url), field("call", call), field("version", version), field("runtime", runtime),
    field("IPv4 address", ip4), field("request cache", cache), el("div", { class: "full" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { url: url.value.trim(), call: call.value.trim() };
    if (version.value.trim()) body.version = version.value.trim();
    if (runtime.value) body.runtime = runtime.value;
    if (ip4.checked) body.ip4 = true;
    if (cache.value) body.cache = cache.value === "true";
    submit.disabled = true;
    output.replaceChildren(el("p", { class: "muted" }, "Calling…"));
    const started = performance.now();
    let status, answer;
    try {
      answer = await api("/api/v1/function", { method: "POST", body });
      status = 200;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      status = e.status;
      answer = e.body ?? { error: e.message };
    }
    const elapsed = performance.now() - started;
    submit.disabled = false;
    const ok = status === 200;
    output.replaceChildren(
      el("h2", {}, "Answer"),
      el("p", {}, el("strong", { id: "try-status", class: ok ? "ok" : status >= 500 || status === 0 ? "bad" : "warn" }, status === 0 ? "no answer" : String(status)),
        ` · ${ms(elapsed)} in the browser`, ok ? ` · ${ms(answer.duration_ms)} in the server · cache ${answer.cache} · commit ${String(answer.commit).slice(0, 10)}` : ""),
      ok ? el("pre", { id: "try-data" }, answer.data) : el("pre", { id: "try-error", class: "bad" }, [answer.error, answer.detail, answer.stderr, answer.output].filter(Boolean).join("\n\n")),
      el("details", {}, el("summary", {}, "Whole answer (JSON)"), el("pre", {}, JSON.stringify(answer, null, 2))),
      el("h2", {}, "The same call from a shell"),
      el("pre", { id: "try-curl" }, `curl -sS -X POST ${location.origin}/api/v1/function -H 'Content-Type: application/json' \\\n  -d ${quote(JSON.stringify(body))}`),
      el("pre", { id: "try-cli" }, ["skyisland call", `--server ${location.origin}`, quote(body.url), quote(body.call),
        body.version ? `--version ${quote(body.version)}` : "", body.runtime ? `--runtime ${body.runtime}` : "",
        body.ip4 ? "--ip4" : "", body.cache === false ? "--no-cache" : ""].filter(Boolean).join(" ")),
      el("p", { class: "muted" }, "Where API keys are required, add -H 'Authorization: Bearer KEY' (curl) or --api-key KEY (skyisland)."));
  });
  main.append(el("h1", {}, "Try it"), el("p", { class: "muted" }, "Makes a real call (with the admin token when one is typed in)."), form, output);
}
