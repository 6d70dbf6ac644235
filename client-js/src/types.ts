/**
 * The shapes the client speaks: job snapshots (docs/design.md §3), wire frames (§5), connection states
 * and the typed event map of `ProgressClient`.
 */

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** `queued` → `running` → one of the terminal statuses. */
export const JobStatus = {
  Queued: "queued",
  Running: "running",
  Succeeded: "succeeded",
  Failed: "failed",
  Cancelled: "cancelled",
} as const;
export type JobStatus = (typeof JobStatus)[keyof typeof JobStatus];

export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set<JobStatus>([
  JobStatus.Succeeded,
  JobStatus.Failed,
  JobStatus.Cancelled,
]);

export interface JobError {
  /** `worker_error`, `worker_lost`, `cancelled`, `timeout`, … */
  code: string;
  message: string;
}

/**
 * One complete version of a job. A higher `seq` supersedes every lower one, except that a
 * snapshot delivered as a reset (the store went back) supersedes whatever the client had.
 */
export interface JobSnapshot {
  id: string;
  owner: string;
  kind: string;
  status: JobStatus;
  /** Percent, 0–100, never decreases within a job (a reset may take it back: the store's truth). */
  progress: number;
  stage: string | null;
  message: string | null;
  /** +1 on every change, 1 on creation. */
  seq: number;
  /** Which run of the job this is (1 for the first). */
  attempt: number;
  created_at: string;
  updated_at: string;
  heartbeat_at: string;
  executor: string | null;
  call_id: string | null;
  params: { [key: string]: JsonValue };
  result: JsonValue;
  error: JobError | null;
  cancel_requested: boolean;
}

/** `GET /exports/active`: the caller's unfinished jobs, and jobs finished recently. */
export interface ActiveJobs {
  active: JobSnapshot[];
  recent: JobSnapshot[];
}

export function isTerminal(job: Pick<JobSnapshot, "status">): boolean {
  return TERMINAL_STATUSES.has(job.status);
}

// -- connection -----------------------------------------------------------------------------

/**
 * `connecting`: the first WebSocket attempt. `open`: the WebSocket is authenticated.
 * `reconnecting`: the WebSocket was lost (or never opened) and is retried with backoff.
 * `fallback`: watching over SSE or long-poll while the WebSocket is probed in the background.
 * `closed`: `close()` was called; nothing reconnects.
 */
export const State = {
  Connecting: "connecting",
  Open: "open",
  Reconnecting: "reconnecting",
  Fallback: "fallback",
  Closed: "closed",
} as const;
export type State = (typeof State)[keyof typeof State];

export const Transport = {
  WebSocket: "websocket",
  Sse: "sse",
  Poll: "poll",
} as const;
export type Transport = (typeof Transport)[keyof typeof Transport];

export interface StateContext {
  state: State;
  previous: State;
  transport: Transport;
  /** Consecutive failed attempts of the current transport (0 once it works). */
  attempt: number;
  /** When reconnecting: ms until the next attempt. */
  delayMs?: number;
  /** The close code that caused the change, if one did. */
  code?: number;
  reason?: string;
}

export interface ErrorContext {
  /** An `ErrorCode`, `callback_failed`, `token_failed` or `transport`. */
  code: string;
  message: string;
  /** The job the error is about, when there is one (the watch of it has ended unless retried). */
  jobId?: string;
  /** The HTTP status, for errors from the HTTP API. */
  status?: number;
  /**
   * The client stopped because of it (state `closed`) and retries nothing until `connect()`:
   * a fixed-string token the gateway refused.
   */
  fatal?: boolean;
  cause?: unknown;
}

/** Event name → `detail` of the `CustomEvent` dispatched by `ProgressClient`. */
export interface ClientEventMap {
  state: StateContext;
  update: JobSnapshot;
  error: ErrorContext;
}

// -- platform seams -------------------------------------------------------------------------

/**
 * What the client needs of a WebSocket: the browser's, Node 22's, or the `ws` package's.
 * Handlers take `never` so every implementation's own event types fit; the client's handlers
 * read only `data` (message) and `code`/`reason` (close).
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: never) => void) | null;
  onmessage: ((event: never) => void) | null;
  onclose: ((event: never) => void) | null;
  onerror: ((event: never) => void) | null;
}

export interface MessageEventLike {
  data: unknown;
}

export interface CloseEventLike {
  code: number;
  reason: string;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What the client needs of an EventSource: the browser's or the `eventsource` package's. */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((event: never) => void) | null;
  onerror: ((event: never) => void) | null;
  addEventListener(type: string, listener: (event: { data: string }) => void): void;
  close(): void;
}

export type EventSourceConstructor = new (url: string) => EventSourceLike;

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** A token, or a function that returns a fresh one (called again after 4401 or HTTP 401). */
export type TokenProvider = string | (() => string | Promise<string>);

// -- wire frames (docs/design.md §5) ----------------------------------------------------------------

export interface ReadyFrame {
  op: "ready";
  heartbeat_s: number;
  server_time: string;
}
export interface UpdateFrame {
  op: "update";
  job: JobSnapshot;
  /** The store went back (failover, restore, a forged seq): replace the job's state with `job`. */
  reset?: boolean;
}
export interface ErrorFrame {
  op: "error";
  code: string;
  message: string;
  job_id?: string;
  ref?: string | null;
}
export interface AckFrame {
  op: "ack";
  ref: string | null;
}
export interface PongFrame {
  op: "pong";
}
export type ServerFrame = ReadyFrame | UpdateFrame | ErrorFrame | AckFrame | PongFrame;

export interface JobCursor {
  id: string;
  seq?: number;
}
