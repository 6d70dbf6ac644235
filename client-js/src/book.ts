/**
 * `JobBook`: the newest snapshot of every job the client has seen, and who wants each one.
 *
 * Every snapshot from every transport passes through `deliver()`, which enforces the client's
 * guarantees in one place: a listener never sees a `seq` lower than or equal to one it has
 * already seen, unless the gateway says the store went back (a reset: a Redis failover that lost
 * the last writes, or a forged snapshot with a huge seq); the store is the source of truth, so
 * its snapshot then replaces the job's state and later seqs count from it. The terminal snapshot
 * reaches each `watch` listener exactly once, after which that watch is gone. Listener
 * exceptions are reported, never allowed to break delivery.
 */

import type { ErrorContext, JobCursor, JobSnapshot } from "./types.js";
import { isTerminal } from "./types.js";

export type JobListener = (job: JobSnapshot) => void;

export interface WatchOptions {
  /** The job cannot be watched (`not_found`, `forbidden`, `bad_request`): the watch has ended. */
  onError?: (error: ErrorContext) => void;
}

interface WatchEntry {
  readonly listener: JobListener;
  readonly options: WatchOptions;
  /** The newest seq this listener was called with (0: none yet). */
  seen: number;
}

interface MineEntry {
  readonly listener: JobListener;
  readonly seen: Map<string, number>;
}

export type AddWatchResult = "first" | "more" | "finished";

export class JobBook {
  private readonly known = new Map<string, JobSnapshot>();
  private readonly watches = new Map<string, Set<WatchEntry>>();
  private readonly mine = new Set<MineEntry>();

  constructor(
    private readonly report: (error: ErrorContext) => void,
    /** How many jobs' newest snapshots are remembered; the oldest are forgotten first. */
    private readonly maxKnown = 5000,
  ) {}

  latest(id: string): JobSnapshot | undefined {
    return this.known.get(id);
  }

  watching(id: string): boolean {
    return this.watches.has(id);
  }

  watchedIds(): string[] {
    return [...this.watches.keys()];
  }

  /** What to resubscribe with: every watched job and the newest seq the client has of it. */
  cursors(): JobCursor[] {
    return this.watchedIds().map((id) => {
      const seq = this.known.get(id)?.seq;
      return seq === undefined ? { id } : { id, seq };
    });
  }

  get mineCount(): number {
    return this.mine.size;
  }

  /**
   * Register a watch listener. `first`: the job has no other watcher yet (subscribe it);
   * `more`: it already had one; `finished`: the job is known to be terminal, nothing to
   * subscribe. The listener is called with the newest known snapshot on the next microtask.
   */
  addWatch(
    id: string,
    listener: JobListener,
    options: WatchOptions = {},
  ): {
    result: AddWatchResult;
    remove: () => boolean;
  } {
    const entry: WatchEntry = { listener, options, seen: 0 };
    const known = this.known.get(id);
    if (known !== undefined && isTerminal(known)) {
      let removed = false;
      queueMicrotask(() => {
        if (!removed) this.call(listener, known);
      });
      return {
        result: "finished",
        remove: () => {
          removed = true;
          return false;
        },
      };
    }
    let entries = this.watches.get(id);
    const result: AddWatchResult = entries === undefined ? "first" : "more";
    if (entries === undefined) {
      entries = new Set();
      this.watches.set(id, entries);
    }
    entries.add(entry);
    if (known !== undefined) {
      queueMicrotask(() => {
        const newest = this.known.get(id);
        if (newest !== undefined && this.watches.get(id)?.has(entry)) this.callWatch(entry, newest);
      });
    }
    return { result, remove: () => this.removeWatch(id, entry) };
  }

  /** Add a `watchMine` listener; it is replayed every known job on the next microtask. */
  addMine(listener: JobListener): () => boolean {
    const entry: MineEntry = { listener, seen: new Map() };
    this.mine.add(entry);
    queueMicrotask(() => {
      if (!this.mine.has(entry)) return;
      for (const job of [...this.known.values()]) this.callMine(entry, job);
    });
    return () => this.mine.delete(entry) && this.mine.size === 0;
  }

  /**
   * Accept `job` if it is newer than everything seen of that job, or if it is a `reset` (the
   * store's current snapshot, below what the client has) that is not the version it has, and
   * call its listeners. Returns `ignored` (stale or duplicate), `accepted`, or `ended`
   * (terminal: the job's watch is gone, so the caller unsubscribes it).
   */
  deliver(job: JobSnapshot, reset = false): "ignored" | "accepted" | "ended" {
    const known = this.known.get(job.id);
    const replaces = reset && known !== undefined && !sameVersion(known, job);
    if (known !== undefined && job.seq <= known.seq && !replaces) return "ignored";
    this.remember(job);
    const entries = this.watches.get(job.id);
    const terminal = isTerminal(job);
    if (terminal) this.watches.delete(job.id);
    if (entries !== undefined) for (const entry of [...entries]) this.callWatch(entry, job, replaces);
    for (const entry of [...this.mine]) this.callMine(entry, job, replaces);
    return terminal && entries !== undefined ? "ended" : "accepted";
  }

  /** End the watch of `id` with an error; returns whether there was one. */
  fail(id: string, error: ErrorContext): boolean {
    const entries = this.watches.get(id);
    if (entries === undefined) return false;
    this.watches.delete(id);
    for (const entry of entries) {
      const onError = entry.options.onError;
      if (onError !== undefined) this.call(onError, error);
    }
    this.report(error);
    return true;
  }

  private removeWatch(id: string, entry: WatchEntry): boolean {
    const entries = this.watches.get(id);
    if (entries === undefined || !entries.delete(entry)) return false;
    if (entries.size > 0) return false;
    this.watches.delete(id);
    return true;
  }

  private remember(job: JobSnapshot): void {
    this.known.delete(job.id);
    this.known.set(job.id, job);
    if (this.known.size > this.maxKnown) {
      for (const id of this.known.keys()) {
        if (this.known.size <= this.maxKnown) break;
        if (!this.watches.has(id)) this.known.delete(id);
      }
    }
  }

  private callWatch(entry: WatchEntry, job: JobSnapshot, reset = false): void {
    if (job.seq <= entry.seen && !reset) return;
    entry.seen = job.seq;
    this.call(entry.listener, job);
  }

  private callMine(entry: MineEntry, job: JobSnapshot, reset = false): void {
    if (job.seq <= (entry.seen.get(job.id) ?? 0) && !reset) return;
    entry.seen.set(job.id, job.seq);
    this.call(entry.listener, job);
  }

  private call<T>(listener: (value: T) => void, value: T): void {
    try {
      listener(value);
    } catch (error) {
      this.report({
        code: "callback_failed",
        message: `a listener threw: ${error instanceof Error ? error.message : String(error)}`,
        cause: error,
      });
    }
  }
}

/** The same version of a job: a reset repeated (resync and resubscribe both found it) is a duplicate. */
function sameVersion(a: JobSnapshot, b: JobSnapshot): boolean {
  return a.seq === b.seq && a.updated_at === b.updated_at;
}
