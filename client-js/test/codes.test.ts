import assert from "node:assert/strict";
import { test } from "node:test";
import {
  CLOSE_REACTIONS,
  CloseCode,
  ERROR_RULES,
  ErrorCode,
  LocalCloseCode,
  isRetryable,
  reactionTo,
} from "../src/codes.js";

// The generated tables equal core/progress_core/codes.py: tests/test_codes_mirror.py runs
// `scripts/gen_codes.py --check`. These tests pin the client's behaviour on top of them.

test("each close code has its reconnect rule", () => {
  assert.equal(reactionTo(CloseCode.NORMAL), "stop");
  assert.equal(reactionTo(CloseCode.GOING_AWAY), "reconnect_now");
  assert.equal(reactionTo(CloseCode.POLICY), "back_off");
  assert.equal(reactionTo(CloseCode.TOO_LARGE), "back_off");
  assert.equal(reactionTo(CloseCode.INTERNAL_ERROR), "back_off");
  assert.equal(reactionTo(CloseCode.UNAUTHORIZED), "refresh_token");
  assert.equal(reactionTo(CloseCode.AUTH_TIMEOUT), "back_off");
  assert.equal(reactionTo(CloseCode.TOO_MANY_CONNECTIONS), "back_off_longer");
  for (const code of Object.values(CloseCode)) assert.equal(reactionTo(code), CLOSE_REACTIONS[code]);
});

test("a close code outside the table, or the client's own, backs off", () => {
  assert.equal(reactionTo(1006), "back_off");
  assert.equal(reactionTo(4999), "back_off");
  for (const code of Object.values(LocalCloseCode)) assert.equal(reactionTo(code), "back_off");
});

test("only outages and the connection budget are worth retrying", () => {
  const retryable = Object.values(ErrorCode).filter((code) => isRetryable(code));
  assert.deepEqual(retryable.sort(), ["executor_unavailable", "store_unavailable", "too_many_connections"]);
  assert.equal(isRetryable("no_such_code"), false);
  assert.equal(ERROR_RULES[ErrorCode.STORE_UNAVAILABLE].status, 503);
  assert.equal(ERROR_RULES[ErrorCode.JOB_FINISHED].status, 409);
});
