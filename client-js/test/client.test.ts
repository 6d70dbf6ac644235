/** The client's state machine and reconnect rules against a fake WebSocket and fetch. */

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import { ProgressClient } from "../src/client.js";
import { HttpError } from "../src/http.js";
import type { ProgressClientOptions } from "../src/options.js";
import type { ErrorContext, JobSnapshot, StateContext } from "../src/types.js";
import { FakeWebSocket, JOB_ID, fakeFetch, json, snapshot, type Route } from "./support/fakes.js";
import { waitFor } from "./support/wait.js";

const clients: ProgressClient[] = [];

function makeClient(
  options: Partial<ProgressClientOptions> = {},
  routes: Record<string, Route> = { "/healthz": () => json(200, { status: "ok" }) },
): { client: ProgressClient; states: StateContext[]; errors: ErrorContext[] } {
  const client = new ProgressClient({
    url: "http://gateway.test:8000",
    token: "t0",
    WebSocket: FakeWebSocket,
    fetch: fakeFetch(routes),
    backoff: { minMs: 10, maxMs: 40 },
    ...options,
  });
  clients.push(client);
  const states: StateContext[] = [];
  const errors: ErrorContext[] = [];
  client.on("state", (context) => states.push(context));
  client.on("error", (error) => errors.push(error));
  return { client, states, errors };
}

beforeEach(() => FakeWebSocket.reset());
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

test("connects to /ws, authenticates with the first frame, then says open", async () => {
  const { client, states } = makeClient({ url: "https://gateway.test/pgw" });
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  assert.equal(FakeWebSocket.last.url, "wss://gateway.test/pgw/ws");
  assert.equal(client.state, "connecting");
  FakeWebSocket.last.accept();
  assert.deepEqual(FakeWebSocket.last.sent[0], { op: "auth", token: "t0" });
  assert.equal(client.state, "open");
  assert.deepEqual(
    states.map((s) => `${s.state}/${s.transport}`),
    ["connecting/websocket", "open/websocket"],
  );
});

test("resubscribes after a drop with the newest seq of each job and delivers only newer ones", async () => {
  const { client, states } = makeClient();
  const seen: number[] = [];
  client.watch(JOB_ID, (job) => seen.push(job.seq));
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  const first = FakeWebSocket.last;
  first.accept();
  assert.deepEqual(first.framesOf("subscribe")[0]?.jobs, [{ id: JOB_ID }]);
  for (const seq of [1, 2, 3]) first.update(snapshot(seq));
  first.serverClose(1006);
  assert.equal(client.state, "reconnecting");
  const reconnecting = states.at(-1);
  assert.ok(
    reconnecting?.delayMs !== undefined && reconnecting.delayMs <= 10,
    `delay ${reconnecting?.delayMs}`,
  );
  await waitFor(() => FakeWebSocket.instances.length === 2, "a second socket");
  const second = FakeWebSocket.last;
  second.accept();
  assert.deepEqual(second.framesOf("subscribe")[0]?.jobs, [{ id: JOB_ID, seq: 3 }]);
  second.update(snapshot(3));
  second.update(snapshot(2));
  second.update(snapshot(5));
  second.update(snapshot(6, { status: "succeeded" }));
  second.update(snapshot(6, { status: "succeeded" }));
  assert.deepEqual(seen, [1, 2, 3, 5, 6]);
  assert.deepEqual(second.framesOf("unsubscribe")[0]?.jobs, [JOB_ID]);
});

test("1001 reconnects at once with a small jitter, without growing the backoff", async () => {
  const { states } = makeClient({ backoff: { minMs: 5_000, maxMs: 20_000 }, goingAwayJitterMs: 30 });
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  FakeWebSocket.last.accept();
  FakeWebSocket.last.serverClose(1001, "server shutting down");
  const context = states.at(-1);
  assert.equal(context?.state, "reconnecting");
  assert.equal(context?.code, 1001);
  assert.ok((context?.delayMs ?? Infinity) <= 30);
  await waitFor(() => FakeWebSocket.instances.length === 2, "the reconnect");
});

test("4429 backs off for at least tooManyConnectionsMs", async () => {
  const { states } = makeClient();
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  FakeWebSocket.last.open();
  FakeWebSocket.last.serverClose(4429, "too many connections");
  assert.ok((states.at(-1)?.delayMs ?? 0) >= 5_000, `delay ${states.at(-1)?.delayMs}`);
});

test("4401 gets a fresh token from the token function before reconnecting", async () => {
  let calls = 0;
  const { client } = makeClient({
    token: async () => {
      calls += 1;
      return `token-${calls}`;
    },
  });
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  FakeWebSocket.last.open();
  assert.deepEqual(FakeWebSocket.last.sent[0], { op: "auth", token: "token-1" });
  FakeWebSocket.last.serverClose(4401, "token expired");
  await waitFor(() => FakeWebSocket.instances.length === 2, "the reconnect");
  FakeWebSocket.last.accept();
  assert.deepEqual(FakeWebSocket.last.sent[0], { op: "auth", token: "token-2" });
  assert.equal(calls, 2);
  assert.equal(client.state, "open");
});

test("close() closes with 1000 and nothing reconnects", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] }); // every timer of the client is a fake one
  const { client, states } = makeClient();
  await new Promise((resolve) => setImmediate(resolve));
  const socket = FakeWebSocket.last;
  socket.accept();
  client.close();
  assert.equal(socket.closedWith?.code, 1000);
  assert.equal(client.state, "closed");
  assert.equal(states.at(-1)?.previous, "open");
  socket.serverClose(1000);
  t.mock.timers.tick(60_000);
  assert.equal(FakeWebSocket.instances.length, 1);
});

test("no pong within heartbeat_s: the connection is dropped and reconnected", async () => {
  const { client, states } = makeClient();
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  const socket = FakeWebSocket.last;
  socket.accept(0.03);
  await waitFor(() => socket.framesOf("ping").length === 1, "a ping");
  await waitFor(() => client.state === "reconnecting", "the heartbeat timeout");
  assert.equal(states.at(-1)?.code, 4000);
  assert.equal(socket.closedWith?.code, 4000);
  await waitFor(() => FakeWebSocket.instances.length === 2, "the reconnect");
});

test("pongs keep the connection", async () => {
  const { client } = makeClient();
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  const socket = FakeWebSocket.last;
  socket.accept(0.02);
  for (let n = 1; n <= 4; n += 1) {
    await waitFor(() => socket.framesOf("ping").length === n, `ping ${n}`);
    socket.frame({ op: "pong" });
  }
  assert.equal(client.state, "open");
  assert.equal(FakeWebSocket.instances.length, 1);
});

test("a WebSocket that never opens falls back to long-poll when HTTP works, and comes back", async () => {
  FakeWebSocket.reset("refuse");
  let version = 1;
  const routes: Record<string, Route> = {
    "/healthz": () => json(200, { status: "ok" }),
    [`/exports/${JOB_ID}`]: async (url, init) => {
      const headers = new Headers(init?.headers);
      if (url.searchParams.get("wait") === null) return json(200, snapshot(version));
      assert.equal(headers.get("if-none-match"), `"${version}"`);
      await new Promise((resolve) => setTimeout(resolve, 5)); // the fake server's latency
      version += 1;
      return json(200, snapshot(version));
    },
  };
  const { client, states } = makeClient({ fallbackAfter: 3, probeIntervalMs: 30 }, routes);
  const seen: number[] = [];
  client.watch(JOB_ID, (job) => seen.push(job.seq));
  await waitFor(() => client.state === "fallback", "the fallback");
  assert.equal(client.transport, "poll", "no EventSource given: straight to long-poll");
  assert.equal(FakeWebSocket.instances.length, 3);
  await waitFor(() => seen.length >= 3, "long-polled updates");
  FakeWebSocket.reset("accept");
  await waitFor(() => client.state === "open", "the WebSocket probe");
  const frames = FakeWebSocket.last.framesOf("subscribe");
  const resumed = (frames[0]?.jobs as Array<{ seq?: number }>)[0]?.seq ?? 0;
  assert.ok(resumed >= 3, `resubscribed from seq ${resumed}`);
  assert.deepEqual(
    states.map((s) => `${s.state}/${s.transport}`).filter((s, i, all) => s !== all[i - 1]),
    ["connecting/websocket", "reconnecting/websocket", "fallback/poll", "open/websocket"],
  );
  const increasing = seen.every((seq, i) => i === 0 || seq > (seen[i - 1] ?? 0));
  assert.ok(increasing, `seqs ${seen.join(",")}`);
});

test("when HTTP is unreachable too, it keeps reconnecting the WebSocket instead of falling back", async () => {
  FakeWebSocket.reset("refuse");
  const routes: Record<string, Route> = {
    "/healthz": () => {
      throw new TypeError("fetch failed");
    },
  };
  const { client, states } = makeClient({ fallbackAfter: 2 }, routes);
  await waitFor(() => FakeWebSocket.instances.length >= 6, "six attempts", 5_000);
  assert.equal(client.state, "reconnecting");
  assert.ok(states.every((s) => s.state !== "fallback"));
});

test("auth and policy closes do not count toward the fallback", async () => {
  const { client } = makeClient({ fallbackAfter: 1 });
  for (let n = 1; n <= 3; n += 1) {
    await waitFor(() => FakeWebSocket.instances.length === n, `socket ${n}`);
    FakeWebSocket.last.open();
    FakeWebSocket.last.serverClose(4408, "no auth frame in time");
  }
  assert.equal(client.state, "reconnecting");
});

test("not_found and forbidden end the watch through onError; store_unavailable is retried", async () => {
  const { client, errors } = makeClient();
  const other = "00000000-0000-4000-8000-000000000001";
  const failures: string[] = [];
  client.watch(JOB_ID, () => undefined, { onError: (error) => failures.push(error.code) });
  client.watch(other, () => undefined);
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  const socket = FakeWebSocket.last;
  socket.accept();
  socket.frame({ op: "error", code: "not_found", job_id: JOB_ID, message: "no such job", ref: "r1" });
  socket.frame({ op: "error", code: "store_unavailable", job_id: other, message: "redis down", ref: "r2" });
  assert.deepEqual(failures, ["not_found"]);
  assert.deepEqual(socket.framesOf("unsubscribe")[0]?.jobs, [JOB_ID]);
  await waitFor(
    () =>
      socket
        .framesOf("subscribe")
        .some((frame) => JSON.stringify(frame.jobs) === JSON.stringify([{ id: other }])),
    "the retried subscription",
  );
  assert.deepEqual(
    errors.map((error) => error.code),
    ["not_found", "store_unavailable"],
  );
});

test("watchMine subscribes scope mine and restores from /exports/active on every (re)connect", async () => {
  let activeCalls = 0;
  const finished = snapshot(4, { id: "00000000-0000-4000-8000-000000000002", status: "succeeded" });
  const routes: Record<string, Route> = {
    "/healthz": () => json(200, {}),
    "/exports/active": () => {
      activeCalls += 1;
      return json(200, { active: [snapshot(activeCalls)], recent: [finished] });
    },
  };
  const { client } = makeClient({}, routes);
  const seen: JobSnapshot[] = [];
  client.watchMine((job) => seen.push(job));
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  FakeWebSocket.last.accept();
  assert.equal(FakeWebSocket.last.framesOf("subscribe")[0]?.scope, "mine");
  await waitFor(() => seen.length >= 2, "restored jobs");
  FakeWebSocket.last.serverClose(1006);
  await waitFor(() => FakeWebSocket.instances.length === 2, "the reconnect");
  FakeWebSocket.last.accept();
  await waitFor(
    () => activeCalls >= 2 && seen.some((job) => job.id === JOB_ID && job.seq >= 2),
    "restored again",
  );
  assert.equal(seen.filter((job) => job.status === "succeeded").length, 1);
});

test("without any WebSocket implementation it starts on the fallback", async () => {
  const routes: Record<string, Route> = {
    "/healthz": () => json(200, {}),
    [`/exports/${JOB_ID}`]: () => json(200, snapshot(1, { status: "succeeded" })),
  };
  const client = new ProgressClient({
    url: "http://gateway.test",
    token: "t",
    fetch: fakeFetch(routes),
    WebSocket: undefined,
  });
  clients.push(client);
  const original = (globalThis as { WebSocket?: unknown }).WebSocket;
  assert.equal(original, undefined, "Node 20 has no global WebSocket");
  const seen: string[] = [];
  client.watch(JOB_ID, (job) => seen.push(job.status));
  await waitFor(() => seen.length === 1, "the snapshot over long-poll");
  assert.equal(client.state, "fallback");
  assert.equal(client.transport, "poll");
});

test("an upgrade that never says ready is given up after openTimeoutMs and counts toward the fallback", async () => {
  const { client, states } = makeClient({ openTimeoutMs: 30, fallbackAfter: 2, EventSource: undefined });
  for (let n = 1; n <= 2; n += 1) {
    await waitFor(() => FakeWebSocket.instances.length === n, `socket ${n}`);
    FakeWebSocket.last.open(); // upgraded, auth frame sent, but no `ready`
  }
  await waitFor(() => client.state === "fallback", "the fallback");
  assert.ok(states.some((s) => s.code === 4001));
  assert.equal(FakeWebSocket.instances[0]?.closedWith?.code, 4001);
});

class FakeTarget {
  readonly listeners = new Map<string, Set<() => void>>();
  addEventListener(type: string, listener: () => void): void {
    const set = this.listeners.get(type) ?? new Set();
    set.add(listener);
    this.listeners.set(type, set);
  }
  removeEventListener(type: string, listener: () => void): void {
    this.listeners.get(type)?.delete(listener);
  }
  fire(type: string): void {
    for (const listener of this.listeners.get(type) ?? []) listener();
  }
}

test("in a browser: offline pauses reconnecting, online reconnects at once; close() detaches", async (t) => {
  const browserWindow = new FakeTarget();
  const browserDocument = Object.assign(new FakeTarget(), { visibilityState: "visible" });
  const globals = globalThis as { window?: unknown; document?: unknown };
  globals.window = browserWindow;
  globals.document = browserDocument;
  t.after(() => {
    delete globals.window;
    delete globals.document;
  });
  const { client } = makeClient({ backoff: { minMs: 60_000, maxMs: 60_000 }, goingAwayJitterMs: 20 });
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  FakeWebSocket.last.accept();
  browserWindow.fire("offline");
  FakeWebSocket.last.serverClose(1006);
  assert.equal(client.state, "reconnecting");
  browserWindow.fire("online");
  await waitFor(() => FakeWebSocket.instances.length === 2, "the reconnect on online, not after 60 s");
  FakeWebSocket.last.fail();
  browserDocument.fire("visibilitychange");
  await waitFor(() => FakeWebSocket.instances.length === 3, "the reconnect when the page is visible again");
  client.close();
  assert.equal(browserWindow.listeners.get("online")?.size, 0);
  assert.equal(browserDocument.listeners.get("visibilitychange")?.size, 0);
});

test("create() posts the kind and params as JSON, returns the 201 snapshot and shows it to watchMine", async () => {
  const bodies: Array<{ body: unknown; type: string | null; auth: string | null }> = [];
  const { client } = makeClient(
    { autoConnect: false },
    {
      "/exports": async (_url, init) => {
        const headers = new Headers(init?.headers);
        bodies.push({
          body: JSON.parse(String(init?.body)),
          type: headers.get("content-type"),
          auth: headers.get("authorization"),
        });
        const params = (bodies.at(-1)?.body as { params: { steps?: number } }).params;
        if (params.steps === 0) {
          return json(422, { status: 422, code: "unprocessable", detail: "steps must be ≥ 1" });
        }
        return json(201, snapshot(2, { status: "queued", kind: "demo" }));
      },
    },
  );
  const mine: JobSnapshot[] = [];
  client.watchMine((job) => mine.push(job));
  const job = await client.create("demo", { steps: 3, fail_at_step: null });
  assert.equal(job.status, "queued");
  assert.deepEqual(bodies[0], {
    body: { kind: "demo", params: { steps: 3, fail_at_step: null } },
    type: "application/json",
    auth: "Bearer t0",
  });
  assert.deepEqual(
    mine.map((seen) => seen.seq),
    [2],
  );
  assert.equal(client.latest(JOB_ID)?.seq, 2);

  await assert.rejects(client.create("demo", { steps: 0 }), (error: unknown) => {
    assert.ok(error instanceof HttpError);
    assert.deepEqual(
      [error.status, error.code, error.message, error.retryable],
      [422, "unprocessable", "steps must be ≥ 1", false],
    );
    return true;
  });
});
