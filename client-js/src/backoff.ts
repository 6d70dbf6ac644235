/**
 * Reconnect delays: exponential backoff with full jitter, a fresh draw on every attempt.
 *
 * `backoff(attempt, minMs, maxMs)` is uniform in `[0, min(maxMs, minMs * 2^attempt)]` (AWS
 * "full jitter"): clients that lost the same gateway at the same instant spread out instead of
 * returning in waves. Pure: pass `random` to make it deterministic in tests.
 */

export interface BackoffOptions {
  /** Upper bound of the first delay, in ms (default 500). */
  minMs: number;
  /** Cap of every delay, in ms (default 20 000). */
  maxMs: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = { minMs: 500, maxMs: 20_000 };

export function backoff(
  attempt: number,
  minMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const step = Number.isFinite(attempt) && attempt > 0 ? Math.min(Math.floor(attempt), 30) : 0;
  const ceiling = Math.min(maxMs, minMs * 2 ** step);
  const draw = Math.min(Math.max(random(), 0), 1);
  return Math.max(0, Math.round(draw * ceiling));
}

/** Up to `maxMs` (default 1 s): spreads the reconnects of many clients told 1001 at once. */
export function smallJitter(maxMs = 1000, random: () => number = Math.random): number {
  return Math.round(Math.min(Math.max(random(), 0), 1) * maxMs);
}
