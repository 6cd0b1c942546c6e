// Client of Sky Island, a Function-as-a-Service platform that runs functions of Go
// packages from git repositories in fresh jails. No dependencies: fetch (Node 18+ and
// browsers).
//
//   const client = new Client("127.0.0.1", 3280);
//   const data = await client.function("github.com/mmcloughlin/geohash", "Encode(1, 2)");

/** An answer other than 2xx (`status` its HTTP status), or no answer (`status` 0). */
export class SkyIslandError extends Error {
  constructor(status, message, body = {}, retryAfter = null) {
    super(`${status}: ${message}`);
    this.name = "SkyIslandError";
    this.status = status;
    this.message = message;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

export class Client {
  /**
   * @param {string} host  a host name, or a URL with a scheme ("https://…"); http without one
   * @param {number} port
   * @param {{timeout?: number, adminToken?: string, apiKey?: string, adminHeader?: string}} [options]
   */
  constructor(host, port, options = {}) {
    const base = host.includes("://") ? host : `http://${host}`;
    this.endpoint = `${base.replace(/\/+$/, "")}:${port}`;
    this.timeout = options.timeout ?? 60000;
    this.adminToken = options.adminToken ?? null;
    this.apiKey = options.apiKey ?? null;
    this.adminHeader = options.adminHeader ?? "X-Sky-Island-Token";
  }

  /**
   * Runs `call` of the package at import path `url`; resolves to what it printed, or with
   * `fullResp` to the whole answer.
   */
  async function(url, call, options = {}) {
    const body = { url, call };
    if (options.version !== undefined) body.version = options.version;
    if (options.cacheBust) body.cache_bust = true;
    if (options.ip4) body.ip4 = true;
    if (options.runtime !== undefined) body.runtime = options.runtime;
    if (options.cache !== undefined) body.cache = Boolean(options.cache);
    const headers = {};
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    const answer = await this.#request("POST", "/api/v1/function", body, headers);
    return options.fullResp ? answer : answer.data;
  }

  /**
   * Submits a call to run in the background; resolves to its invocation id at once.
   * `options`: those of `function`, and `callbackUrl`, `idempotencyKey`.
   */
  async callAsync(url, call, options = {}) {
    const body = { url, call, async: true };
    if (options.version !== undefined) body.version = options.version;
    if (options.cacheBust) body.cache_bust = true;
    if (options.ip4) body.ip4 = true;
    if (options.runtime !== undefined) body.runtime = options.runtime;
    if (options.cache !== undefined) body.cache = Boolean(options.cache);
    if (options.callbackUrl !== undefined) body.callback_url = options.callbackUrl;
    if (options.idempotencyKey !== undefined) body.idempotency_key = options.idempotencyKey;
    return (await this.#request("POST", "/api/v1/function", body, this.#keyHeaders())).id;
  }

  /** An invocation: `status`, `attempts`, and once finished `http_status` and `result` or `error`. */
  invocation(id) {
    return this.#request("GET", `/api/v1/invocations/${encodeURIComponent(id)}`, undefined, this.#keyHeaders());
  }

  /** Polls until the invocation has finished (at most `timeout` ms); resolves to it. */
  async waitInvocation(id, timeout = 600000) {
    const deadline = Date.now() + timeout;
    let pause = 50;
    for (;;) {
      const invocation = await this.invocation(id);
      if (invocation.status === "succeeded" || invocation.status === "failed") return invocation;
      if (Date.now() + pause > deadline) {
        throw new SkyIslandError(0, `invocation ${id} did not finish within ${timeout} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 1000);
    }
  }

  /** Adds a schedule (admin): `{name, url, call, cron | every, timezone?, catch_up?, ...}`. */
  addSchedule(schedule) {
    return this.#admin("POST", "/api/v1/schedules", schedule);
  }

  async schedules() {
    return (await this.#admin("GET", "/api/v1/schedules")).items;
  }

  schedule(name) {
    return this.#admin("GET", `/api/v1/schedules/${encodeURIComponent(name)}`);
  }

  pauseSchedule(name, paused = true) {
    return this.#admin("PUT", `/api/v1/schedules/${encodeURIComponent(name)}`, { paused });
  }

  async deleteSchedule(name) {
    await this.#admin("DELETE", `/api/v1/schedules/${encodeURIComponent(name)}`);
  }

  #keyHeaders() {
    return this.apiKey ? { Authorization: `Bearer ${this.apiKey}` } : {};
  }

  async jails() {
    return (await this.#admin("GET", "/api/v1/admin/jails")).jails;
  }

  jail(id) {
    return this.#admin("GET", `/api/v1/admin/jail/${encodeURIComponent(id)}`);
  }

  killJail(id) {
    return this.#admin("DELETE", `/api/v1/admin/jail/${encodeURIComponent(id)}`);
  }

  killJails() {
    return this.#admin("DELETE", "/api/v1/admin/jails");
  }

  ips(state) {
    const query = state === undefined ? "" : `?state=${encodeURIComponent(state)}`;
    return this.#admin("GET", `/api/v1/admin/ips${query}`);
  }

  setIp(ip, state) {
    return this.#admin("PUT", "/api/v1/admin/ips", { ip, state });
  }

  apiStats() {
    return this.#admin("GET", "/api/v1/admin/api-stats");
  }

  #admin(method, path, body) {
    const headers = this.adminToken ? { [this.adminHeader]: this.adminToken } : {};
    return this.#request(method, path, body, headers);
  }

  async #request(method, path, body, headers) {
    const init = { method, headers: { Accept: "application/json", ...headers } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    if (this.timeout > 0) init.signal = AbortSignal.timeout(this.timeout);
    let response;
    try {
      response = await fetch(this.endpoint + path, init);
    } catch (e) {
      throw new SkyIslandError(0, `no answer from ${this.endpoint}: ${e.cause?.message ?? e.message}`);
    }
    const text = await response.text();
    let parsed = null;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
    if (!response.ok) {
      const message = parsed && typeof parsed.error === "string" ? parsed.error : text.trim();
      const retry = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
      throw new SkyIslandError(response.status, message, parsed ?? {}, Number.isNaN(retry) ? null : retry);
    }
    if (text === "" && response.status === 204) return null;
    if (parsed === null) throw new SkyIslandError(response.status, `unreadable answer: ${text.slice(0, 200)}`);
    return parsed;
  }
}

export default Client;
