/**
 * For the browser tests: a real `progress-gateway demo` process (embedded SQLite store in a temp
 * file, local job processes, the demo page at `/`) and Debian's Chromium driven by
 * `playwright-core`. Nothing is downloaded: the browser is `/usr/bin/chromium` (or
 * `$CHROMIUM_PATH`), which `scripts/test.sh` installs with apt when it is missing.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { REPO_ROOT, VENV_BIN, freePort, tempDir } from "./processes.js";
import { waitFor } from "./wait.js";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const SCREENSHOTS = join(REPO_ROOT, "test-output", "browser");

export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: run client-js/scripts/test.sh (it installs it with apt)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // playwright-core gives every launch a fresh temporary profile (its own --user-data-dir).
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-quic",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** `progress-gateway demo` on a free port; `kill()` then `start()` again reuses port and file. */
export class DemoGateway {
  private process: ChildProcess | null = null;
  readonly directory: string;
  readonly sqlitePath: string;
  readonly logPath: string;
  port = 0;
  /** The `open` link the command printed: `http://127.0.0.1:<port>/?token=<jwt>`. */
  openUrl = "";

  constructor(name: string) {
    this.directory = tempDir(`browser-${name}`);
    this.sqlitePath = join(this.directory, "demo.db");
    this.logPath = join(this.directory, "gateway.log");
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get token(): string {
    const token = new URL(this.openUrl).searchParams.get("token");
    if (token === null) throw new Error(`no token in ${this.openUrl}`);
    return token;
  }

  environment(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [name, value] of Object.entries(process.env)) {
      if (!name.startsWith("GATEWAY_") && name !== "REDIS_URL") env[name] = value;
    }
    // No GATEWAY_SECRET: the demo keeps the secret it made beside its SQLite file, so the page's
    // token stays valid across a restart of the gateway (the restart test relies on it).
    // The local job slots live in the test's directory, removed with it.
    env.GATEWAY_LOCAL_SLOTS_DIR = join(this.directory, "slots");
    // No GATEWAY_ALLOWED_ORIGINS: the page is served by the gateway itself, and a same-origin
    // page must be allowed as it is (the WebSocket tests would fall back to SSE otherwise).
    return env;
  }

  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    const log = openSync(this.logPath, "a");
    const args = ["demo", "--port", String(this.port), "--sqlite-path", this.sqlitePath];
    const child = spawn(join(VENV_BIN, "progress-gateway"), [...args, "--log-level", "info"], {
      cwd: this.directory,
      env: this.environment(),
      stdio: ["ignore", log, log],
    });
    closeSync(log);
    this.process = child;
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`demo exited with ${child.exitCode}: ${this.log()}`);
        try {
          return (await fetch(`${this.url}/healthz`)).ok;
        } catch {
          return false;
        }
      },
      `progress-gateway demo on port ${this.port} (log: ${this.logPath})`,
      20_000,
      50,
    );
    const printed = [...this.log().matchAll(/^\s*open\s+(\S+)$/gm)].at(-1)?.[1];
    if (printed === undefined) throw new Error(`the demo printed no open link: ${this.log()}`);
    this.openUrl = printed;
  }

  /** SIGKILL: no drain; the job processes keep running and writing to the SQLite file. */
  async kill(): Promise<void> {
    const child = this.process;
    this.process = null;
    if (child === null || child.exitCode !== null) return;
    const exited = new Promise<void>((done) => child.once("exit", () => done()));
    child.kill("SIGKILL");
    await exited;
  }

  /** Authenticated JSON request to the gateway, from the test. */
  async request(path: string, init: RequestInit = {}): Promise<Response> {
    return fetch(`${this.url}${path}`, {
      ...init,
      headers: { ...init.headers, Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" },
    });
  }

  /** Cancel what is still running (so no job process outlives the test), stop, remove the files. */
  async close(): Promise<void> {
    if (this.process !== null && this.openUrl !== "") {
      try {
        const { active } = (await (await this.request("/exports/active")).json()) as {
          active: Array<{ id: string }>;
        };
        await Promise.all(active.map((job) => this.request(`/exports/${job.id}/cancel`, { method: "POST" })));
      } catch {
        // The gateway is not answering: nothing more to do here.
      }
    }
    await this.kill();
    rmSync(this.directory, { recursive: true, force: true });
  }

  log(): string {
    try {
      return readFileSync(this.logPath, "utf8").slice(-6000);
    } catch {
      return "(no log)";
    }
  }
}

/** The page's final state, for a human: `test-output/browser/<name>.png`. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
