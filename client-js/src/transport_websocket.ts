/**
 * One WebSocket connection to `GET /ws` (docs/protocol.md): authenticates with an auth frame, keeps
 * an application-level heartbeat, parses frames, and reports exactly one `closed` per
 * connection. It never reconnects: the client decides what a close means (`codes.ts`).
 */

import { LocalCloseCode } from "./codes.js";
import type {
  CloseEventLike,
  ErrorFrame,
  JobCursor,
  JobSnapshot,
  MessageEventLike,
  ReadyFrame,
  ServerFrame,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";

/** Subscribe frames carry at most this many jobs, so one stays far below the 64 KiB limit. */
export const MAX_JOBS_PER_FRAME = 200;

const OPEN = 1;

export interface WebSocketHandlers {
  ready(frame: ReadyFrame): void;
  /** `reset`: the store went back; `job` replaces what the client has (`JobBook.deliver`). */
  update(job: JobSnapshot, reset: boolean): void;
  error(frame: ErrorFrame): void;
  /** The gateway sent something this client does not understand. */
  protocolError(message: string): void;
  /** Once per connection. `ready`: whether the gateway had said `ready` on it. */
  closed(event: { code: number; reason: string; ready: boolean }): void;
}

export interface WebSocketOptions {
  /** How long to wait for the `ready` frame after starting to connect. */
  openTimeoutMs: number;
}

export function webSocketUrl(baseUrl: string): string {
  const url = new URL("ws", baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`);
  url.protocol = url.protocol === "https:" ? "wss:" : url.protocol === "http:" ? "ws:" : url.protocol;
  return url.toString();
}

export class WebSocketConnection {
  private readonly socket: WebSocketLike;
  private isReady = false;
  private finished = false;
  private refs = 0;
  private openTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setTimeout> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatMs = 0;

  constructor(
    WebSocketImpl: WebSocketConstructor,
    url: string,
    private readonly token: string,
    private readonly handlers: WebSocketHandlers,
    options: WebSocketOptions,
  ) {
    this.socket = new WebSocketImpl(url); // may throw (a malformed URL): no timer exists yet
    this.openTimer = setTimeout(
      () => this.abort(LocalCloseCode.OPEN_TIMEOUT, "no ready frame in time"),
      options.openTimeoutMs,
    );
    this.socket.onopen = () => this.send({ op: "auth", token: this.token });
    this.socket.onmessage = (event: MessageEventLike) => this.receive(event.data);
    this.socket.onclose = (event: CloseEventLike) => this.finish(event.code, event.reason);
    // An error is always followed by a close event, which carries the code.
    this.socket.onerror = () => undefined;
  }

  get ready(): boolean {
    return this.isReady && !this.finished;
  }

  subscribe(jobs: JobCursor[]): void {
    for (let start = 0; start < jobs.length; start += MAX_JOBS_PER_FRAME) {
      this.send({ op: "subscribe", ref: this.ref(), jobs: jobs.slice(start, start + MAX_JOBS_PER_FRAME) });
    }
  }

  unsubscribe(ids: string[]): void {
    for (let start = 0; start < ids.length; start += MAX_JOBS_PER_FRAME) {
      this.send({ op: "unsubscribe", ref: this.ref(), jobs: ids.slice(start, start + MAX_JOBS_PER_FRAME) });
    }
  }

  subscribeMine(): void {
    this.send({ op: "subscribe", ref: this.ref(), scope: "mine" });
  }

  unsubscribeMine(): void {
    this.send({ op: "unsubscribe", ref: this.ref(), scope: "mine" });
  }

  /** Close from this side; `closed` is not reported for a close the client asked for. */
  close(code = 1000, reason = "client closed"): void {
    if (this.finished) return;
    this.finished = true;
    this.stopTimers();
    this.detach();
    this.socket.close(code, reason);
  }

  /** Give up on a connection that is not answering: report it closed with `code` at once. */
  abort(code: number, reason: string): void {
    if (this.finished) return;
    this.detach();
    try {
      this.socket.close(code, reason);
    } finally {
      this.finish(code, reason);
    }
  }

  private send(frame: object): void {
    if (this.finished || this.socket.readyState !== OPEN) return;
    this.socket.send(JSON.stringify(frame));
  }

  private ref(): string {
    this.refs += 1;
    return `r${this.refs}`;
  }

  private receive(data: unknown): void {
    if (this.finished) return;
    if (typeof data !== "string") {
      this.handlers.protocolError("the gateway sent a binary frame");
      return;
    }
    let frame: ServerFrame;
    try {
      frame = JSON.parse(data) as ServerFrame;
    } catch (error) {
      this.handlers.protocolError(`the gateway sent a frame that is not JSON: ${String(error)}`);
      return;
    }
    this.alive();
    switch (frame.op) {
      case "ready":
        this.onReady(frame);
        return;
      case "update":
        this.handlers.update(frame.job, frame.reset === true);
        return;
      case "error":
        this.handlers.error(frame);
        return;
      case "ack":
      case "pong":
        return;
      default:
        this.handlers.protocolError(`the gateway sent an unknown frame: ${data.slice(0, 200)}`);
    }
  }

  private onReady(frame: ReadyFrame): void {
    clearTimeout(this.openTimer);
    this.openTimer = undefined;
    this.isReady = true;
    const seconds = Number(frame.heartbeat_s);
    this.heartbeatMs = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 20_000;
    this.schedulePing();
    this.handlers.ready(frame);
  }

  /** Every `heartbeat_s` send a ping; no frame at all within another `heartbeat_s` is death. */
  private schedulePing(): void {
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => {
      this.send({ op: "ping" });
      this.pongTimer ??= setTimeout(
        () => this.abort(LocalCloseCode.HEARTBEAT_TIMEOUT, "no pong in time"),
        this.heartbeatMs,
      );
    }, this.heartbeatMs);
  }

  private alive(): void {
    if (!this.isReady) return;
    clearTimeout(this.pongTimer);
    this.pongTimer = undefined;
    if (this.pingTimer !== undefined) this.schedulePing();
  }

  private finish(code: number, reason: string): void {
    if (this.finished) return;
    this.finished = true;
    this.stopTimers();
    this.detach();
    this.handlers.closed({ code, reason, ready: this.isReady });
  }

  private stopTimers(): void {
    clearTimeout(this.openTimer);
    clearTimeout(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.openTimer = this.pingTimer = this.pongTimer = undefined;
  }

  private detach(): void {
    this.socket.onopen = null;
    this.socket.onmessage = null;
    this.socket.onclose = null;
    // Not null: the `ws` package throws an "error" event that has no listener.
    this.socket.onerror = () => undefined;
  }
}
