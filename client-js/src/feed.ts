/**
 * The seam between the client and its per-job fallback transports (SSE, long-poll): a `JobFeed`
 * follows one job until stopped and reports what happened through `FeedHandlers`.
 */

import type { HttpApi } from "./http.js";
import { HttpError } from "./http.js";
import type { ErrorContext, JobSnapshot } from "./types.js";

export interface FeedHandlers {
  /** `reset`: the store went back; `job` replaces what the client has (`JobBook.deliver`). */
  update(job: JobSnapshot, reset?: boolean): void;
  /** The job cannot be followed (`not_found`, `forbidden`, `bad_request`): stop watching it. */
  failed(jobId: string, error: ErrorContext): void;
  /** The transport failed once (counted by the client to decide on the next fallback). */
  trouble(error: ErrorContext): void;
  /** The transport works (resets the client's failure count). */
  working(): void;
}

export interface FeedContext {
  api: HttpApi;
  handlers: FeedHandlers;
  /** The newest seq the client has of a job, if any. */
  seq(jobId: string): number | undefined;
  /** Delay before retry number `attempt` (0-based). */
  delay(attempt: number): number;
}

export interface JobFeed {
  stop(): void;
}

/** Whether an HTTP error means the job itself cannot be followed, rather than a passing failure. */
export function isFinalError(error: HttpError): boolean {
  return error.status === 400 || error.status === 403 || error.status === 404 || error.status === 422;
}

export function errorContext(error: unknown, jobId?: string): ErrorContext {
  if (error instanceof HttpError) {
    const context: ErrorContext = {
      code: error.code,
      message: error.message,
      status: error.status,
      cause: error,
    };
    if (jobId !== undefined) context.jobId = jobId;
    return context;
  }
  const context: ErrorContext = {
    code: "transport",
    message: error instanceof Error ? error.message : String(error),
    cause: error,
  };
  if (jobId !== undefined) context.jobId = jobId;
  return context;
}
