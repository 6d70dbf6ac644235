/**
 * A token the gateway refuses: a fixed string cannot get better, so the client stops and says so
 * once; a token function is asked again and the client carries on. Against fakes (where fake
 * timers prove nothing retries later) and against a real gateway.
 */

import assert from "node:assert/strict";
import { after, afterEach, before, beforeEach, test } from "node:test";
import WebSocket from "ws";
import { ProgressClient as FakedClient } from "../src/client.js";
import type { ProgressClientOptions } from "../src/options.js";
import type { ErrorContext, JobSnapshot, StateContext } from "../src/types.js";
import { ProgressClient, clientOptions, recordStates, startEnv, type TestEnv } from "./support/env.js";
import { FakeWebSocket, JOB_ID, fakeFetch, json, type Route } from "./support/fakes.js";
import { waitFor } from "./support/wait.js";

const clients: Array<{ close(): void }> = [];

function fakedClient(
  options: Partial<ProgressClientOptions> = {},
  routes: Record<string, Route> = {},
): { client: FakedClient; states: StateContext[]; errors: ErrorContext[] } {
  const client = new FakedClient({
    url: "http://gateway.test:8000",
    token: "fixed",
    WebSocket: FakeWebSocket,
    fetch: fakeFetch({ "/healthz": () => json(200, { status: "ok" }), ...routes }),
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

const refused = (): Response => json(401, { code: "unauthorized", detail: "token expired" });

beforeEach(() => FakeWebSocket.reset());
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

test("a fixed token closed with 4401 stops the client with one fatal error, and nothing retries", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { client, states, errors } = fakedClient();
  client.watch(JOB_ID, () => undefined);
  await new Promise((resolve) => setImmediate(resolve));
  FakeWebSocket.last.open();
  FakeWebSocket.last.serverClose(4401, "token expired");
  assert.equal(client.state, "closed");
  assert.deepEqual(
    states.map((s) => `${s.state}/${s.code ?? ""}`),
    ["connecting/", "closed/4401"],
  );
  assert.equal(errors.length, 1);
  assert.equal(errors[0]?.code, "unauthorized");
  assert.equal(errors[0]?.fatal, true);
  assert.match(errors[0]?.message ?? "", /token expired/);
  t.mock.timers.tick(10 * 60_000);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(FakeWebSocket.instances.length, 1, "no reconnect");
  assert.equal(errors.length, 1, "said once");
});

test("connect() after the stop tries again (a page that got a new token)", async () => {
  const { client, errors } = fakedClient();
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  FakeWebSocket.last.serverClose(4401, "bad signature");
  assert.equal(client.state, "closed");
  client.connect();
  await waitFor(() => FakeWebSocket.instances.length === 2, "a second socket");
  FakeWebSocket.last.accept();
  assert.equal(client.state, "open");
  assert.equal(errors.length, 1);
});

test("HTTP 401 while restoring the caller's jobs stops a fixed-token client too", async () => {
  const { client, states, errors } = fakedClient({}, { "/exports/active": refused });
  client.watchMine(() => undefined);
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  const socket = FakeWebSocket.last;
  socket.accept();
  await waitFor(() => states.at(-1)?.state === "closed", "the stop");
  assert.equal(socket.closedWith?.code, 1000, "the open socket is closed, not left behind");
  assert.equal(states.at(-1)?.code, 4401);
  assert.deepEqual(
    errors.map((e) => [e.code, e.fatal]),
    [["unauthorized", true]],
  );
});

test("HTTP 401 on the long-poll fallback stops a fixed-token client", async () => {
  FakeWebSocket.reset("refuse");
  let polls = 0;
  const { client, states, errors } = fakedClient(
    { fallbackAfter: 1 },
    {
      [`/exports/${JOB_ID}`]: () => {
        polls += 1;
        return refused();
      },
    },
  );
  client.watch(JOB_ID, () => undefined);
  await waitFor(() => states.at(-1)?.state === "closed", "the stop");
  assert.deepEqual(
    states.map((s) => `${s.state}/${s.transport}`),
    ["connecting/websocket", "reconnecting/websocket", "fallback/poll", "closed/poll"],
  );
  assert.equal(polls, 1);
  assert.deepEqual(
    errors.map((e) => [e.code, e.fatal]),
    [["unauthorized", true]],
  );
});

test("with a token function a 4401 still refreshes and reconnects, however often", async () => {
  let calls = 0;
  const { client, errors } = fakedClient({
    token: () => {
      calls += 1;
      return `token-${calls}`;
    },
  });
  for (let n = 1; n <= 3; n += 1) {
    await waitFor(() => FakeWebSocket.instances.length === n, `socket ${n}`);
    FakeWebSocket.last.open();
    FakeWebSocket.last.serverClose(4401, "token expired");
    assert.equal(client.state, "reconnecting");
  }
  await waitFor(() => FakeWebSocket.instances.length === 4, "socket 4");
  FakeWebSocket.last.accept();
  assert.deepEqual(FakeWebSocket.last.sent[0], { op: "auth", token: "token-4" });
  assert.equal(client.state, "open");
  assert.deepEqual(errors, []);
});

// -- against a real gateway ----------------------------------------------------------------------

let env: TestEnv | undefined;

before(async () => {
  env = await startEnv("token-refused");
});

after(async () => {
  for (const client of clients.splice(0)) client.close();
  await env?.close();
});

function realEnv(): TestEnv {
  assert.ok(env !== undefined, "the environment did not start");
  return env;
}

test("a real gateway refusing an expired fixed token: one fatal error, closed, one attempt", async () => {
  const { gateway, worker } = realEnv();
  const expired = await worker.token("alice", 60, Math.floor(Date.now() / 1000) - 3600);
  let sockets = 0;
  class CountingWebSocket extends WebSocket {
    constructor(url: string) {
      super(url);
      sockets += 1;
    }
  }
  const refusedClient = new ProgressClient({
    ...clientOptions(gateway.url, expired),
    WebSocket: CountingWebSocket,
    backoff: { minMs: 1, maxMs: 1 }, // a retry, if there were one, would come at once
  });
  clients.push(refusedClient);
  const states = recordStates(refusedClient);
  const errors: ErrorContext[] = [];
  refusedClient.on("error", (error) => errors.push(error));
  const job = await worker.create("alice");
  refusedClient.watch(job.id, () => undefined);
  refusedClient.watchMine(() => undefined);
  await waitFor(() => states.at(-1)?.state === "closed", "the stop");
  assert.equal(states.at(-1)?.code, 4401);

  // A client with a good token goes through a whole job meanwhile: real time for any retry.
  const good = new ProgressClient(clientOptions(gateway.url, realEnv().token));
  clients.push(good);
  const seen: JobSnapshot[] = [];
  good.watch(job.id, (snapshot) => seen.push(snapshot));
  await waitFor(() => good.state === "open", "the good client");
  await worker.succeed(job.id);
  await waitFor(() => seen.at(-1)?.status === "succeeded", "the job's end");

  assert.equal(sockets, 1, "the refused client never reconnected");
  assert.deepEqual(
    errors.map((e) => [e.code, e.fatal]),
    [["unauthorized", true]],
  );
  assert.ok(
    states.every((s) => s.state !== "reconnecting"),
    states.map((s) => s.state).join(","),
  );
});

test("a real gateway refusing the token a function gave: it is asked again and the client opens", async () => {
  const { gateway, worker, token } = realEnv();
  const expired = await worker.token("alice", 60, Math.floor(Date.now() / 1000) - 3600);
  const tokens = [expired, expired, token];
  let calls = 0;
  const refreshing = new ProgressClient(
    clientOptions(gateway.url, () => {
      calls += 1;
      return tokens.shift() ?? token;
    }),
  );
  clients.push(refreshing);
  const errors: ErrorContext[] = [];
  refreshing.on("error", (error) => errors.push(error));
  await waitFor(() => refreshing.state === "open", "open with the third token");
  assert.equal(calls, 3);
  assert.ok(errors.every((error) => error.fatal !== true));
});
