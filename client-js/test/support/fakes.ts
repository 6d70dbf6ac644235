/**
 * Fakes at the client's seams, shaped like the real APIs: `FakeWebSocket` (the browser
 * WebSocket surface the client uses, driven by the test as the server), `FakeEventSource` (the
 * same for an event stream) and `fakeFetch` (routes to handlers). Extend `FakeWebSocket` with new server behaviours as methods that end in one of
 * `onopen`, `onmessage` or `onclose`, like the real socket's events.
 */

import type { EventSourceLike, FetchLike, JobSnapshot, WebSocketLike } from "../../src/types.js";

export class FakeWebSocket implements WebSocketLike {
  static instances: FakeWebSocket[] = [];
  /** What the next socket does on its own: "manual" waits for the test, "refuse" fails at once. */
  static mode: "manual" | "refuse" | "accept" = "manual";

  readyState = 0;
  readonly sent: Array<Record<string, unknown>> = [];
  closedWith: { code?: number; reason?: string } | null = null;
  onopen: ((event: never) => void) | null = null;
  onmessage: ((event: never) => void) | null = null;
  onclose: ((event: never) => void) | null = null;
  onerror: ((event: never) => void) | null = null;

  constructor(readonly url: string) {
    FakeWebSocket.instances.push(this);
    if (FakeWebSocket.mode === "refuse") queueMicrotask(() => this.fail());
    if (FakeWebSocket.mode === "accept") queueMicrotask(() => this.accept());
  }

  static reset(mode: "manual" | "refuse" | "accept" = "manual"): void {
    FakeWebSocket.instances = [];
    FakeWebSocket.mode = mode;
  }

  static get last(): FakeWebSocket {
    const socket = FakeWebSocket.instances.at(-1);
    if (socket === undefined) throw new Error("no socket yet");
    return socket;
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  // -- the server's side ---------------------------------------------------------------------

  /** The upgrade succeeded. */
  open(): void {
    this.readyState = 1;
    (this.onopen as ((event: object) => void) | null)?.({});
  }

  /** Upgrade, then `ready` (answering the auth frame the client sent). */
  accept(heartbeatS = 20): void {
    this.open();
    this.frame({ op: "ready", heartbeat_s: heartbeatS, server_time: new Date().toISOString() });
  }

  frame(frame: object): void {
    (this.onmessage as ((event: { data: unknown }) => void) | null)?.({ data: JSON.stringify(frame) });
  }

  update(job: JobSnapshot): void {
    this.frame({ op: "update", job });
  }

  /** The server closed the connection with `code`. */
  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    (this.onclose as ((event: { code: number; reason: string }) => void) | null)?.({ code, reason });
  }

  /** The connection could not be made (refused upgrade, network): 1006, no open. */
  fail(): void {
    this.readyState = 3;
    (this.onerror as ((event: object) => void) | null)?.({});
    (this.onclose as ((event: { code: number; reason: string }) => void) | null)?.({
      code: 1006,
      reason: "",
    });
  }

  framesOf(op: string): Array<Record<string, unknown>> {
    return this.sent.filter((frame) => frame.op === op);
  }
}

/**
 * The EventSource surface the client uses (`onopen`, `onerror`, named event listeners),
 * driven by the test as the server: `open()`, then `event(name, data, id)` per SSE event.
 */
export class FakeEventSource implements EventSourceLike {
  static instances: FakeEventSource[] = [];

  readyState = 0;
  onopen: ((event: never) => void) | null = null;
  onerror: ((event: never) => void) | null = null;
  private readonly listeners = new Map<string, Array<(event: { data: string }) => void>>();

  constructor(readonly url: string) {
    FakeEventSource.instances.push(this);
  }

  static reset(): void {
    FakeEventSource.instances = [];
  }

  static get last(): FakeEventSource {
    const source = FakeEventSource.instances.at(-1);
    if (source === undefined) throw new Error("no event source yet");
    return source;
  }

  addEventListener(type: string, listener: (event: { data: string }) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  close(): void {
    this.readyState = 2;
  }

  // -- the server's side ---------------------------------------------------------------------

  /** The stream answered 200 `text/event-stream`. */
  open(): void {
    this.readyState = 1;
    (this.onopen as ((event: object) => void) | null)?.({});
  }

  /** One SSE event: `event: <type>`, `data: <JSON>` (the `id:` only matters to a real source). */
  event(type: string, data: object): void {
    for (const listener of this.listeners.get(type) ?? []) listener({ data: JSON.stringify(data) });
  }
}

export type Route = (url: URL, init: RequestInit | undefined) => Response | Promise<Response>;

/** A fetch that answers from `routes` (first path match); unknown paths are 404. */
export function fakeFetch(routes: Record<string, Route>, calls: string[] = []): FetchLike {
  return async (input, init) => {
    const url = new URL(input);
    calls.push(`${init?.method ?? "GET"} ${url.pathname}${url.search}`);
    const route = routes[url.pathname];
    if (route === undefined) return json(404, { code: "not_found", detail: `no route ${url.pathname}` });
    return route(url, init);
  };
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

export const JOB_ID = "3f0c8a4e-5a7b-4c1d-9e2f-0a1b2c3d4e5f";

export function snapshot(seq: number, fields: Partial<JobSnapshot> = {}): JobSnapshot {
  const at = "2026-11-23T16:00:00.000Z";
  return {
    id: JOB_ID,
    owner: "alice",
    kind: "export",
    status: "running",
    progress: seq,
    stage: null,
    message: null,
    seq,
    attempt: 1,
    created_at: at,
    updated_at: at,
    heartbeat_at: at,
    executor: null,
    call_id: null,
    params: {},
    result: null,
    error: null,
    cancel_requested: false,
    ...fields,
  };
}
