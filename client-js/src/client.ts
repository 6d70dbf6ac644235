/**
 * `ProgressClient`: watch jobs over the best transport that works.
 *
 * State machine (`state` events carry the transport in use):
 *
 *   connecting ──ready──► open ──lost──► reconnecting ──ready──► open
 *        │                                 │   ▲
 *        └──── failed to open ─────────────┘   └── backoff with full jitter; 1001 at once
 *                                          │
 *     WebSocket failed to open `fallbackAfter` times while HTTP answers
 *                                          ▼
 *                 fallback (sse) ──SSE keeps failing──► fallback (poll)
 *                        └──── WebSocket probe every `probeIntervalMs` opens ────► open
 *
 *   close() from any state ──► closed (nothing reconnects; `connect()` starts again)
 *   a fixed-string token refused (4401, HTTP 401) ──► closed, one fatal `unauthorized` error
 *
 * Every snapshot from every transport goes through one `JobBook`, so listeners only ever see
 * increasing seqs (until a reset: the store went back, and its snapshot replaces the client's)
 * and each watch ends with exactly one terminal snapshot.
 */

import type { JobFeed, FeedContext } from "./feed.js";
import { errorContext } from "./feed.js";
import type { JobListener, WatchOptions } from "./book.js";
import { JobBook } from "./book.js";
import { backoff, smallJitter } from "./backoff.js";
import { BrowserHooks } from "./browser.js";
import { CloseCode, ErrorCode, isRetryable, reactionTo } from "./codes.js";
import { TypedEventTarget } from "./events.js";
import { HttpApi, HttpError, jobPath } from "./http.js";
import type { ProgressClientOptions, Settings } from "./options.js";
import { resolveSettings } from "./options.js";
import { TokenSource } from "./token.js";
import { PollFeed } from "./transport_poll.js";
import { SseFeed } from "./transport_sse.js";
import { WebSocketConnection, webSocketUrl } from "./transport_websocket.js";
import type {
  ActiveJobs,
  ClientEventMap,
  ErrorContext,
  ErrorFrame,
  EventSourceConstructor,
  FetchLike,
  JobSnapshot,
  JsonValue,
  StateContext,
  WebSocketConstructor,
} from "./types.js";
import { State, Transport } from "./types.js";

interface Globals {
  WebSocket?: WebSocketConstructor;
  EventSource?: EventSourceConstructor;
  fetch?: FetchLike;
}

export class ProgressClient extends TypedEventTarget<ClientEventMap> {
  private readonly settings: Settings;
  private readonly api: HttpApi;
  private readonly tokens: TokenSource;
  private readonly book: JobBook;
  private readonly WebSocketImpl: WebSocketConstructor | undefined;
  private readonly EventSourceImpl: EventSourceConstructor | undefined;
  private readonly wsUrl: string;

  private currentState: State = State.Closed;
  private currentTransport: Transport = Transport.WebSocket;
  private started = false;
  /** Consecutive WebSocket attempts that did not reach `ready` (backoff exponent). */
  private attempt = 0;
  /** Of those, failures of the transport itself (counted toward the fallback). */
  private openFailures = 0;
  private sseFailures = 0;
  private ws: WebSocketConnection | null = null;
  private probe: WebSocketConnection | null = null;
  private readonly feeds = new Map<string, JobFeed>();
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private probeTimer: ReturnType<typeof setTimeout> | undefined;
  private activeTimer: ReturnType<typeof setTimeout> | undefined;
  private restoring: Promise<void> | null = null;
  private restoreAgain = false;
  private browser: BrowserHooks | null = null;

  constructor(options: ProgressClientOptions) {
    super();
    const globals = globalThis as Globals;
    const fetchImpl = options.fetch ?? globals.fetch?.bind(globalThis);
    if (fetchImpl === undefined) throw new TypeError("no fetch: pass options.fetch");
    const { url, token, WebSocket, EventSource } = options;
    this.settings = resolveSettings(options);
    this.tokens = new TokenSource(token);
    this.api = new HttpApi(url, fetchImpl, this.tokens, this.settings.requestTimeoutMs);
    this.wsUrl = webSocketUrl(this.api.baseUrl);
    this.WebSocketImpl = WebSocket ?? globals.WebSocket;
    this.EventSourceImpl = EventSource ?? globals.EventSource;
    this.book = new JobBook((error) => this.emit("error", error));
    if (this.settings.autoConnect) queueMicrotask(() => this.connect());
  }

  get state(): State {
    return this.currentState;
  }

  get transport(): Transport {
    return this.currentTransport;
  }

  /** The newest snapshot the client has of a job, if any. */
  latest(id: string): JobSnapshot | undefined {
    return this.book.latest(id);
  }

  /** Start (or restart after `close()`) connecting. Idempotent. */
  connect(): void {
    if (this.started) return;
    this.started = true;
    this.browser = BrowserHooks.attach({ offline: () => this.onOffline(), wake: () => this.wakeUp() });
    this.attempt = 0;
    this.openFailures = 0;
    if (this.WebSocketImpl === undefined) {
      this.enterFallback(
        this.EventSourceImpl ? Transport.Sse : Transport.Poll,
        "no WebSocket implementation",
      );
    } else {
      this.setState(State.Connecting, Transport.WebSocket);
      void this.openWebSocket("main");
    }
    if (this.book.mineCount > 0) void this.restore();
  }

  /** Stop everything; listeners and watches stay registered for a later `connect()`. */
  close(): void {
    if (!this.started) return;
    this.stopAll();
    this.setState(State.Closed, this.currentTransport);
  }

  private stopAll(): void {
    this.started = false;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.probeTimer);
    clearTimeout(this.activeTimer);
    this.ws?.close(CloseCode.NORMAL, "client closed");
    this.probe?.close(CloseCode.NORMAL, "client closed");
    this.ws = this.probe = null;
    this.stopFeeds();
    this.browser?.detach();
    this.browser = null;
  }

  /**
   * The gateway refused a token that cannot change (a string, not a function): every retry
   * would be refused too. Stop as `close()` does and say so once, with `fatal` set; the state
   * event carries the close code (4401 for HTTP 401 too). `connect()` starts again.
   */
  private stopRefused(reason: string): void {
    if (!this.started) return;
    this.stopAll();
    this.setState(State.Closed, this.currentTransport, { code: CloseCode.UNAUTHORIZED, reason });
    this.emit("error", {
      code: ErrorCode.UNAUTHORIZED,
      message:
        `the gateway refused the token (${reason}); it is a fixed string, so the client stopped: ` +
        "create the client with a fresh token, or pass a function that returns one",
      fatal: true,
    });
  }

  /** Whether `error` is the gateway refusing a token that no refresh can replace. */
  private refusedForGood(error: unknown): error is HttpError {
    return error instanceof HttpError && error.status === 401 && !this.tokens.refreshable;
  }

  /** Report a failed background request (restore, recheck); a refused fixed token stops all. */
  private backgroundFailure(error: unknown, jobId?: string): void {
    if (this.refusedForGood(error)) this.stopRefused(`HTTP 401: ${error.message}`);
    else this.emit("error", errorContext(error, jobId));
  }

  /**
   * Call `listener` with every newer snapshot of job `id`, ending after the terminal one (which
   * it gets exactly once). Returns the function that stops watching.
   */
  watch(id: string, listener: JobListener, options: WatchOptions = {}): () => void {
    const { result, remove } = this.book.addWatch(id, listener, options);
    if (result === "first") this.follow(id);
    return () => {
      if (remove()) this.unfollow(id);
    };
  }

  /**
   * Call `listener` with the caller's jobs: every unfinished and recently finished job now
   * (from `GET /exports/active`), every job created later, and every change of any of them.
   * Restored again after each reconnect. Returns the function that stops it.
   */
  watchMine(listener: JobListener): () => void {
    const wasEmpty = this.book.mineCount === 0;
    const remove = this.book.addMine(listener);
    if (wasEmpty) {
      if (this.ws?.ready) this.ws.subscribeMine();
      if (this.currentState === State.Fallback) this.scheduleActivePoll(0);
    }
    if (this.started) void this.restore();
    return () => {
      if (!remove()) return;
      if (this.ws?.ready) this.ws.unsubscribeMine();
      clearTimeout(this.activeTimer);
    };
  }

  /**
   * `GET /exports/active`; the jobs also reach the listeners. A job answered below the seq the
   * client has is read again (`recheck`), so a store that went back reaches `watchMine` too.
   */
  async active(): Promise<ActiveJobs> {
    const jobs = await this.api.active();
    const behind: Array<[string, number]> = [];
    for (const job of [...jobs.active, ...jobs.recent]) {
      const seq = this.book.latest(job.id)?.seq;
      if (seq !== undefined && job.seq < seq) behind.push([job.id, seq]);
      else this.deliver(job);
    }
    await Promise.all(behind.map(([id, seq]) => this.recheck(id, seq)));
    return jobs;
  }

  /** `GET /exports/{id}`; the snapshot also reaches the listeners. */
  async get(id: string): Promise<JobSnapshot> {
    const job = await this.api.get(id);
    this.deliver(job);
    return job;
  }

  /**
   * `POST /exports`: create a job of `kind` with `params` and start it on its executor. The
   * first snapshot (201) also reaches the listeners (so `watchMine` shows the job at once).
   * Throws `HttpError`: 422 `unprocessable` for an unknown kind or invalid params, 400
   * `bad_request`, 401, 429 / 503 (`retryable`, with `retryAfterS`).
   */
  async create(kind: string, params: { [key: string]: JsonValue } = {}): Promise<JobSnapshot> {
    const job = await this.api.create(kind, params);
    this.deliver(job);
    return job;
  }

  /** `POST /exports/{id}/cancel`; throws `HttpError` 409 (`job_finished`) if it already ended. */
  async cancel(id: string): Promise<JobSnapshot> {
    const job = await this.api.cancel(id);
    this.deliver(job);
    return job;
  }

  // -- delivery ------------------------------------------------------------------------------

  /** `reset`: the gateway says the store went back; see `JobBook.deliver`. */
  private deliver(job: JobSnapshot, reset = false): void {
    const outcome = this.book.deliver(job, reset);
    if (outcome === "ignored") return;
    this.emit("update", job);
    if (outcome === "ended") this.unfollow(job.id);
  }

  /**
   * A plain read answered below `seq`: it may predate an update that overtook it, or the store
   * went back. A read naming `seq` tells them apart: 304 if the store still has it, else the
   * store's snapshot now, a reset if it is lower.
   */
  private async recheck(id: string, seq: number): Promise<void> {
    try {
      const response = await this.api.request(jobPath(id), { headers: { "If-None-Match": `"${seq}"` } });
      if (response.status === 304) return;
      const job = (await response.json()) as JobSnapshot;
      this.deliver(job, job.seq < seq);
    } catch (error) {
      this.backgroundFailure(error, id);
    }
  }

  private follow(id: string): void {
    if (!this.started) return;
    if (this.ws?.ready) {
      const seq = this.book.latest(id)?.seq;
      this.ws.subscribe([seq === undefined ? { id } : { id, seq }]);
    } else if (this.currentState === State.Fallback) {
      this.startFeed(id);
    }
  }

  private unfollow(id: string): void {
    if (this.ws?.ready) this.ws.unsubscribe([id]);
    this.feeds.get(id)?.stop();
    this.feeds.delete(id);
  }

  private failJob(id: string, error: ErrorContext): void {
    if (this.book.fail(id, error)) this.unfollow(id);
  }

  /** Deliver the caller's jobs from `GET /exports/active` to `watchMine` (and any watch). */
  private restore(): Promise<void> {
    if (this.book.mineCount === 0 || !this.started) return Promise.resolve();
    if (this.restoring !== null) {
      // One is in flight, but its answer may predate what this call is for: read once more.
      this.restoreAgain = true;
      return this.restoring;
    }
    this.restoring = (async () => {
      try {
        do {
          this.restoreAgain = false;
          try {
            await this.active();
          } catch (error) {
            this.backgroundFailure(error);
          }
        } while (this.restoreAgain && this.started && this.book.mineCount > 0);
      } finally {
        this.restoring = null;
      }
    })();
    return this.restoring;
  }

  // -- WebSocket -----------------------------------------------------------------------------

  private async openWebSocket(role: "main" | "probe"): Promise<void> {
    const WebSocketImpl = this.WebSocketImpl;
    if (WebSocketImpl === undefined || !this.started) return;
    let token: string;
    try {
      token = await this.tokens.get();
    } catch (error) {
      this.emit("error", {
        code: "token_failed",
        message: `the token function failed: ${String(error)}`,
        cause: error,
      });
      this.onWebSocketClosed(null, role, { code: CloseCode.UNAUTHORIZED, reason: "no token", ready: false });
      return;
    }
    // Only one attempt of each role at a time (a wake-up and a backoff timer may both fire).
    if (!this.started || (role === "main" ? this.ws : this.probe) !== null) return;
    let connection: WebSocketConnection | null = null;
    try {
      connection = new WebSocketConnection(
        WebSocketImpl,
        this.wsUrl,
        token,
        {
          ready: () => this.onWebSocketReady(connection!, role),
          update: (job, reset) => this.deliver(job, reset),
          error: (frame) => this.onErrorFrame(frame),
          protocolError: (message) => this.emit("error", { code: "transport", message }),
          closed: (event) => this.onWebSocketClosed(connection, role, event),
        },
        { openTimeoutMs: this.settings.openTimeoutMs },
      );
    } catch (error) {
      // A constructor that throws (a malformed URL, a blocked port in a browser).
      this.emit("error", errorContext(error));
      this.onWebSocketClosed(null, role, { code: 1006, reason: String(error), ready: false });
      return;
    }
    if (role === "main") this.ws = connection;
    else this.probe = connection;
  }

  private onWebSocketReady(connection: WebSocketConnection, role: "main" | "probe"): void {
    if (role === "probe") {
      if (this.probe !== connection) return;
      this.probe = null;
      clearTimeout(this.probeTimer);
      clearTimeout(this.activeTimer);
      this.stopFeeds();
    }
    this.ws = connection;
    this.attempt = 0;
    this.openFailures = 0;
    this.sseFailures = 0;
    this.setState(State.Open, Transport.WebSocket);
    const cursors = this.book.cursors();
    if (cursors.length > 0) connection.subscribe(cursors);
    if (this.book.mineCount > 0) {
      connection.subscribeMine();
      void this.restore();
    }
  }

  private onWebSocketClosed(
    connection: WebSocketConnection | null,
    role: "main" | "probe",
    event: { code: number; reason: string; ready: boolean },
  ): void {
    if (!this.started) return;
    if (role === "probe") {
      if (connection !== null && this.probe !== connection) return;
      this.probe = null;
      if (event.code === CloseCode.UNAUTHORIZED) {
        if (!this.tokens.refreshable) {
          this.stopRefused(event.reason || `WebSocket close ${event.code}`);
          return;
        }
        void this.refreshToken();
      }
      this.scheduleProbe(this.settings.probeIntervalMs);
      return;
    }
    if (connection !== null && this.ws !== connection) return;
    this.ws = null;
    const reaction = reactionTo(event.code);
    if (reaction === "refresh_token" && !this.tokens.refreshable) {
      this.stopRefused(event.reason || `WebSocket close ${event.code}`);
      return;
    }
    if (event.ready) {
      this.attempt = 0;
      this.openFailures = 0;
    } else {
      this.attempt += 1;
      if (countsAsTransportFailure(event.code)) this.openFailures += 1;
    }
    const { minMs, maxMs } = this.settings.backoff;
    const random = this.settings.random;
    let delayMs = backoff(Math.max(0, this.attempt - 1), minMs, maxMs, random);
    if (reaction === "reconnect_now") delayMs = smallJitter(this.settings.goingAwayJitterMs, random);
    if (reaction === "back_off_longer") delayMs += this.settings.tooManyConnectionsMs;
    this.setState(State.Reconnecting, Transport.WebSocket, {
      delayMs,
      code: event.code,
      reason: event.reason,
    });
    void this.afterClose(reaction === "refresh_token", delayMs);
  }

  private async afterClose(refresh: boolean, delayMs: number): Promise<void> {
    const started = Date.now();
    if (refresh) await this.refreshToken();
    if (this.openFailures >= this.settings.fallbackAfter && !this.offline) {
      // Fall back only if plain HTTP works: when the gateway is down, no transport would.
      if (!this.started || this.currentState !== State.Reconnecting) return;
      if (await this.api.reachable()) {
        if (!this.started || this.currentState !== State.Reconnecting) return;
        this.enterFallback(
          this.EventSourceImpl ? Transport.Sse : Transport.Poll,
          "WebSocket keeps failing to open",
        );
        return;
      }
    }
    if (!this.started || this.currentState !== State.Reconnecting) return;
    this.scheduleReconnect(Math.max(0, delayMs - (Date.now() - started)));
  }

  private get offline(): boolean {
    return this.browser?.offline ?? false;
  }

  private scheduleReconnect(delayMs: number): void {
    clearTimeout(this.reconnectTimer);
    if (this.offline) return; // `online` reconnects
    this.reconnectTimer = setTimeout(() => void this.openWebSocket("main"), delayMs);
  }

  private onErrorFrame(frame: ErrorFrame): void {
    const error: ErrorContext = { code: frame.code, message: frame.message };
    if (frame.job_id === undefined) {
      this.emit("error", error);
      if (isRetryable(frame.code) && this.book.mineCount > 0) {
        // `scope: mine` failed (store outage): ask again after a delay.
        setTimeout(
          () => this.ws?.ready && this.book.mineCount > 0 && this.ws.subscribeMine(),
          this.retryDelay(),
        );
      }
      return;
    }
    const id = frame.job_id;
    error.jobId = id;
    if (isRetryable(frame.code)) {
      this.emit("error", error);
      setTimeout(() => {
        if (this.book.watching(id)) this.follow(id);
      }, this.retryDelay());
      return;
    }
    this.failJob(id, error);
  }

  private retryDelay(): number {
    const { minMs, maxMs } = this.settings.backoff;
    return Math.max(minMs, backoff(3, minMs, maxMs, this.settings.random));
  }

  private async refreshToken(): Promise<void> {
    if (!this.tokens.refreshable) return;
    try {
      await this.tokens.refresh();
    } catch (error) {
      this.emit("error", {
        code: "token_failed",
        message: `the token function failed: ${String(error)}`,
        cause: error,
      });
    }
  }

  // -- fallbacks -----------------------------------------------------------------------------

  private enterFallback(transport: Transport, reason: string): void {
    clearTimeout(this.reconnectTimer);
    this.stopFeeds();
    this.sseFailures = 0;
    this.setState(State.Fallback, transport, { reason });
    for (const id of this.book.watchedIds()) this.startFeed(id);
    if (this.book.mineCount > 0) this.scheduleActivePoll(0);
    if (this.WebSocketImpl !== undefined && this.probe === null)
      this.scheduleProbe(this.settings.probeIntervalMs);
  }

  private startFeed(id: string): void {
    if (this.feeds.has(id)) return;
    const context = this.feedContext();
    const feed =
      this.currentTransport === Transport.Sse && this.EventSourceImpl !== undefined
        ? new SseFeed(this.EventSourceImpl, this.tokens, context, id)
        : new PollFeed(context, id, this.settings.pollWaitS);
    this.feeds.set(id, feed);
  }

  private feedContext(): FeedContext {
    const { minMs, maxMs } = this.settings.backoff;
    return {
      api: this.api,
      seq: (id) => this.book.latest(id)?.seq,
      delay: (attempt) => backoff(attempt, minMs, maxMs, this.settings.random),
      handlers: {
        update: (job, reset) => this.deliver(job, reset),
        failed: (id, error) => this.failJob(id, error),
        working: () => {
          if (this.currentTransport === Transport.Sse) this.sseFailures = 0;
        },
        trouble: (error) => this.onFeedTrouble(error),
      },
    };
  }

  private onFeedTrouble(error: ErrorContext): void {
    if (this.refusedForGood(error.cause)) {
      this.stopRefused(`HTTP 401: ${error.message}`);
      return;
    }
    if (this.currentState !== State.Fallback || this.currentTransport !== Transport.Sse) return;
    this.sseFailures += 1;
    if (this.sseFailures === this.settings.sseFailuresBeforePoll) {
      void (async () => {
        if (!(await this.api.reachable())) {
          this.sseFailures = 0;
          return;
        }
        if (this.currentState === State.Fallback && this.currentTransport === Transport.Sse) {
          this.enterFallback(Transport.Poll, `event streams keep failing: ${error.message}`);
        }
      })();
    }
  }

  private stopFeeds(): void {
    for (const feed of this.feeds.values()) feed.stop();
    this.feeds.clear();
  }

  private scheduleProbe(delayMs: number): void {
    clearTimeout(this.probeTimer);
    if (!this.started || this.currentState !== State.Fallback || this.offline) return;
    this.probeTimer = setTimeout(() => {
      if (this.currentState === State.Fallback && this.probe === null) void this.openWebSocket("probe");
    }, delayMs);
  }

  private scheduleActivePoll(delayMs: number): void {
    clearTimeout(this.activeTimer);
    this.activeTimer = setTimeout(() => {
      if (this.currentState !== State.Fallback || this.book.mineCount === 0) return;
      void this.restore().finally(() => {
        if (this.currentState === State.Fallback) this.scheduleActivePoll(this.settings.activePollMs);
      });
    }, delayMs);
  }

  // -- browser -----------------------------------------------------------------------------

  private onOffline(): void {
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.probeTimer);
  }

  /** Back online or visible again: retry now instead of waiting out a long backoff. */
  private wakeUp(): void {
    if (!this.started || this.browser?.offline) return;
    if (this.currentState === State.Reconnecting && this.ws === null) {
      this.attempt = 0;
      this.scheduleReconnect(smallJitter(this.settings.goingAwayJitterMs, this.settings.random));
    } else if (this.currentState === State.Fallback && this.probe === null) {
      this.scheduleProbe(0);
    }
    void this.restore();
  }

  // -- state ---------------------------------------------------------------------------------

  private setState(state: State, transport: Transport, extra: Partial<StateContext> = {}): void {
    const previous = this.currentState;
    if (previous === state && this.currentTransport === transport && state !== State.Reconnecting) return;
    this.currentState = state;
    this.currentTransport = transport;
    this.emit("state", { ...extra, state, previous, transport, attempt: this.attempt });
  }
}

/** A close that says the WebSocket route itself does not work here (not the gateway's verdict). */
const GATEWAY_VERDICTS: ReadonlySet<number> = new Set([
  CloseCode.GOING_AWAY,
  CloseCode.POLICY,
  CloseCode.TOO_LARGE,
  CloseCode.UNAUTHORIZED,
  CloseCode.AUTH_TIMEOUT,
  CloseCode.TOO_MANY_CONNECTIONS,
]);

function countsAsTransportFailure(code: number): boolean {
  return !GATEWAY_VERDICTS.has(code);
}
