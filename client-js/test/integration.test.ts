/**
 * The client against a real `progress-gateway serve` and a real `redis-server`, with jobs
 * written by the Python worker SDK. Waits are conditions with deadlines, never sleeps.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { HttpError } from "../src/index.js";
import type { ErrorContext, JobSnapshot } from "../src/types.js";
import { ProgressClient, clientOptions, recordStates, startEnv, type TestEnv } from "./support/env.js";
import { GatewayServer } from "./support/processes.js";
import { BlockingProxy } from "./support/proxy.js";
import { waitFor } from "./support/wait.js";

let env: TestEnv;
const clients: ProgressClient[] = [];

function client(options: Partial<ConstructorParameters<typeof ProgressClient>[0]> = {}): ProgressClient {
  const made = new ProgressClient({ ...clientOptions(env.gateway.url, env.token), ...options });
  clients.push(made);
  return made;
}

before(async () => {
  env = await startEnv("integration");
});

after(async () => {
  for (const made of clients) made.close();
  await env?.close();
});

function assertIncreasing(seen: JobSnapshot[], id: string): void {
  const seqs = seen.filter((job) => job.id === id).map((job) => job.seq);
  for (let i = 1; i < seqs.length; i += 1) {
    assert.ok((seqs[i] ?? 0) > (seqs[i - 1] ?? 0), `seqs of ${id} not increasing: ${seqs.join(",")}`);
  }
}

function terminals(seen: JobSnapshot[], id: string): number {
  return seen.filter((job) => job.id === id && ["succeeded", "failed", "cancelled"].includes(job.status))
    .length;
}

test("watch a job to completion over WebSocket", async () => {
  const watcher = client();
  const states = recordStates(watcher);
  const job = await env.worker.create("alice");
  const seen: JobSnapshot[] = [];
  watcher.watch(job.id, (snapshot) => seen.push(snapshot));
  await waitFor(() => seen.length >= 1, "the first snapshot");
  await env.worker.start(job.id);
  for (const progress of [10, 50, 90]) await env.worker.update(job.id, progress, `at ${progress}`);
  const last = await env.worker.succeed(job.id, { url: "https://example.invalid/out.mp4" });
  await waitFor(() => seen.at(-1)?.status === "succeeded", "the terminal snapshot");
  assertIncreasing(seen, job.id);
  assert.equal(terminals(seen, job.id), 1);
  assert.equal(seen.at(-1)?.seq, last.seq);
  assert.equal(seen.at(-1)?.progress, 100);
  assert.deepEqual(seen.at(-1)?.result, { url: "https://example.invalid/out.mp4" });
  assert.deepEqual(
    states.slice(0, 2).map((s) => `${s.state}/${s.transport}`),
    ["connecting/websocket", "open/websocket"],
  );
});

test("watchMine restores unfinished and recently finished jobs, then follows new ones", async () => {
  const owner = `mine-${randomUUID().slice(0, 8)}`;
  const token = await env.worker.token(owner, 3600);
  const running = await env.worker.create(owner);
  await env.worker.start(running.id);
  const done = await env.worker.create(owner);
  await env.worker.succeed(done.id);
  const watcher = client({ token });
  const seen: JobSnapshot[] = [];
  watcher.watchMine((job) => seen.push(job));
  await waitFor(
    () =>
      seen.some((job) => job.id === running.id) &&
      seen.some((job) => job.id === done.id && job.status === "succeeded"),
    "the restored jobs",
  );
  await waitFor(() => watcher.state === "open", "open");
  const later = await env.worker.create(owner, "report");
  await waitFor(() => seen.some((job) => job.id === later.id), "a job created later");
  const updated = await env.worker.update(running.id, 70);
  await waitFor(
    () => seen.some((job) => job.id === running.id && job.seq === updated.seq),
    "an update of a restored job",
  );
  for (const id of [running.id, done.id, later.id]) assertIncreasing(seen, id);
  assert.equal(terminals(seen, done.id), 1);
  assert.ok(seen.every((job) => job.owner === owner));
});

test("resumes after the gateway is SIGKILLed and restarted: increasing seqs, terminal once", async () => {
  const watcher = client({ backoff: { minMs: 50, maxMs: 400 } });
  const states = recordStates(watcher);
  const job = await env.worker.create("alice");
  await env.worker.start(job.id);
  const seen: JobSnapshot[] = [];
  const mine: JobSnapshot[] = [];
  watcher.watch(job.id, (snapshot) => seen.push(snapshot));
  watcher.watchMine((snapshot) => mine.push(snapshot));
  const first = await env.worker.update(job.id, 10);
  await waitFor(() => seen.at(-1)?.seq === first.seq, "the first update");

  await env.gateway.kill();
  await waitFor(() => watcher.state === "reconnecting", "the client noticing the dead gateway");
  await env.worker.update(job.id, 30);
  const whileDown = await env.worker.update(job.id, 60);
  const createdWhileDown = await env.worker.create("alice", "created-while-down");
  await env.gateway.start();

  await waitFor(
    () => seen.at(-1)?.seq === whileDown.seq,
    "the snapshot written while the gateway was down",
    15_000,
  );
  await waitFor(
    () => mine.some((snapshot) => snapshot.id === createdWhileDown.id),
    "the job created while down",
  );
  const end = await env.worker.succeed(job.id);
  await waitFor(() => seen.at(-1)?.status === "succeeded", "the terminal snapshot");
  await env.worker.fail(createdWhileDown.id, "not needed");
  await waitFor(
    () => mine.some((snapshot) => snapshot.id === createdWhileDown.id && snapshot.status === "failed"),
    "its end",
  );

  assertIncreasing(seen, job.id);
  assertIncreasing(mine, job.id);
  assert.equal(terminals(seen, job.id), 1);
  assert.equal(terminals(mine, job.id), 1);
  assert.equal(seen.at(-1)?.seq, end.seq);
  assert.equal(watcher.state, "open");
  assert.ok(
    states.every((s) => s.state !== "fallback"),
    "a gateway that is down is not a reason to fall back: HTTP is down too",
  );
});

test("a token refused with 4401 is replaced by the token function before reconnecting", async () => {
  const expired = await env.worker.token("alice", 60, Math.floor(Date.now() / 1000) - 3600);
  const tokens = [expired, env.token];
  let calls = 0;
  const watcher = client({
    token: async () => {
      calls += 1;
      return tokens.shift() ?? env.token;
    },
  });
  const states = recordStates(watcher);
  const job = await env.worker.create("alice");
  const seen: JobSnapshot[] = [];
  watcher.watch(job.id, (snapshot) => seen.push(snapshot));
  await waitFor(() => watcher.state === "open", "open with the fresh token");
  assert.equal(calls, 2);
  assert.ok(
    states.some((s) => s.state === "reconnecting" && s.code === 4401),
    "closed with 4401 first",
  );
  await env.worker.succeed(job.id);
  await waitFor(() => seen.at(-1)?.status === "succeeded", "the job's end");
});

test("HTTP 401 gets a fresh token once and retries", async () => {
  const expired = await env.worker.token("alice", 60, Math.floor(Date.now() / 1000) - 3600);
  const tokens = [expired, env.token];
  let calls = 0;
  const reader = client({
    autoConnect: false,
    token: () => {
      calls += 1;
      return tokens.shift() ?? env.token;
    },
  });
  const job = await env.worker.create("alice");
  const snapshot = await reader.get(job.id);
  assert.equal(snapshot.id, job.id);
  assert.equal(calls, 2);
  const jobs = await reader.active();
  assert.ok(jobs.active.some((item) => item.id === job.id));
});

test("jobs that cannot be watched end their watch with not_found or forbidden", async () => {
  const watcher = client();
  const bobs = await env.worker.create("bob");
  const errors: ErrorContext[] = [];
  watcher.watch(randomUUID(), () => assert.fail("no snapshot of a job that does not exist"), {
    onError: (error) => errors.push(error),
  });
  watcher.watch(bobs.id, () => assert.fail("no snapshot of someone else's job"), {
    onError: (error) => errors.push(error),
  });
  await waitFor(() => errors.length === 2, "both errors");
  assert.deepEqual(errors.map((error) => error.code).sort(), ["forbidden", "not_found"]);
  await assert.rejects(
    watcher.get(bobs.id),
    (error: unknown) => error instanceof HttpError && error.status === 403,
  );
  await assert.rejects(
    watcher.get(randomUUID()),
    (error: unknown) => error instanceof HttpError && error.status === 404,
  );
});

test("cancel: a queued job ends cancelled (idempotent), a running one is asked to stop, a succeeded one is 409", async () => {
  const watcher = client();
  const queued = await env.worker.create("alice");
  const seen: JobSnapshot[] = [];
  watcher.watch(queued.id, (job) => seen.push(job));
  const cancelled = await watcher.cancel(queued.id);
  assert.equal(cancelled.status, "cancelled");
  await waitFor(() => seen.at(-1)?.status === "cancelled", "the cancelled snapshot");
  assert.equal(terminals(seen, queued.id), 1);

  const running = await env.worker.create("alice");
  await env.worker.start(running.id);
  const asked = await watcher.cancel(running.id);
  assert.equal(asked.cancel_requested, true);
  assert.equal(asked.status, "running");

  assert.equal((await watcher.cancel(queued.id)).seq, cancelled.seq, "cancelling again changes nothing");

  const succeeded = await env.worker.create("alice");
  await env.worker.succeed(succeeded.id);
  await assert.rejects(
    watcher.cancel(succeeded.id),
    (error: unknown) => error instanceof HttpError && error.status === 409 && error.code === "job_finished",
  );
});

test("a draining gateway's 1001 sends the client at once to another replica, resuming from its seq", async () => {
  const replica = new GatewayServer(env.redis.url, env.gateway.keyPrefix, env.directory);
  await replica.start();
  let target = env.gateway.port;
  const balancer = new BlockingProxy(() => target);
  await balancer.start();
  const watcher = client({ url: balancer.url, backoff: { minMs: 5_000, maxMs: 20_000 } });
  const states = recordStates(watcher);
  try {
    const job = await env.worker.create("alice");
    const seen: JobSnapshot[] = [];
    watcher.watch(job.id, (snapshot) => seen.push(snapshot));
    await waitFor(() => watcher.state === "open" && seen.length === 1, "open on the first gateway");
    target = replica.port; // the load balancer sends new connections to the other replica
    const draining = env.gateway.terminate();
    await waitFor(() => states.some((s) => s.code === 1001), "the 1001 close");
    const goingAway = states.find((s) => s.code === 1001);
    assert.ok((goingAway?.delayMs ?? Infinity) <= 1000, `reconnect after ${goingAway?.delayMs} ms`);
    const update = await env.worker.start(job.id);
    await waitFor(
      () => watcher.state === "open" && seen.at(-1)?.seq === update.seq,
      "the update via the replica",
      5_000,
    );
    await draining;
    const end = await env.worker.succeed(job.id);
    await waitFor(() => seen.at(-1)?.seq === end.seq, "the terminal snapshot");
    assertIncreasing(seen, job.id);
    assert.equal(terminals(seen, job.id), 1);
  } finally {
    watcher.close();
    await balancer.close();
    await replica.kill();
    await env.gateway.start(); // same port, for any test after this one
  }
});

const FORGED_SEQ = 10 ** 12;

/** Run `body`; a failure carries the end of the gateway's log (the hub logs every reset). */
async function withGatewayLog(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    throw new Error(`${String(error)}\ngateway log:\n${env.gateway.log()}`, { cause: error });
  }
}

test("a forged snapshot with a huge seq on the job's channel: the store's reset wins, updates go on to the end", () =>
  withGatewayLog(async () => {
    const watcher = client();
    const job = await env.worker.create("alice");
    const seen: JobSnapshot[] = [];
    const mine: JobSnapshot[] = [];
    watcher.watch(job.id, (snapshot) => seen.push(snapshot));
    watcher.watchMine((snapshot) => snapshot.id === job.id && mine.push(snapshot));
    const started = await env.worker.start(job.id);
    await waitFor(
      () => seen.at(-1)?.seq === started.seq && mine.at(-1)?.seq === started.seq,
      "the start, to watch and watchMine",
    );
    assert.ok((await env.worker.forge(started, FORGED_SEQ)) >= 1, "the gateway is subscribed");
    await waitFor(() => seen.at(-1)?.seq === FORGED_SEQ, "the forged snapshot (it is above what was sent)");

    const update = await env.worker.update(job.id, 40, "real");
    await waitFor(() => seen.at(-1)?.seq === update.seq, "the real update, delivered as a reset");
    assert.equal(mine.at(-1)?.seq, update.seq);
    const later = await env.worker.update(job.id, 60, "later");
    await waitFor(() => seen.at(-1)?.seq === later.seq, "a later update, counted from the reset");
    const end = await env.worker.succeed(job.id);
    await waitFor(() => seen.at(-1)?.status === "succeeded", "the terminal snapshot");
    await waitFor(() => mine.at(-1)?.status === "succeeded", "the terminal snapshot, to watchMine");

    assert.equal(watcher.latest(job.id)?.seq, end.seq);
    assert.equal(terminals(seen, job.id), 1);
    for (const list of [seen, mine]) {
      const afterForged = list.slice(list.findIndex((snapshot) => snapshot.seq === FORGED_SEQ) + 1);
      assert.equal(afterForged[0]?.seq, update.seq, "the reset came right after the forged snapshot");
      assertIncreasing(afterForged, job.id);
    }
  }));

test("resuming with a seq the store does not have (forged, or lost in a failover) gets the store's snapshot", () =>
  withGatewayLog(async () => {
    const watcher = client({ backoff: { minMs: 50, maxMs: 400 } });
    const job = await env.worker.create("alice");
    const seen: JobSnapshot[] = [];
    watcher.watch(job.id, (snapshot) => seen.push(snapshot));
    const started = await env.worker.start(job.id);
    await waitFor(() => seen.at(-1)?.seq === started.seq, "the start");
    await env.worker.forge(started, FORGED_SEQ);
    await waitFor(() => seen.at(-1)?.seq === FORGED_SEQ, "the forged snapshot");

    await env.gateway.kill(); // a fresh gateway knows only the store
    await waitFor(() => watcher.state === "reconnecting", "the client noticing the dead gateway");
    await env.gateway.start();
    await waitFor(() => seen.at(-1)?.seq === started.seq, "the stored snapshot, as a reset", 15_000);
    assert.equal(seen.at(-1)?.message, started.message, "not the forged one");
    const end = await env.worker.succeed(job.id);
    await waitFor(() => seen.at(-1)?.seq === end.seq, "the terminal snapshot");
    assert.equal(terminals(seen, job.id), 1);
  }));
