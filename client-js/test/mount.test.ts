/**
 * The client against a gateway mounted at `/progress` in a user's own Starlette app (the one in
 * docs/examples/mount_starlette.py, served by `uvicorn --factory`): the base URL's path prefix
 * reaches the WebSocket, the event stream, the long-poll and the plain HTTP calls. A proxy in
 * front refuses what forces each fallback and records every path, so the test sees the prefix.
 */

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { JobSnapshot, StateContext } from "../src/types.js";
import { ProgressClient, clientOptions, recordStates } from "./support/env.js";
import {
  RedisServer,
  REPO_ROOT,
  SECRET,
  VENV_BIN,
  freePort,
  mintToken,
  tempDir,
} from "./support/processes.js";
import { BlockingProxy } from "./support/proxy.js";
import { waitFor } from "./support/wait.js";
import { Worker } from "./support/worker.js";

const PREFIX = "/progress";
const KEY_PREFIX = "cjs-mount";

let directory: string;
let redis: RedisServer;
let app: ChildProcess;
let appPort: number;
let proxy: BlockingProxy;
let worker: Worker;
let token: string;
const clients: ProgressClient[] = [];

function appLog(): string {
  try {
    return readFileSync(join(directory, "app.log"), "utf8").slice(-4000);
  } catch {
    return "(no log)";
  }
}

/** The user's app under uvicorn, configured as a reader would: GATEWAY_* in the environment. */
async function startApp(): Promise<void> {
  appPort = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith("GATEWAY_") && name !== "REDIS_URL") env[name] = value;
  }
  Object.assign(env, {
    GATEWAY_SECRET: SECRET,
    GATEWAY_REDIS_URL: redis.url,
    GATEWAY_KEY_PREFIX: KEY_PREFIX,
  });
  const args = ["-m", "uvicorn", "--factory", "mount_starlette:create_app", "--host", "127.0.0.1"];
  args.push("--port", String(appPort), "--app-dir", join(REPO_ROOT, "docs", "examples"));
  const log = openSync(join(directory, "app.log"), "a");
  app = spawn(join(VENV_BIN, "python"), args, { cwd: directory, env, stdio: ["ignore", log, log] });
  closeSync(log);
  const child = app;
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`the app exited with ${child.exitCode}: ${appLog()}`);
      try {
        return (await fetch(`http://127.0.0.1:${appPort}${PREFIX}/readyz`)).ok;
      } catch {
        return false;
      }
    },
    `the mounted app on port ${appPort}`,
    20_000,
    50,
  );
}

before(async () => {
  directory = tempDir("mount");
  redis = new RedisServer(directory);
  await redis.start();
  [token] = await Promise.all([mintToken("alice"), startApp()]);
  worker = new Worker(redis.url, KEY_PREFIX);
  proxy = new BlockingProxy(() => appPort);
  await proxy.start();
});

after(async () => {
  for (const made of clients) made.close();
  try {
    await proxy?.close();
    await worker?.close();
    if (app?.exitCode === null && app.signalCode === null) {
      // SIGTERM: uvicorn runs the user's lifespan to its end, which stops the gateway, then
      // re-raises the signal (so the exit is by SIGTERM, not a code).
      const exited = new Promise<void>((done) => app.once("exit", () => done()));
      app.kill("SIGTERM");
      await exited;
      assert.match(appLog(), /Application shutdown complete/);
      assert.doesNotMatch(appLog(), /Traceback|ERROR/);
    }
  } finally {
    await redis?.stop();
    rmSync(directory, { recursive: true, force: true });
  }
});

function client(
  url: string,
  options: Partial<ConstructorParameters<typeof ProgressClient>[0]> = {},
): ProgressClient {
  const made = new ProgressClient({ ...clientOptions(url, token), ...options });
  clients.push(made);
  return made;
}

function transports(states: StateContext[]): string[] {
  return states.map((s) => `${s.state}/${s.transport}`).filter((s, i, all) => s !== all[i - 1]);
}

/** Watch a new job, advance it with the worker SDK, and wait for every step on the client. */
async function followJob(watcher: ProgressClient): Promise<JobSnapshot> {
  const job = await worker.create("alice");
  const seen: JobSnapshot[] = [];
  watcher.watch(job.id, (snapshot) => seen.push(snapshot));
  await waitFor(() => seen.length >= 1, "the first snapshot");
  await worker.start(job.id);
  const half = await worker.update(job.id, 50, "half");
  await waitFor(() => seen.at(-1)?.seq === half.seq, "the update");
  const end = await worker.succeed(job.id, { url: "done" });
  await waitFor(() => seen.at(-1)?.status === "succeeded", "the terminal snapshot");
  assert.equal(seen.at(-1)?.seq, end.seq);
  return job;
}

test("the user's own routes answer beside the mounted gateway, and the bundle is served under it", async () => {
  const own = await fetch(`http://127.0.0.1:${appPort}/`);
  assert.deepEqual(await own.json(), { app: "mine", greeting: "hello" });
  const bundle = await fetch(`http://127.0.0.1:${appPort}${PREFIX}/client/progress-gateway.js`);
  assert.equal(bundle.status, 200);
  assert.match(bundle.headers.get("content-type") ?? "", /javascript/);
  await bundle.arrayBuffer();
  assert.equal((await fetch(`http://127.0.0.1:${appPort}/readyz`)).status, 404);
});

test("WebSocket through the prefix, and the HTTP calls", async () => {
  const watcher = client(`http://127.0.0.1:${appPort}${PREFIX}`);
  const states = recordStates(watcher);
  const job = await followJob(watcher);
  assert.deepEqual(transports(states), ["connecting/websocket", "open/websocket"]);
  assert.equal((await watcher.get(job.id)).status, "succeeded");
  const active = await watcher.active();
  const listed = [...active.active, ...active.recent].map((snapshot) => snapshot.id);
  assert.ok(listed.includes(job.id), `GET /exports/active: ${listed.join(", ")}`);
});

test("SSE through the prefix", async () => {
  proxy.blockWebSocket(true);
  try {
    const watcher = client(`${proxy.url}${PREFIX}`, { fallbackAfter: 1, probeIntervalMs: 60_000 });
    const job = await followJob(watcher);
    assert.equal(watcher.transport, "sse");
    assert.ok(
      proxy.requests.some((r) => r.path.startsWith(`${PREFIX}/exports/${job.id}/events?`)),
      proxy.requests.map((r) => r.path).join(", "),
    );
    watcher.close();
  } finally {
    proxy.blockWebSocket(false);
  }
});

test("long-poll through the prefix", async () => {
  proxy.blockWebSocket(true);
  try {
    const watcher = client(`${proxy.url}${PREFIX}/`, {
      EventSource: undefined, // no event streams: long-poll is the only fallback
      fallbackAfter: 1,
      probeIntervalMs: 60_000,
    });
    const job = await followJob(watcher);
    assert.equal(watcher.transport, "poll");
    assert.ok(
      proxy.requests.some((r) => r.path.startsWith(`${PREFIX}/exports/${job.id}?wait=`)),
      proxy.requests.map((r) => r.path).join(", "),
    );
    watcher.close();
  } finally {
    proxy.blockWebSocket(false);
  }
});
