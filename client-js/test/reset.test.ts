/**
 * A store that went back (failover, restore, a forged snapshot with a huge seq) on every
 * transport, against the fakes: the gateway's reset marker (`reset: true`, an SSE `reset`
 * event, a long-poll 200 below the seq asked about) replaces the job's state with the store's,
 * later updates count from it, and a resume asks from the store's seq.
 */

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import { ProgressClient } from "../src/client.js";
import type { ProgressClientOptions } from "../src/options.js";
import type { JobSnapshot } from "../src/types.js";
import {
  FakeEventSource,
  FakeWebSocket,
  JOB_ID,
  fakeFetch,
  json,
  snapshot,
  type Route,
} from "./support/fakes.js";
import { waitFor } from "./support/wait.js";

const FORGED = 1_000_000_000;
const clients: ProgressClient[] = [];

function makeClient(
  routes: Record<string, Route>,
  options: Partial<ProgressClientOptions> = {},
): ProgressClient {
  const client = new ProgressClient({
    url: "http://gateway.test:8000",
    token: "t0",
    WebSocket: FakeWebSocket,
    fetch: fakeFetch({ "/healthz": () => json(200, { status: "ok" }), ...routes }),
    backoff: { minMs: 10, maxMs: 40 },
    ...options,
  });
  clients.push(client);
  return client;
}

beforeEach(() => {
  FakeWebSocket.reset();
  FakeEventSource.reset();
});
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

test("WebSocket: reset:true replaces a forged seq for watch and watchMine; later updates count from it", async () => {
  const client = makeClient({ "/exports/active": () => json(200, { active: [], recent: [] }) });
  const seen: number[] = [];
  const mine: number[] = [];
  const events: number[] = [];
  client.watch(JOB_ID, (job) => seen.push(job.seq));
  client.watchMine((job) => mine.push(job.seq));
  client.on("update", (job) => events.push(job.seq));
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  const socket = FakeWebSocket.last;
  socket.accept();
  socket.update(snapshot(5));
  socket.update(snapshot(FORGED));
  socket.update(snapshot(6)); // dropped: without the marker the seq rule is unchanged
  socket.frame({ op: "update", job: snapshot(6), reset: true });
  socket.update(snapshot(7));
  assert.deepEqual(seen, [5, FORGED, 6, 7]);
  assert.deepEqual(mine, [5, FORGED, 6, 7]);
  assert.deepEqual(events, [5, FORGED, 6, 7]);
  assert.equal(client.latest(JOB_ID)?.seq, 7);

  socket.serverClose(1006);
  await waitFor(() => FakeWebSocket.instances.length === 2, "the reconnect");
  FakeWebSocket.last.accept();
  assert.deepEqual(FakeWebSocket.last.framesOf("subscribe")[0]?.jobs, [{ id: JOB_ID, seq: 7 }]);
});

test("WebSocket: a resume from a seq above the store's gets the stored snapshot as a reset", async () => {
  const client = makeClient({});
  const seen: string[] = [];
  client.watch(JOB_ID, (job) => seen.push(`${job.seq}:${job.status}`));
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  FakeWebSocket.last.accept();
  FakeWebSocket.last.update(snapshot(FORGED));
  FakeWebSocket.last.serverClose(1006); // e.g. Redis failed over while the client was away
  await waitFor(() => FakeWebSocket.instances.length === 2, "the reconnect");
  const socket = FakeWebSocket.last;
  socket.accept();
  assert.deepEqual(socket.framesOf("subscribe")[0]?.jobs, [{ id: JOB_ID, seq: FORGED }]);
  socket.frame({ op: "update", job: snapshot(4), reset: true });
  socket.frame({ op: "update", job: snapshot(4), reset: true }); // resync found it too
  socket.update(snapshot(5, { status: "succeeded" }));
  assert.deepEqual(seen, [`${FORGED}:running`, "4:running", "5:succeeded"]);
  assert.deepEqual(socket.framesOf("unsubscribe")[0]?.jobs, [JOB_ID], "the watch ended");
});

test("SSE: a reset event replaces a forged seq, and a reopened stream starts from the seq the client has", async () => {
  FakeWebSocket.reset("refuse");
  let stored = 6;
  const client = makeClient(
    { [`/exports/${JOB_ID}`]: () => json(200, snapshot(stored)) },
    { EventSource: FakeEventSource, fallbackAfter: 1, probeIntervalMs: 60_000 },
  );
  const seen: number[] = [];
  client.watch(JOB_ID, (job) => seen.push(job.seq));
  await waitFor(() => client.transport === "sse" && FakeEventSource.instances.length === 1, "SSE");
  const first = FakeEventSource.last;
  assert.equal(new URL(first.url).searchParams.get("last_event_id"), null, "no seq known yet");
  first.open();
  first.event("update", snapshot(5));
  first.event("update", snapshot(FORGED));
  first.event("update", snapshot(6)); // dropped
  first.event("reset", snapshot(6));
  first.event("update", snapshot(7));
  assert.deepEqual(seen, [5, FORGED, 6, 7]);

  first.event("update", snapshot(FORGED)); // forged again, then the stream is lost for good
  first.readyState = 2;
  (first.onerror as ((event: object) => void) | null)?.({});
  await waitFor(() => FakeEventSource.instances.length === 2, "the stream reopened");
  // The plain GET that diagnosed the failure is the store's snapshot but no reset: dropped.
  const second = FakeEventSource.last;
  assert.equal(new URL(second.url).searchParams.get("last_event_id"), String(FORGED));
  second.open();
  stored = 8;
  second.event("reset", snapshot(7));
  second.event("update", snapshot(8, { status: "succeeded" }));
  assert.deepEqual(seen, [5, FORGED, 6, 7, FORGED, 7, 8]);
  assert.equal(second.readyState, 2, "the terminal snapshot closes the stream");
});

test("long-poll: a 200 below the seq the request named is a reset; one only below a newer seq is stale", async () => {
  FakeWebSocket.reset("refuse");
  const plain = [snapshot(FORGED), snapshot(7)];
  const asked: string[] = [];
  let release: (() => void) | undefined;
  const routes: Record<string, Route> = {
    [`/exports/${JOB_ID}`]: async (_url, init) => {
      const tag = new Headers(init?.headers).get("if-none-match");
      asked.push(tag ?? "none");
      await new Promise((resolve) => setTimeout(resolve, 5)); // the fake server's latency
      if (tag === null) return json(200, plain.shift() ?? snapshot(7));
      if (tag === `"${FORGED}"`) return json(200, snapshot(5)); // the store went back: at once
      if (tag === '"5"') {
        await new Promise<void>((resolve) => (release = resolve));
        return json(200, snapshot(6)); // read before the client got 7 elsewhere
      }
      if (tag === '"7"') return json(200, snapshot(8, { status: "succeeded" }));
      return json(304, null);
    },
  };
  const client = makeClient(routes, { EventSource: undefined, fallbackAfter: 1, probeIntervalMs: 60_000 });
  const seen: number[] = [];
  client.watch(JOB_ID, (job) => seen.push(job.seq));
  await waitFor(() => release !== undefined, "the long-poll from the store's seq");
  assert.equal(client.transport, "poll");
  assert.deepEqual(seen, [FORGED, 5]);
  await client.get(JOB_ID); // another source is ahead of the pending long-poll
  release?.();
  await waitFor(() => seen.at(-1) === 8, "the terminal snapshot");
  assert.deepEqual(seen, [FORGED, 5, 7, 8]);
  assert.deepEqual(asked, ["none", `"${FORGED}"`, '"5"', "none", '"7"']);
});

test("watchMine: /exports/active below the client's seq is read again; a store that went back is a reset", async () => {
  const other = "00000000-0000-4000-8000-000000000001";
  const asked: string[] = [];
  let listed: JobSnapshot[] = []; // the restore on connect lists nothing
  const routes: Record<string, Route> = {
    "/exports/active": () => json(200, { active: listed, recent: [] }),
    [`/exports/${JOB_ID}`]: (_url, init) => {
      asked.push(`${JOB_ID.slice(0, 4)} ${new Headers(init?.headers).get("if-none-match")}`);
      return json(200, snapshot(5)); // the store went back below what the client was sent
    },
    [`/exports/${other}`]: (_url, init) => {
      asked.push(`${other.slice(0, 4)} ${new Headers(init?.headers).get("if-none-match")}`);
      return new Response(null, { status: 304 }); // the store has 7: the list was older
    },
  };
  const client = makeClient(routes);
  const mine: string[] = [];
  client.watchMine((job) => mine.push(`${job.id.slice(0, 4)}@${job.seq}`));
  await waitFor(() => FakeWebSocket.instances.length === 1, "a socket");
  const socket = FakeWebSocket.last;
  socket.accept();
  socket.update(snapshot(FORGED));
  socket.update(snapshot(7, { id: other }));
  await waitFor(() => mine.length === 2, "the live updates");
  listed = [snapshot(5), snapshot(6, { id: other })];
  await client.active();
  assert.deepEqual(asked.sort(), [`0000 "7"`, `3f0c "${FORGED}"`]);
  assert.deepEqual(mine, [`3f0c@${FORGED}`, "0000@7", "3f0c@5"]);
  assert.equal(client.latest(JOB_ID)?.seq, 5);
  assert.equal(client.latest(other)?.seq, 7);
});
