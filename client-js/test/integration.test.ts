import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { JobSnapshot } from "../src/types.js";
import { ProgressClient, clientOptions, recordStates, startEnv, type TestEnv } from "./support/env.js";
import { waitFor } from "./support/wait.js";

let env: TestEnv;

before(async () => {
  env = await startEnv("integration");
});

after(async () => {
  await env?.close();
});

test("watch a job to completion over WebSocket", async () => {
  const client = new ProgressClient(clientOptions(env.gateway.url, env.token));
  const states = recordStates(client);
  try {
    const job = await env.worker.create("alice");
    const seen: JobSnapshot[] = [];
    client.watch(job.id, (snapshot) => seen.push(snapshot));
    await waitFor(() => client.state === "open", "client open");
    await waitFor(() => seen.length >= 1, "first snapshot");
    await env.worker.start(job.id);
    for (const progress of [10, 50, 90]) await env.worker.update(job.id, progress);
    await env.worker.succeed(job.id, { url: "https://example.invalid/out.mp4" });
    await waitFor(() => seen.at(-1)?.status === "succeeded", "terminal snapshot");
    const seqs = seen.map((snapshot) => snapshot.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    assert.equal(new Set(seqs).size, seqs.length);
    assert.equal(seen.filter((snapshot) => snapshot.status === "succeeded").length, 1);
    assert.equal(seen.at(-1)?.progress, 100);
    assert.deepEqual(states.map((s) => [s.state, s.transport]).slice(0, 2), [
      ["connecting", "websocket"],
      ["open", "websocket"],
    ]);
  } finally {
    client.close();
  }
});
