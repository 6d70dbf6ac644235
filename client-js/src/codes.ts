/**
 * WebSocket close codes and error codes, with the client's reaction beside each.
 *
 * Mirrors `core/progress_core/codes.py`; `tests/test_codes_mirror.py` (Python) and `test/codes.test.ts`
 * compare the two, so keep one `NAME: value, // reaction` entry per line.
 */

export const CloseCode = {
  NORMAL: 1000, // client asked to close: do not reconnect
  GOING_AWAY: 1001, // server shutting down: reconnect at once, with jitter
  POLICY: 1008, // too many bad frames or a client that does not read: reconnect with backoff
  TOO_LARGE: 1009, // a frame over the size limit: fix the client, reconnect with backoff
  INTERNAL_ERROR: 1011, // the server failed this connection (logged): reconnect with backoff
  UNAUTHORIZED: 4401, // missing, invalid or expired token: get a fresh token, then reconnect
  AUTH_TIMEOUT: 4408, // no auth frame in time: reconnect with backoff
  TOO_MANY_CONNECTIONS: 4429, // per-owner connection limit: back off longer
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** `code` of an `{"op": "error"}` frame and of problem+json bodies. */
export const ErrorCode = {
  BAD_REQUEST: "bad_request",
  UNAUTHORIZED: "unauthorized",
  FORBIDDEN: "forbidden",
  NOT_FOUND: "not_found",
  CONFLICT: "conflict",
  JOB_FINISHED: "job_finished",
  TOO_MANY_SUBSCRIPTIONS: "too_many_subscriptions",
  STORE_UNAVAILABLE: "store_unavailable",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

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

/** How the client reacts to a close code; see `reactionTo`. */
export type Reaction = "stop" | "reconnect_now" | "refresh_token" | "back_off" | "back_off_longer";

/** The reconnect rule for each close code, as written beside it in `core/progress_core/codes.py`. */
export function reactionTo(code: number): Reaction {
  switch (code) {
    case CloseCode.NORMAL:
      return "stop";
    case CloseCode.GOING_AWAY:
      return "reconnect_now";
    case CloseCode.UNAUTHORIZED:
      return "refresh_token";
    case CloseCode.TOO_MANY_CONNECTIONS:
      return "back_off_longer";
    default:
      return "back_off";
  }
}

/** Error codes after which retrying the same request later can succeed. */
export function isRetryable(code: string): boolean {
  return code === ErrorCode.STORE_UNAVAILABLE;
}
