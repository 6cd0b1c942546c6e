export interface ClientOptions {
  /** Milliseconds per request; 0 for none. Default 60000. */
  timeout?: number;
  adminToken?: string;
  /** Sent as `Authorization: Bearer KEY` with function calls. */
  apiKey?: string;
  adminHeader?: string;
}

export interface FunctionOptions {
  /** Resolve to the whole answer instead of `data`. */
  fullResp?: boolean;
  /** A commit, tag or branch. */
  version?: string;
  cacheBust?: boolean;
  ip4?: boolean;
  /** "go", "python", "node" or "lua"; absent: the server detects it. */
  runtime?: "go" | "python" | "node" | "lua";
  /** Whether the request cache may answer and store it (default: as the server is configured). */
  cache?: boolean;
}

export interface Answer {
  timestamp: number;
  data: string;
  commit: string;
  path: "dispatch" | "build";
  built: boolean;
  cache: "hit" | "miss";
  cache_tier?: "memory" | "redis";
  cached_at_ms?: number;
  duration_ms: number;
}

export interface Invocation {
  id: string;
  status: "queued" | "running" | "succeeded" | "failed";
  request: Record<string, unknown>;
  created_at: string;
  started_at?: string;
  finished_at?: string;
  attempts: Array<{ number: number; started_at: string; finished_at?: string; status?: number; error?: string }>;
  /** Once finished: the status a synchronous call would have had, and its answer or error body. */
  http_status?: number;
  result?: Answer;
  error?: Record<string, unknown>;
  schedule?: string;
  callback?: { state: "pending" | "delivered" | "failed"; attempts: number; last_error?: string };
}

export interface Schedule {
  name: string;
  url: string;
  call: string;
  cron?: string;
  every?: string;
  timezone?: string;
  version?: string;
  runtime?: "go" | "python" | "node" | "lua";
  catch_up?: boolean;
  paused?: boolean;
  cache?: boolean;
}

export class SkyIslandError extends Error {
  /** The HTTP status, or 0 when there was no answer. */
  status: number;
  message: string;
  /** The server's JSON body (e.g. `output` for a build failure, `stderr` for a failing function). */
  body: Record<string, unknown>;
  /** Seconds, from Retry-After. */
  retryAfter: number | null;
}

export class Client {
  constructor(host: string, port: number, options?: ClientOptions);
  endpoint: string;
  adminToken: string | null;
  apiKey: string | null;
  function(url: string, call: string, options?: FunctionOptions & { fullResp?: false }): Promise<string>;
  function(url: string, call: string, options: FunctionOptions & { fullResp: true }): Promise<Answer>;
  callAsync(
    url: string,
    call: string,
    options?: Omit<FunctionOptions, "fullResp"> & { callbackUrl?: string; idempotencyKey?: string },
  ): Promise<string>;
  invocation(id: string): Promise<Invocation>;
  waitInvocation(id: string, timeout?: number): Promise<Invocation>;
  addSchedule(schedule: Schedule): Promise<Record<string, unknown>>;
  schedules(): Promise<Array<Record<string, unknown>>>;
  schedule(name: string): Promise<Record<string, unknown>>;
  pauseSchedule(name: string, paused?: boolean): Promise<Record<string, unknown>>;
  deleteSchedule(name: string): Promise<void>;
  jails(): Promise<Array<Record<string, unknown>>>;
  jail(id: string): Promise<Record<string, unknown>>;
  killJail(id: string): Promise<Record<string, unknown>>;
  killJails(): Promise<Record<string, unknown>>;
  ips(state?: "available" | "unavailable"): Promise<Record<string, unknown>>;
  setIp(ip: string, state: "available" | "unavailable"): Promise<Record<string, unknown>>;
  apiStats(): Promise<Record<string, unknown>>;
}

export default Client;
