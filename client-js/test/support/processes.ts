/**
 * A private `redis-server` and a real `progress-gateway serve` process on free ports, for the
 * integration tests. Paths are relative to the repository root (`client-js/..`), so a clean
 * clone works once `scripts/test` has created `.venv`.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, closeSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { waitFor } from "./wait.js";

/** build/test/support → client-js → repository root. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
export const VENV_BIN = join(REPO_ROOT, ".venv", "bin");
export const SECRET = `client-js-test-secret-${"s".repeat(40)}`;

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

export function tempDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `pgw-client-js-${name}-`));
}

async function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((done) => child.once("exit", () => done()));
}

export class RedisServer {
  private process: ChildProcess | null = null;
  port = 0;

  constructor(private readonly directory: string) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  async start(): Promise<void> {
    this.port = await freePort();
    const args = [
      "--port",
      String(this.port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      this.directory,
      "--protected-mode",
      "no",
    ];
    this.process = spawn("redis-server", args, { stdio: "ignore" });
    const child = this.process;
    await waitFor(
      () => {
        if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
        return canConnect(this.port);
      },
      `redis-server on port ${this.port}`,
      15_000,
    );
  }

  async stop(): Promise<void> {
    const child = this.process;
    this.process = null;
    if (child === null) return;
    child.kill("SIGKILL");
    await exited(child);
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      done(true);
    });
    socket.once("error", () => done(false));
  });
}

export class GatewayServer {
  private process: ChildProcess | null = null;
  port = 0;
  readonly logPath: string;

  constructor(
    private readonly redisUrl: string,
    readonly keyPrefix: string,
    private readonly directory: string,
    private readonly settings: Record<string, string> = {},
  ) {
    this.logPath = join(directory, "gateway.log");
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  environment(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [name, value] of Object.entries(process.env)) {
      if (!name.startsWith("GATEWAY_") && name !== "REDIS_URL") env[name] = value;
    }
    Object.assign(env, {
      GATEWAY_SECRET: SECRET,
      GATEWAY_PORT: String(this.port),
      GATEWAY_REDIS_URL: this.redisUrl,
      GATEWAY_KEY_PREFIX: this.keyPrefix,
      GATEWAY_DRAIN_S: "0.3",
      // In the test's directory (removed with it): a killed gateway leaves its slots behind.
      GATEWAY_LOCAL_SLOTS_DIR: join(this.directory, "slots"),
    });
    for (const [name, value] of Object.entries(this.settings)) env[`GATEWAY_${name.toUpperCase()}`] = value;
    return env;
  }

  /** Start on a free port the first time, on the same port after `kill()`. */
  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    const log = openSync(this.logPath, "a");
    const child = spawn(join(VENV_BIN, "progress-gateway"), ["serve", "--log-level", "info"], {
      cwd: this.directory,
      env: this.environment(),
      stdio: ["ignore", log, log],
    });
    closeSync(log);
    this.process = child;
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}: ${this.log()}`);
        try {
          const response = await fetch(`${this.url}/healthz`);
          return response.ok;
        } catch {
          return false;
        }
      },
      `gateway on port ${this.port} (log: ${this.logPath})`,
      20_000,
      50,
    );
  }

  /** SIGKILL: no drain, no goodbye frames; clients only notice the sockets dying. */
  async kill(): Promise<void> {
    const child = this.process;
    this.process = null;
    if (child === null) return;
    child.kill("SIGKILL");
    await exited(child);
  }

  /** SIGTERM: the gateway drains (closes WebSockets with 1001 over GATEWAY_DRAIN_S), then exits. */
  async terminate(): Promise<void> {
    const child = this.process;
    this.process = null;
    if (child === null) return;
    child.kill("SIGTERM");
    await exited(child);
  }

  log(): string {
    try {
      return readFileSync(this.logPath, "utf8").slice(-4000);
    } catch {
      return "(no log)";
    }
  }
}

/** `progress-gateway token --sub <owner>`: the development token command. */
export async function mintToken(owner: string, ttlS = 3600): Promise<string> {
  const child = spawn(join(VENV_BIN, "progress-gateway"), ["token", "--sub", owner, "--ttl", String(ttlS)], {
    env: { ...process.env, GATEWAY_SECRET: SECRET },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout?.on("data", (chunk: Buffer) => (out += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (err += chunk.toString()));
  const code = await new Promise<number | null>((done) => child.once("exit", done));
  if (code !== 0) throw new Error(`progress-gateway token exited with ${code}: ${err}`);
  return out.trim();
}
