/**
 * Fallbacks for real: a proxy in front of the gateway refuses the WebSocket upgrade, then event
 * streams too; the client moves WebSocket → SSE → long-poll and back to WebSocket when the
 * upgrade works again, without losing or repeating a snapshot.
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { JobSnapshot, StateContext } from "../src/types.js";
import { ProgressClient, clientOptions, recordStates, startEnv, type TestEnv } from "./support/env.js";
import { BlockingProxy } from "./support/proxy.js";
import { waitFor } from "./support/wait.js";

let env: TestEnv;
let proxy: BlockingProxy;

before(async () => {
  env = await startEnv("fallback");
  proxy = new BlockingProxy(() => env.gateway.port);
  await proxy.start();
});

after(async () => {
  await proxy?.close();
  await env?.close();
});

/** What to print when a wait times out: were polls still going through, and in which state. */
function diagnosis(states: StateContext[]): string {
  const recent = proxy.requests.slice(-15).map((request) => request.path);
  return `states: ${transitions(states).join(" → ")}; last requests through the proxy: ${recent.join(", ")}`;
}

function transitions(states: StateContext[]): string[] {
  return states.map((s) => `${s.state}/${s.transport}`).filter((s, i, all) => s !== all[i - 1]);
}

test("WebSocket refused → SSE; event streams refused → long-poll; WebSocket back → WebSocket", async () => {
  proxy.blockWebSocket(true);
  const watcher = new ProgressClient({
    ...clientOptions(proxy.url, env.token),
    fallbackAfter: 3,
    sseFailuresBeforePoll: 2,
    probeIntervalMs: 300,
    activePollMs: 200,
  });
  const states = recordStates(watcher);
  try {
    const job = await env.worker.create("alice");
    await env.worker.start(job.id);
    const seen: JobSnapshot[] = [];
    const mine: JobSnapshot[] = [];
    watcher.watch(job.id, (snapshot) => seen.push(snapshot));
    watcher.watchMine((snapshot) => mine.push(snapshot));

    await waitFor(() => watcher.state === "fallback" && watcher.transport === "sse", "the SSE fallback");
    assert.ok(proxy.seen.refusedUpgrades >= 3);
    const overSse = await env.worker.update(job.id, 25, "over SSE");
    await waitFor(() => seen.at(-1)?.seq === overSse.seq, "an update over SSE");
    assert.ok(proxy.seen.events >= 1);
    const createdOnFallback = await env.worker.create("alice", "created-on-fallback");
    await waitFor(
      () => mine.some((snapshot) => snapshot.id === createdOnFallback.id),
      "watchMine on the fallback",
    );

    proxy.blockEventStreams(true);
    await waitFor(() => watcher.transport === "poll", "the long-poll fallback", 15_000);
    const overPoll = await env.worker.update(job.id, 50, "over long-poll");
    await waitFor(() => seen.at(-1)?.seq === overPoll.seq, "an update over long-poll");
    assert.ok(proxy.seen.polls >= 1);

    proxy.blockWebSocket(false);
    proxy.blockEventStreams(false);
    await waitFor(() => watcher.state === "open", "the WebSocket again");
    const overWs = await env.worker.update(job.id, 75, "over WebSocket");
    await waitFor(() => seen.at(-1)?.seq === overWs.seq, "an update over WebSocket");
    const end = await env.worker.succeed(job.id);
    await waitFor(() => seen.at(-1)?.status === "succeeded", "the terminal snapshot");

    const seqs = seen.map((snapshot) => snapshot.seq);
    assert.deepEqual(
      seqs,
      [...new Set(seqs)].sort((a, b) => a - b),
      `increasing seqs: ${seqs.join(",")}`,
    );
    assert.equal(seen.filter((snapshot) => snapshot.status === "succeeded").length, 1);
    assert.equal(seen.at(-1)?.seq, end.seq);
    assert.deepEqual(
      transitions(states).filter((s) => !s.startsWith("reconnecting")),
      ["connecting/websocket", "fallback/sse", "fallback/poll", "open/websocket"],
    );
  } catch (error) {
    throw new Error(`${String(error)}\n${diagnosis(states)}`, { cause: error });
  } finally {
    watcher.close();
    // A failure above must not leave the proxy refusing connections for the next test.
    proxy.blockWebSocket(false);
    proxy.blockEventStreams(false);
  }
});

test("a WebSocket lost for good falls back to long-poll (no EventSource) from the newest seq", async () => {
  const watcher = new ProgressClient({
    ...clientOptions(proxy.url, env.token),
    EventSource: undefined, // Node 20 has no global EventSource: long-poll is the only fallback
    fallbackAfter: 2,
    probeIntervalMs: 60_000,
  });
  const states = recordStates(watcher);
  try {
    const job = await env.worker.create("alice");
    const seen: JobSnapshot[] = [];
    watcher.watch(job.id, (snapshot) => seen.push(snapshot));
    await waitFor(() => watcher.state === "open", "open");
    const started = await env.worker.start(job.id);
    await waitFor(() => seen.at(-1)?.seq === started.seq, "the start");

    proxy.blockWebSocket(true); // cuts the open connection and refuses new upgrades
    await waitFor(() => watcher.state === "fallback", "the fallback");
    assert.equal(watcher.transport, "poll");
    await waitFor(
      () =>
        proxy.requests.some(
          (r) => r.path.startsWith(`/exports/${job.id}?wait=`) && r.ifNoneMatch === `"${started.seq}"`,
        ),
      "a long-poll from the seq the client already has",
    );
    const end = await env.worker.fail(job.id, "worker gave up");
    await waitFor(() => seen.at(-1)?.status === "failed", "the terminal snapshot over long-poll");
    const seqs = seen.map((snapshot) => snapshot.seq);
    assert.deepEqual(
      seqs,
      [...new Set(seqs)].sort((a, b) => a - b),
      `increasing seqs: ${seqs.join(",")}`,
    );
    assert.equal(seqs.at(-1), end.seq);
    assert.equal(seen.filter((snapshot) => snapshot.status === "failed").length, 1);
    assert.deepEqual(
      transitions(states).filter((s) => !s.startsWith("reconnecting")),
      ["connecting/websocket", "open/websocket", "fallback/poll"],
    );
  } finally {
    proxy.blockWebSocket(false);
    watcher.close();
  }
});

test("an event stream refused for an expired token reopens with a fresh one, staying on SSE", async () => {
  proxy.blockWebSocket(true);
  const expired = await env.worker.token("alice", 60, Math.floor(Date.now() / 1000) - 3600);
  const tokens = [expired, env.token];
  let calls = 0;
  const watcher = new ProgressClient({
    ...clientOptions(proxy.url, () => {
      calls += 1;
      return tokens.shift() ?? env.token;
    }),
    fallbackAfter: 1,
    sseFailuresBeforePoll: 1,
    probeIntervalMs: 60_000,
  });
  try {
    const job = await env.worker.create("alice");
    const seen: JobSnapshot[] = [];
    watcher.watch(job.id, (snapshot) => seen.push(snapshot));
    await waitFor(() => watcher.state === "fallback", "the SSE fallback");
    await waitFor(() => calls === 2, "the refreshed token");
    const update = await env.worker.start(job.id);
    await waitFor(() => seen.at(-1)?.seq === update.seq, "an update over SSE with the fresh token");
    assert.equal(watcher.transport, "sse", "a refused token is not an SSE failure");
  } finally {
    proxy.blockWebSocket(false);
    watcher.close();
  }
});

const FORGED_SEQ = 10 ** 12;

/** Publish a forged `started` until the client has it: a long-poll between requests hears nothing. */
async function forgeUntilSeen(started: JobSnapshot, seen: JobSnapshot[]): Promise<void> {
  await waitFor(
    async () => {
      if (seen.some((snapshot) => snapshot.seq === FORGED_SEQ)) return true;
      await env.worker.forge(started, FORGED_SEQ);
      return false;
    },
    "the forged snapshot",
    10_000,
    250,
  );
}

for (const transport of ["sse", "poll"] as const) {
  test(`over ${transport === "sse" ? "SSE" : "long-poll"}, a forged huge seq is replaced by the store's reset and updates go on`, async () => {
    proxy.blockWebSocket(true);
    const watcher = new ProgressClient({
      ...clientOptions(proxy.url, env.token),
      ...(transport === "poll" ? { EventSource: undefined } : {}),
      fallbackAfter: 1,
      probeIntervalMs: 60_000,
    });
    const states = recordStates(watcher);
    try {
      const job = await env.worker.create("alice");
      const seen: JobSnapshot[] = [];
      watcher.watch(job.id, (snapshot) => seen.push(snapshot));
      await waitFor(() => watcher.state === "fallback", "the fallback");
      assert.equal(watcher.transport, transport);
      const started = await env.worker.start(job.id);
      await waitFor(() => seen.at(-1)?.seq === started.seq, "the start");
      await forgeUntilSeen(started, seen);
      const update = await env.worker.update(job.id, 40, "real");
      await waitFor(() => seen.at(-1)?.seq === update.seq, "the real update after a reset");
      const end = await env.worker.succeed(job.id);
      await waitFor(() => seen.at(-1)?.status === "succeeded", "the terminal snapshot");
      assert.equal(seen.at(-1)?.seq, end.seq);
      assert.equal(seen.filter((snapshot) => snapshot.status === "succeeded").length, 1);
      const lastForged = seen.map((snapshot) => snapshot.seq).lastIndexOf(FORGED_SEQ);
      const afterForged = seen.slice(lastForged + 1);
      const seqs = afterForged.map((snapshot) => snapshot.seq);
      assert.deepEqual(
        seqs,
        [...new Set(seqs)].sort((a, b) => a - b),
        `increasing seqs: ${seqs.join(",")}`,
      );
      assert.equal(watcher.transport, transport);
    } catch (error) {
      throw new Error(`${String(error)}\n${diagnosis(states)}`, { cause: error });
    } finally {
      proxy.blockWebSocket(false);
      watcher.close();
    }
  });
}
