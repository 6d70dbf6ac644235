/**
 * The worker side, for real: a long-lived Python process that runs `workers.ProgressClient`
 * (the README's Worker SDK) against the test's Redis, one JSON command per line on stdin, one
 * JSON answer per line on stdout. It also mints tokens with `progress_gateway.auth.issue_token` when a
 * test needs one the CLI cannot make (an already expired one), and publishes forged snapshots on
 * a job's channel (`forge`) as a rogue writer with Redis access could.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import type { JobSnapshot } from "../../src/types.js";
import { SECRET, VENV_BIN } from "./processes.js";

const SCRIPT = `
import json, os, sys
import redis
from progress_gateway.auth import issue_token
from progress_core.store.redis import RedisKeys
from progress_workers import ProgressClient

pc = ProgressClient.from_env()
raw = redis.Redis.from_url(os.environ["GATEWAY_REDIS_URL"])
keys = RedisKeys(os.environ["GATEWAY_KEY_PREFIX"])
for line in sys.stdin:
    request = json.loads(line)
    op = request.pop("op")
    try:
        if op == "token":
            value = issue_token(${JSON.stringify(SECRET)}, request["sub"], request["ttl"], now=request.get("now"))
        elif op == "forge":
            forged = {**request["snapshot"], "seq": request["seq"], "message": "forged"}
            value = raw.publish(keys.channel(forged["id"]), json.dumps(forged))
        else:
            job = getattr(pc, op)(**request)
            value = job.model_dump(mode="json")
        answer = {"ok": True, "value": value}
    except Exception as exc:
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer), flush=True)
`;

interface Answer {
  ok: boolean;
  value?: unknown;
  error?: string;
}

export class Worker {
  private readonly child: ChildProcess;
  private readonly pending: Array<(answer: Answer) => void> = [];
  private stderr = "";

  constructor(redisUrl: string, keyPrefix: string) {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      GATEWAY_REDIS_URL: redisUrl,
      GATEWAY_KEY_PREFIX: keyPrefix,
    };
    this.child = spawn(join(VENV_BIN, "python"), ["-c", SCRIPT], { env, stdio: ["pipe", "pipe", "pipe"] });
    this.child.stderr?.on("data", (chunk: Buffer) => (this.stderr += chunk.toString()));
    if (this.child.stdout === null) throw new Error("no stdout");
    createInterface({ input: this.child.stdout }).on("line", (line) => {
      const resolve = this.pending.shift();
      resolve?.(JSON.parse(line) as Answer);
    });
    this.child.once("exit", (code) => {
      for (const resolve of this.pending.splice(0))
        resolve({ ok: false, error: `worker exited with ${code}: ${this.stderr}` });
    });
  }

  private async call(request: Record<string, unknown>): Promise<unknown> {
    const answer = await new Promise<Answer>((resolve) => {
      this.pending.push(resolve);
      this.child.stdin?.write(`${JSON.stringify(request)}\n`);
    });
    if (!answer.ok) throw new Error(`worker ${String(request.op)} failed: ${answer.error}`);
    return answer.value;
  }

  async create(owner: string, kind = "export", params: Record<string, unknown> = {}): Promise<JobSnapshot> {
    return (await this.call({ op: "create_job", owner, kind, params })) as JobSnapshot;
  }

  async start(id: string): Promise<JobSnapshot> {
    return (await this.call({ op: "start", job_id: id })) as JobSnapshot;
  }

  async update(id: string, progress: number, message?: string): Promise<JobSnapshot> {
    return (await this.call({ op: "update", job_id: id, progress, message: message ?? null })) as JobSnapshot;
  }

  async succeed(id: string, result: unknown = null): Promise<JobSnapshot> {
    return (await this.call({ op: "succeed", job_id: id, result })) as JobSnapshot;
  }

  async fail(id: string, message: string): Promise<JobSnapshot> {
    return (await this.call({ op: "fail", job_id: id, message })) as JobSnapshot;
  }

  /**
   * Publish `snapshot` with `seq` (and the message "forged") on its job's channel, not in the
   * store. Returns how many subscribers (gateways) received it.
   */
  async forge(snapshot: JobSnapshot, seq: number): Promise<number> {
    return (await this.call({ op: "forge", snapshot, seq })) as number;
  }

  /** A token for `sub`, issued at `now` (epoch seconds; in the past for an expired one). */
  async token(sub: string, ttl: number, now?: number): Promise<string> {
    return (await this.call({ op: "token", sub, ttl, now: now ?? null })) as string;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise<void>((done) => this.child.once("exit", () => done()));
    this.child.stdin?.end();
    await exited;
  }
}
