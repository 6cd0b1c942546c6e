// The console: a hash-routed single page. Each page is a module whose default export
// renders into <main> and returns what to stop when the page is left.
import overview from "./overview.js";
import { functionsPage, functionPage } from "./functions.js";
import tryIt from "./try.js";
import jails from "./jails.js";
import network from "./network.js";
import work from "./work.js";
import keys from "./keys.js";

const ADMIN_HEADER = document.body.dataset.adminHeader;
const TOKEN_KEY = "skyisland-admin-token";
const pages = { overview, functions: functionsPage, function: functionPage, try: tryIt, jails, network, async: work, keys };

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY) || ""; },
  set token(value) { if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY); },
  adminHeader: ADMIN_HEADER,
};

export class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

/** Calls the server's API (with the admin token when there is one); throws ApiError with the server's message. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (session.token) headers[ADMIN_HEADER] = session.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, `${method} ${path}: the server did not answer (${e.message})`);
  }
  const text = await response.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: kept as text */ }
  if (!response.ok) {
    const said = data && typeof data === "object" ? [data.error, data.detail].filter(Boolean).join(": ") : text;
    throw new ApiError(response.status, `${method} ${path}: ${response.status} ${said || response.statusText}`, data);
  }
  return data;
}

const errorBox = document.getElementById("error");
let errorOwner = null;

/** Shows an error from the API (or anything else) above the page. */
export function showError(error, owner = null) {
  errorOwner = owner;
  errorBox.textContent = error instanceof Error ? error.message : String(error);
  errorBox.hidden = false;
}

export function clearError(owner = null) {
  if (owner !== null && owner !== errorOwner) return;
  errorBox.hidden = true;
  errorBox.textContent = "";
  errorOwner = null;
}

let current = { stop() {} };

function route() {
  const [name, query] = location.hash.replace(/^#\/?/, "").split("?");
  const page = pages[name] ? name : "overview";
  current.stop();
  clearError();
  for (const link of document.querySelectorAll("nav a")) {
    const target = link.getAttribute("href").slice(2);
    if (target === page || (page === "function" && target === "functions")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  main.replaceChildren();
  const timers = [];
  const context = {
    main,
    params: new URLSearchParams(query || ""),
    hasToken: () => session.token !== "",
    /** Runs `task` now and every `period` ms while the page is shown; its errors are shown, and cleared when it works again. */
    every(period, task) {
      const owner = {};
      const handle = { stopped: false, timeout: null };
      const run = async () => {
        try { await task(); if (!handle.stopped) clearError(owner); } catch (e) { if (!handle.stopped) showError(e, owner); }
        if (!handle.stopped) handle.timeout = setTimeout(run, period);
      };
      timers.push(handle);
      run();
    },
  };
  const result = pages[page](context) || {};
  current = {
    stop() {
      for (const handle of timers) { handle.stopped = true; clearTimeout(handle.timeout); }
      result.stop?.();
    },
  };
}

/** The admin pages' answer to a missing token. */
export function needToken(main) {
  main.append(Object.assign(document.createElement("p"), {
    className: "notice",
    textContent: "This page shows the admin API's data: type in the admin token above (it is kept in this tab only).",
  }));
}

function setUpToken() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token");
  const forget = document.getElementById("forget");
  const show = () => { forget.hidden = !session.token; input.placeholder = session.token ? "(token set)" : ""; };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    session.token = input.value.trim();
    input.value = "";
    show();
    route();
  });
  forget.addEventListener("click", () => { session.token = ""; show(); route(); });
  show();
}

async function showBuild() {
  try {
    const health = await api("/healthcheck");
    document.getElementById("build").textContent = `${health.version}${health.git_sha ? " · " + String(health.git_sha).slice(0, 8) : ""}`;
  } catch { /* the overview shows the error */ }
}

setUpToken();
showBuild();
window.addEventListener("hashchange", route);
route();
