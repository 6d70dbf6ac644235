/**
 * Fallback 1: Server-Sent Events, one `EventSource` per watched job on
 * `GET /exports/{id}/events?token=…` (an EventSource cannot set headers).
 *
 * A stream opens from the newest seq the client has (`?last_event_id=`, which a new EventSource
 * sends in place of the header it cannot set). While it is up the EventSource itself reconnects
 * after a network blip and sends `Last-Event-ID` (the `id:` of the last event, which is the
 * job's seq), so nothing is missed. An `update` event is a newer snapshot; a `reset` event is
 * the store's snapshot when the store went back below that seq (failover, a forged seq): it
 * replaces what the client has.
 * When it gives up (an HTTP error: 401, 403, 404, 503, or 204 after the terminal snapshot) the
 * feed asks `GET /exports/{id}` what is wrong: a snapshot is delivered; a 401 refreshes the
 * token and the stream reopens at once; 403/404 end the watch; anything else counts as a
 * transport failure and a new EventSource opens after a backoff delay.
 */

import type { FeedContext, JobFeed } from "./feed.js";
import { errorContext, isFinalError } from "./feed.js";
import { HttpError, jobPath } from "./http.js";
import type { TokenSource } from "./token.js";
import type { EventSourceConstructor, EventSourceLike, JobSnapshot } from "./types.js";
import { isTerminal } from "./types.js";

const CLOSED = 2;

export class SseFeed implements JobFeed {
  private source: EventSourceLike | null = null;
  private stopped = false;
  private failures = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly EventSourceImpl: EventSourceConstructor,
    private readonly tokens: TokenSource,
    private readonly context: FeedContext,
    readonly jobId: string,
  ) {
    void this.open();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.closeSource();
  }

  private async open(): Promise<void> {
    let token: string;
    try {
      token = await this.tokens.get();
    } catch (error) {
      this.retryLater(errorContext(error, this.jobId));
      return;
    }
    if (this.stopped) return;
    const seq = this.context.seq(this.jobId);
    const query: Record<string, string> = { token };
    if (seq !== undefined) query.last_event_id = String(seq);
    const url = this.context.api.url(`${jobPath(this.jobId)}/events`, query);
    const source = new this.EventSourceImpl(url);
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      this.context.handlers.working();
    };
    source.addEventListener("update", (event: { data: string }) => this.receive(event.data, false));
    source.addEventListener("reset", (event: { data: string }) => this.receive(event.data, true));
    source.onerror = () => {
      if (this.source !== source) return;
      if (source.readyState === CLOSED) {
        this.closeSource();
        void this.diagnose();
      } else {
        // The EventSource reconnects by itself (with Last-Event-ID); count the failure.
        this.context.handlers.trouble({
          code: "transport",
          message: `event stream of job ${this.jobId} lost; the EventSource is reconnecting`,
          jobId: this.jobId,
        });
      }
    };
  }

  private receive(data: string, reset: boolean): void {
    let job: JobSnapshot;
    try {
      job = JSON.parse(data) as JobSnapshot;
    } catch (error) {
      this.context.handlers.trouble({
        code: "transport",
        message: `event stream of job ${this.jobId} sent data that is not JSON: ${String(error)}`,
        jobId: this.jobId,
      });
      return;
    }
    this.failures = 0;
    this.context.handlers.update(job, reset);
    if (isTerminal(job)) this.stop();
  }

  /** The EventSource gave up: find out why with a plain GET, then reopen after a delay. */
  private async diagnose(): Promise<void> {
    const tokenVersion = this.tokens.version;
    try {
      const job = await this.context.api.get(this.jobId);
      if (this.stopped) return;
      this.context.handlers.update(job);
      if (isTerminal(job)) {
        this.stop();
        return;
      }
      if (this.tokens.version !== tokenVersion) {
        // The stream was refused for an expired token, now refreshed: not a transport failure.
        void this.open();
        return;
      }
      // The job is readable but its stream is not: the event stream route is what fails.
      this.retryLater({
        code: "transport",
        message: `event stream of job ${this.jobId} refused while the job is readable`,
        jobId: this.jobId,
      });
    } catch (error) {
      if (this.stopped) return;
      if (error instanceof HttpError && isFinalError(error)) {
        this.stop();
        this.context.handlers.failed(this.jobId, errorContext(error, this.jobId));
        return;
      }
      this.retryLater(errorContext(error, this.jobId));
    }
  }

  private retryLater(error: Parameters<FeedContext["handlers"]["trouble"]>[0]): void {
    if (this.stopped) return;
    this.context.handlers.trouble(error);
    if (this.stopped) return; // the client may have switched transports on this failure
    const delay = this.context.delay(this.failures);
    this.failures += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.open(), delay);
  }

  private closeSource(): void {
    const source = this.source;
    this.source = null;
    if (source === null) return;
    source.onopen = null;
    source.onerror = null;
    source.close();
  }
}
