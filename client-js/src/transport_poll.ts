/**
 * Fallback 2: HTTP long-poll, one request at a time per watched job:
 * `GET /exports/{id}?wait=25` with `If-None-Match: "<seq>"` answers as soon as the job changes,
 * or 304 after the wait. Without a seq yet, a plain `GET /exports/{id}` comes first (the gateway
 * treats a long-poll without `If-None-Match` as "wait for the next change").
 *
 * A 200 is the store's current snapshot. One with a seq below the one the request named means
 * the store went back (failover, a forged seq): it is delivered as a reset and replaces what the
 * client has. One below what the client has by now, but not below the request's, only lost a
 * race with another source (`active()`, `get()`) and is dropped as stale.
 */

import type { FeedContext, JobFeed } from "./feed.js";
import { errorContext, isFinalError } from "./feed.js";
import { HttpError, isAbort, jobPath } from "./http.js";
import type { JobSnapshot } from "./types.js";
import { isTerminal } from "./types.js";

export class PollFeed implements JobFeed {
  private readonly abort = new AbortController();
  private failures = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly context: FeedContext,
    readonly jobId: string,
    private readonly waitS: number,
  ) {
    void this.run();
  }

  stop(): void {
    this.abort.abort();
    clearTimeout(this.retryTimer);
    this.wake?.();
  }

  private get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        const seq = this.context.seq(this.jobId);
        const job = await this.poll(seq);
        if (this.stopped) return;
        this.failures = 0;
        this.context.handlers.working();
        if (job !== null) {
          this.context.handlers.update(job, seq !== undefined && job.seq < seq);
          if (isTerminal(job)) return;
        }
      } catch (error) {
        if (this.stopped || isAbort(error)) return;
        if (error instanceof HttpError && isFinalError(error)) {
          this.context.handlers.failed(this.jobId, errorContext(error, this.jobId));
          return;
        }
        this.context.handlers.trouble(errorContext(error, this.jobId));
        await this.pause(error instanceof HttpError ? error.retryAfterS : null);
      }
    }
  }

  /** One request: the newer snapshot, or `null` when the wait ended without a change. */
  private async poll(seq: number | undefined): Promise<JobSnapshot | null> {
    const path = jobPath(this.jobId);
    const response =
      seq === undefined
        ? await this.context.api.request(path, { signal: this.abort.signal })
        : await this.context.api.request(`${path}?wait=${this.waitS}`, {
            timeoutMs: this.waitS * 1000 + this.context.api.timeoutMs,
            headers: { "If-None-Match": `"${seq}"` },
            signal: this.abort.signal,
          });
    if (response.status === 304) return null;
    return (await response.json()) as JobSnapshot;
  }

  private pause(retryAfterS: number | null): Promise<void> {
    const delay = Math.max(this.context.delay(this.failures), (retryAfterS ?? 0) * 1000);
    this.failures += 1;
    return new Promise((resolve) => {
      this.wake = resolve;
      this.retryTimer = setTimeout(resolve, delay);
    });
  }
}
