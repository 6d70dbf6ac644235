/** One Redis, one gateway and one worker per test file, torn down after it. */

import { randomUUID } from "node:crypto";
import { rmSync } from "node:fs";
import { EventSource } from "eventsource";
import WebSocket from "ws";
import { ProgressClient, type ProgressClientOptions } from "../../src/index.js";
import type { StateContext } from "../../src/types.js";
import { GatewayServer, RedisServer, mintToken, tempDir } from "./processes.js";
import { Worker } from "./worker.js";

export interface TestEnv {
  redis: RedisServer;
  gateway: GatewayServer;
  worker: Worker;
  token: string;
  directory: string;
  close(): Promise<void>;
}

export async function startEnv(name: string, settings: Record<string, string> = {}): Promise<TestEnv> {
  const directory = tempDir(name);
  const redis = new RedisServer(directory);
  await redis.start();
  const prefix = `cjs-${randomUUID().slice(0, 8)}`;
  const gateway = new GatewayServer(redis.url, prefix, directory, settings);
  const [token] = await Promise.all([mintToken("alice"), gateway.start()]);
  const worker = new Worker(redis.url, prefix);
  return {
    redis,
    gateway,
    worker,
    token,
    directory,
    async close() {
      await worker.close();
      await gateway.kill();
      await redis.stop();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/** Options every test client shares: Node's missing WebSocket/EventSource, fast backoff. */
export function clientOptions(url: string, token: ProgressClientOptions["token"]): ProgressClientOptions {
  return {
    url,
    token,
    WebSocket,
    EventSource,
    backoff: { minMs: 50, maxMs: 500 },
  };
}

/** Records every state change of a client. */
export function recordStates(client: ProgressClient): StateContext[] {
  const states: StateContext[] = [];
  client.on("state", (context) => states.push(context));
  return states;
}

export { ProgressClient };
