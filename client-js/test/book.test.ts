import assert from "node:assert/strict";
import { test } from "node:test";
import { JobBook } from "../src/book.js";
import type { ErrorContext, JobSnapshot } from "../src/types.js";
import { JOB_ID, snapshot } from "./support/fakes.js";

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function book(): { book: JobBook; errors: ErrorContext[] } {
  const errors: ErrorContext[] = [];
  return { book: new JobBook((error) => errors.push(error)), errors };
}

test("a listener never sees an older or equal seq", () => {
  const { book: jobs } = book();
  const seen: number[] = [];
  jobs.addWatch(JOB_ID, (job) => seen.push(job.seq));
  for (const seq of [1, 3, 2, 3, 5, 4, 5, 6]) jobs.deliver(snapshot(seq));
  assert.deepEqual(seen, [1, 3, 5, 6]);
});

test("deliver says whether a snapshot was new, and when a watch ended", () => {
  const { book: jobs } = book();
  jobs.addWatch(JOB_ID, () => undefined);
  assert.equal(jobs.deliver(snapshot(2)), "accepted");
  assert.equal(jobs.deliver(snapshot(2)), "ignored");
  assert.equal(jobs.deliver(snapshot(1)), "ignored");
  assert.equal(jobs.deliver(snapshot(3, { status: "succeeded" })), "ended");
  assert.equal(jobs.watching(JOB_ID), false);
  assert.equal(jobs.deliver(snapshot(4, { status: "succeeded" })), "accepted");
});

test("the terminal snapshot reaches a watch exactly once, then the watch is gone", async () => {
  const { book: jobs } = book();
  const seen: JobSnapshot[] = [];
  jobs.addWatch(JOB_ID, (job) => seen.push(job));
  jobs.deliver(snapshot(4, { status: "failed" }));
  jobs.deliver(snapshot(4, { status: "failed" }));
  jobs.deliver(snapshot(5, { status: "failed" }));
  await tick();
  assert.deepEqual(
    seen.map((job) => [job.seq, job.status]),
    [[4, "failed"]],
  );
  assert.deepEqual(jobs.cursors(), []);
});

test("a new watch of a known job gets the newest snapshot first, on the next microtask", async () => {
  const { book: jobs } = book();
  jobs.deliver(snapshot(7));
  const seen: number[] = [];
  const { result } = jobs.addWatch(JOB_ID, (job) => seen.push(job.seq));
  assert.equal(result, "first");
  assert.deepEqual(seen, []);
  await tick();
  assert.deepEqual(seen, [7]);
  jobs.deliver(snapshot(8));
  assert.deepEqual(seen, [7, 8]);
  assert.deepEqual(jobs.cursors(), [{ id: JOB_ID, seq: 8 }]);
});

test("watching a job known to be finished delivers its terminal snapshot once and subscribes nothing", async () => {
  const { book: jobs } = book();
  jobs.deliver(snapshot(9, { status: "cancelled" }));
  const seen: number[] = [];
  const { result } = jobs.addWatch(JOB_ID, (job) => seen.push(job.seq));
  assert.equal(result, "finished");
  await tick();
  assert.deepEqual(seen, [9]);
  assert.equal(jobs.watching(JOB_ID), false);
});

test("removing the last listener ends the watch; removing one of two does not", () => {
  const { book: jobs } = book();
  const first = jobs.addWatch(JOB_ID, () => undefined);
  const second = jobs.addWatch(JOB_ID, () => undefined);
  assert.equal(second.result, "more");
  assert.equal(first.remove(), false);
  assert.equal(jobs.watching(JOB_ID), true);
  assert.equal(second.remove(), true);
  assert.equal(jobs.watching(JOB_ID), false);
  assert.equal(second.remove(), false);
});

test("watchMine listeners get every job, replayed when added, each seq once", async () => {
  const { book: jobs } = book();
  const other = "00000000-0000-4000-8000-000000000001";
  jobs.deliver(snapshot(2));
  const seen: string[] = [];
  jobs.addMine((job) => seen.push(`${job.id.slice(0, 4)}@${job.seq}`));
  jobs.deliver(snapshot(2));
  await tick();
  jobs.deliver(snapshot(1, { id: other }));
  jobs.deliver(snapshot(3));
  jobs.deliver(snapshot(1, { id: other }));
  assert.deepEqual(seen, ["3f0c@2", "0000@1", "3f0c@3"]);
});

test("fail ends the watch and calls onError; the error is reported once", () => {
  const { book: jobs, errors } = book();
  const failures: string[] = [];
  jobs.addWatch(JOB_ID, () => undefined, { onError: (error) => failures.push(error.code) });
  assert.equal(jobs.fail(JOB_ID, { code: "not_found", message: "no such job", jobId: JOB_ID }), true);
  assert.equal(jobs.fail(JOB_ID, { code: "not_found", message: "no such job", jobId: JOB_ID }), false);
  assert.deepEqual(failures, ["not_found"]);
  assert.equal(errors.length, 1);
});

test("a throwing listener is reported and does not stop the others", () => {
  const { book: jobs, errors } = book();
  const seen: number[] = [];
  jobs.addWatch(JOB_ID, () => {
    throw new Error("boom");
  });
  jobs.addWatch(JOB_ID, (job) => seen.push(job.seq));
  jobs.deliver(snapshot(1));
  assert.deepEqual(seen, [1]);
  assert.equal(errors[0]?.code, "callback_failed");
  assert.match(errors[0]?.message ?? "", /boom/);
});

test("memory is bounded: the oldest unwatched jobs are forgotten first", () => {
  const jobs = new JobBook(() => undefined, 3);
  const ids = [1, 2, 3, 4, 5].map((n) => `00000000-0000-4000-8000-00000000000${n}`);
  jobs.addWatch(ids[0] ?? "", () => undefined);
  for (const id of ids) jobs.deliver(snapshot(1, { id }));
  assert.ok(jobs.latest(ids[0] ?? ""), "a watched job is kept");
  assert.equal(jobs.latest(ids[1] ?? ""), undefined);
  assert.ok(jobs.latest(ids[4] ?? ""));
});

test("a reset replaces a higher seq (the store went back); later seqs count from it", () => {
  const { book: jobs } = book();
  const watched: number[] = [];
  const mine: number[] = [];
  jobs.addWatch(JOB_ID, (job) => watched.push(job.seq));
  jobs.addMine((job) => mine.push(job.seq));
  jobs.deliver(snapshot(5));
  assert.equal(jobs.deliver(snapshot(1_000_000_000)), "accepted"); // a forged seq
  assert.equal(jobs.deliver(snapshot(6)), "ignored", "without a reset the rule is unchanged");
  assert.equal(jobs.deliver(snapshot(6), true), "accepted");
  assert.equal(jobs.latest(JOB_ID)?.seq, 6);
  assert.deepEqual(jobs.cursors(), [{ id: JOB_ID, seq: 6 }], "resubscribes from the store's seq");
  assert.equal(jobs.deliver(snapshot(6)), "ignored");
  assert.equal(jobs.deliver(snapshot(7)), "accepted");
  assert.equal(jobs.deliver(snapshot(8, { status: "succeeded" })), "ended");
  assert.deepEqual(watched, [5, 1_000_000_000, 6, 7, 8]);
  assert.deepEqual(mine, [5, 1_000_000_000, 6, 7, 8]);
});

test("a reset repeating the version the client has is a duplicate; one of an unknown job is plain", () => {
  const { book: jobs } = book();
  const seen: string[] = [];
  jobs.addWatch(JOB_ID, (job) => seen.push(`${job.seq}:${job.progress}`));
  assert.equal(jobs.deliver(snapshot(3), true), "accepted");
  assert.equal(jobs.deliver(snapshot(3), true), "ignored");
  jobs.deliver(snapshot(9));
  assert.equal(jobs.deliver(snapshot(4), true), "accepted");
  assert.equal(jobs.deliver(snapshot(4), true), "ignored", "resync and resubscribe both sent it");
  // The store lost a write and took another at the same seq: a different version, taken.
  const other = snapshot(4, { progress: 40, updated_at: "2026-11-23T16:00:01.000Z" });
  assert.equal(jobs.deliver(other, true), "accepted");
  assert.deepEqual(seen, ["3:3", "9:9", "4:4", "4:40"]);
});

test("a terminal reset ends the watch once", () => {
  const { book: jobs } = book();
  const seen: string[] = [];
  jobs.addWatch(JOB_ID, (job) => seen.push(`${job.seq}:${job.status}`));
  jobs.deliver(snapshot(1_000_000_000));
  assert.equal(jobs.deliver(snapshot(7, { status: "failed" }), true), "ended");
  assert.equal(jobs.deliver(snapshot(7, { status: "failed" }), true), "ignored");
  assert.equal(jobs.watching(JOB_ID), false);
  assert.deepEqual(seen, ["1000000000:running", "7:failed"]);
});
