export { ProgressClient } from "./client.js";
export type { ProgressClientOptions } from "./options.js";
export type { JobListener, WatchOptions } from "./book.js";
export { backoff, DEFAULT_BACKOFF } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { CloseCode, ErrorCode, LocalCloseCode, reactionTo } from "./codes.js";
export type { Reaction } from "./codes.js";
export { HttpError } from "./http.js";
export { defineJobProgressElement, summarizeResult } from "./element.js";
export type {
  JobProgressClient,
  JobProgressElement,
  JobProgressElementConstructor,
  JobProgressElementOptions,
  JobProgressStatus,
} from "./element.js";
export { TypedEventTarget } from "./events.js";
export { JobStatus, State, Transport, TERMINAL_STATUSES, isTerminal } from "./types.js";
export type {
  ActiveJobs,
  ClientEventMap,
  ErrorContext,
  EventSourceConstructor,
  EventSourceLike,
  FetchLike,
  JobError,
  JobSnapshot,
  JsonValue,
  StateContext,
  TokenProvider,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";
