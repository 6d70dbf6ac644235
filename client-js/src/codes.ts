/**
 * WebSocket close codes and error codes, with the client's reaction beside each.
 *
 * The region between the `generated:codes` markers is copied from `core/progress_core/codes.py`
 * by `scripts/gen_codes.py`; `tests/test_codes_mirror.py` fails when it differs. Change the Python
 * table, then run `python scripts/gen_codes.py`.
 */

// generated:codes by scripts/gen_codes.py from core/progress_core/codes.py; do not edit
/** WebSocket close codes the gateway sends. */
export const CloseCode = {
  NORMAL: 1000, // the client asked to close
  GOING_AWAY: 1001, // the gateway is shutting down (drain)
  POLICY: 1008, // policy: `too many bad frames`, or `client does not read`
  TOO_LARGE: 1009, // a frame over `GATEWAY_MAX_FRAME_BYTES` (64 KiB): fix the client
  INTERNAL_ERROR: 1011, // `internal error`: the gateway failed this connection (and logged why)
  UNAUTHORIZED: 4401, // missing, invalid or expired token
  AUTH_TIMEOUT: 4408, // no auth frame in time
  TOO_MANY_CONNECTIONS: 4429, // the owner holds its limit of connections (WebSockets, SSE and long-polls together)
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** How the client reacts to a close code; see `reactionTo`. */
export type Reaction = "stop" | "reconnect_now" | "refresh_token" | "back_off" | "back_off_longer";

/** The reaction to each close code the gateway sends. */
export const CLOSE_REACTIONS: Readonly<Record<CloseCode, Reaction>> = {
  [CloseCode.NORMAL]: "stop",
  [CloseCode.GOING_AWAY]: "reconnect_now",
  [CloseCode.POLICY]: "back_off",
  [CloseCode.TOO_LARGE]: "back_off",
  [CloseCode.INTERNAL_ERROR]: "back_off",
  [CloseCode.UNAUTHORIZED]: "refresh_token",
  [CloseCode.AUTH_TIMEOUT]: "back_off",
  [CloseCode.TOO_MANY_CONNECTIONS]: "back_off_longer",
};

/** `code` of an `{"op": "error"}` frame and of problem+json bodies. */
export const ErrorCode = {
  BAD_REQUEST: "bad_request", // malformed id, query, body or frame
  UNAUTHORIZED: "unauthorized", // missing, malformed, forged or expired token
  FORBIDDEN: "forbidden", // the job exists but belongs to someone else
  NOT_FOUND: "not_found", // no such job, or no such path
  METHOD_NOT_ALLOWED: "method_not_allowed", // a method the path does not take
  REQUEST_TIMEOUT: "request_timeout", // request headers or body not received in time; the connection is closed
  CONFLICT: "conflict", // the change conflicts with the job's state
  JOB_EXISTS: "job_exists", // create with an id that is taken
  JOB_FINISHED: "job_finished", // a change to a job that already succeeded or failed
  PAYLOAD_TOO_LARGE: "payload_too_large", // body, result or params over its limit
  UNPROCESSABLE: "unprocessable", // unknown kind, or params the kind refuses
  UPGRADE_REQUIRED: "upgrade_required", // `/ws` without `Upgrade: websocket`
  TOO_MANY_CONNECTIONS: "too_many_connections", // the owner holds its limit of connections (WebSocket, SSE, long-poll)
  TOO_MANY_SUBSCRIPTIONS: "too_many_subscriptions", // the connection watches its limit of jobs
  HTTP_ERROR: "http_error", // an HTTP error no other code names
  INTERNAL: "internal", // the gateway failed (and logged why)
  EXECUTOR_ERROR: "executor_error", // the executor could not start the job; it ended `failed` (`spawn_error`)
  EXECUTOR_UNAVAILABLE: "executor_unavailable", // the executor is unreachable for now
  STORE_UNAVAILABLE: "store_unavailable", // the store is unreachable or failing; never reported as not found
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * An error code's HTTP status (`null`: the status of the HTTP error it stands for), and whether
 * retrying the same request later can succeed.
 */
export interface ErrorRule {
  readonly status: number | null;
  readonly retryable: boolean;
}

export const ERROR_RULES: Readonly<Record<ErrorCode, ErrorRule>> = {
  bad_request: { status: 400, retryable: false },
  unauthorized: { status: 401, retryable: false },
  forbidden: { status: 403, retryable: false },
  not_found: { status: 404, retryable: false },
  method_not_allowed: { status: 405, retryable: false },
  request_timeout: { status: 408, retryable: false },
  conflict: { status: 409, retryable: false },
  job_exists: { status: 409, retryable: false },
  job_finished: { status: 409, retryable: false },
  payload_too_large: { status: 413, retryable: false },
  unprocessable: { status: 422, retryable: false },
  upgrade_required: { status: 426, retryable: false },
  too_many_connections: { status: 429, retryable: true },
  too_many_subscriptions: { status: 429, retryable: false },
  http_error: { status: null, retryable: false },
  internal: { status: 500, retryable: false },
  executor_error: { status: 502, retryable: false },
  executor_unavailable: { status: 503, retryable: true },
  store_unavailable: { status: 503, retryable: true },
};
// end generated:codes

/**
 * Close codes the client itself uses on its side of a connection (never sent by the gateway).
 * 4000-4099 is this client's private range.
 */
export const LocalCloseCode = {
  HEARTBEAT_TIMEOUT: 4000, // no pong within heartbeat_s: the connection is dead, reconnect with backoff
  OPEN_TIMEOUT: 4001, // no `ready` frame within the open timeout: reconnect with backoff
  ABNORMAL: 1006, // the socket vanished without a close frame (network, refused upgrade)
} as const;
export type LocalCloseCode = (typeof LocalCloseCode)[keyof typeof LocalCloseCode];

const REACTIONS: Readonly<Partial<Record<number, Reaction>>> = CLOSE_REACTIONS;
const RULES: Readonly<Partial<Record<string, ErrorRule>>> = ERROR_RULES;

/** The reconnect rule for a close code: the table's, and backoff for any other code. */
export function reactionTo(code: number): Reaction {
  return REACTIONS[code] ?? "back_off";
}

/** Error codes after which retrying the same request later can succeed. */
export function isRetryable(code: string): boolean {
  return RULES[code]?.retryable ?? false;
}
