/** `ProgressClient` options, their defaults, and the settings resolved from them. */

import type { BackoffOptions } from "./backoff.js";
import { DEFAULT_BACKOFF } from "./backoff.js";
import type { EventSourceConstructor, FetchLike, TokenProvider, WebSocketConstructor } from "./types.js";

export interface ProgressClientOptions {
  /**
   * The gateway's base URL, `http(s)://host:port`. A path prefix is kept for every transport:
   * `https://app.example/progress` for a gateway mounted at `/progress` (docs/mounting.md).
   */
  url: string;
  /** A token, or a function returning a fresh one; called again after 4401 / HTTP 401. */
  token: TokenProvider;
  /** WebSocket implementation; default `globalThis.WebSocket` (pass `ws` on Node 20). */
  WebSocket?: WebSocketConstructor;
  /** EventSource implementation; default `globalThis.EventSource` (pass `eventsource` on Node). */
  EventSource?: EventSourceConstructor;
  /** fetch implementation; default `globalThis.fetch`. */
  fetch?: FetchLike;
  /** Reconnect delays: full jitter up to `minMs * 2^attempt`, capped at `maxMs` (500 → 20 000). */
  backoff?: Partial<BackoffOptions>;
  /** Consecutive WebSocket failures to open before falling back to SSE (3). */
  fallbackAfter?: number;
  /** Consecutive SSE failures before falling back to long-poll (3). */
  sseFailuresBeforePoll?: number;
  /** How often to try the WebSocket again while on a fallback, in ms (30 000). */
  probeIntervalMs?: number;
  /** `?wait=` of a long-poll, in seconds (25). */
  pollWaitS?: number;
  /** How often `watchMine` polls `GET /exports/active` on a fallback, in ms (5 000). */
  activePollMs?: number;
  /**
   * How long an HTTP request may go unanswered, in ms (30 000; a long-poll gets its `?wait=` on
   * top). A request on a dead connection (a network change) would otherwise hang for minutes.
   */
  requestTimeoutMs?: number;
  /** How long a WebSocket may take to say `ready`, in ms (10 000). */
  openTimeoutMs?: number;
  /** Extra wait after a 4429 (too many connections), in ms (5 000). */
  tooManyConnectionsMs?: number;
  /** Upper bound of the jittered reconnect after a 1001 (server going away), in ms (1 000). */
  goingAwayJitterMs?: number;
  /** Connect in the constructor (on the next microtask); otherwise call `connect()` (true). */
  autoConnect?: boolean;
  /** Source of randomness for jitter (tests). */
  random?: () => number;
}

export type Settings = Required<
  Omit<ProgressClientOptions, "WebSocket" | "EventSource" | "fetch" | "token" | "url" | "backoff">
> & {
  backoff: BackoffOptions;
};

export const DEFAULTS = {
  fallbackAfter: 3,
  sseFailuresBeforePoll: 3,
  probeIntervalMs: 30_000,
  pollWaitS: 25,
  activePollMs: 5_000,
  openTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  tooManyConnectionsMs: 5_000,
  goingAwayJitterMs: 1_000,
  autoConnect: true,
};

/** Options with every default filled in; `undefined` counts as not given. */
export function resolveSettings(options: ProgressClientOptions): Settings {
  const {
    url: _url,
    token: _token,
    WebSocket: _webSocket,
    EventSource: _eventSource,
    fetch: _fetch,
    backoff: backoffOptions,
    ...rest
  } = options;
  return {
    ...DEFAULTS,
    random: Math.random,
    ...definedOnly(rest),
    backoff: { ...DEFAULT_BACKOFF, ...definedOnly(backoffOptions ?? {}) },
  };
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, item]) => item !== undefined)) as Partial<T>;
}
