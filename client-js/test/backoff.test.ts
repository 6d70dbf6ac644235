import assert from "node:assert/strict";
import { test } from "node:test";
import { backoff, DEFAULT_BACKOFF, smallJitter } from "../src/backoff.js";

test("full jitter: the delay is random * min(max, min * 2^attempt)", () => {
  assert.equal(
    backoff(0, 500, 20_000, () => 1),
    500,
  );
  assert.equal(
    backoff(1, 500, 20_000, () => 1),
    1000,
  );
  assert.equal(
    backoff(3, 500, 20_000, () => 1),
    4000,
  );
  assert.equal(
    backoff(3, 500, 20_000, () => 0.5),
    2000,
  );
  assert.equal(
    backoff(3, 500, 20_000, () => 0),
    0,
  );
});

test("the delay is capped at maxMs, however many attempts", () => {
  assert.equal(
    backoff(6, 500, 20_000, () => 1),
    20_000,
  );
  assert.equal(
    backoff(1_000, 500, 20_000, () => 1),
    20_000,
  );
  assert.equal(
    backoff(Number.POSITIVE_INFINITY, 500, 20_000, () => 1),
    500,
  );
});

test("bad attempts count as the first", () => {
  assert.equal(
    backoff(-3, 500, 20_000, () => 1),
    500,
  );
  assert.equal(
    backoff(Number.NaN, 500, 20_000, () => 1),
    500,
  );
});

test("a random source outside [0, 1] cannot leave the bounds", () => {
  assert.equal(
    backoff(2, 500, 20_000, () => 7),
    2000,
  );
  assert.equal(
    backoff(2, 500, 20_000, () => -1),
    0,
  );
});

test("jitter is drawn per attempt, never fixed", () => {
  const delays = new Set<number>();
  for (let i = 0; i < 50; i += 1) delays.add(backoff(5, DEFAULT_BACKOFF.minMs, DEFAULT_BACKOFF.maxMs));
  assert.ok(delays.size > 10, `50 draws gave only ${delays.size} distinct delays`);
  for (const delay of delays) assert.ok(delay >= 0 && delay <= 16_000);
});

test("the ceiling grows exponentially from 0.5 s to 20 s by default", () => {
  const ceilings = [0, 1, 2, 3, 4, 5, 6, 7].map((attempt) =>
    backoff(attempt, DEFAULT_BACKOFF.minMs, DEFAULT_BACKOFF.maxMs, () => 1),
  );
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 16_000, 20_000, 20_000]);
});

test("smallJitter spreads a 1001 reconnect over at most a second", () => {
  assert.equal(
    smallJitter(1000, () => 0),
    0,
  );
  assert.equal(
    smallJitter(1000, () => 1),
    1000,
  );
  for (let i = 0; i < 20; i += 1) {
    const delay = smallJitter();
    assert.ok(delay >= 0 && delay <= 1000);
  }
});
