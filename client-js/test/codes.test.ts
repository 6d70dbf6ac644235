import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { CloseCode, ErrorCode, reactionTo } from "../src/codes.js";
import { REPO_ROOT } from "./support/processes.js";

function pythonTable(source: string, className: string): Map<string, string> {
  const body = source.split(`class ${className}`)[1]?.split(/\nclass /)[0] ?? "";
  const table = new Map<string, string>();
  for (const match of body.matchAll(/^\s+([A-Z_]+) = ("?[\w]+"?)/gm)) {
    table.set(match[1] ?? "", (match[2] ?? "").replaceAll('"', ""));
  }
  return table;
}

test("codes.ts mirrors core/progress_core/codes.py", () => {
  const source = readFileSync(join(REPO_ROOT, "gateway", "codes.py"), "utf8");
  const close = pythonTable(source, "CloseCode");
  const errors = pythonTable(source, "ErrorCode");
  assert.ok(close.size >= 7 && errors.size >= 8, "parsed the Python tables");
  assert.deepEqual(
    Object.fromEntries(Object.entries(CloseCode).map(([name, value]) => [name, String(value)])),
    Object.fromEntries(close),
  );
  assert.deepEqual({ ...ErrorCode }, Object.fromEntries(errors));
});

test("each close code has the reaction written beside it in codes.py", () => {
  assert.equal(reactionTo(CloseCode.NORMAL), "stop");
  assert.equal(reactionTo(CloseCode.GOING_AWAY), "reconnect_now");
  assert.equal(reactionTo(CloseCode.POLICY), "back_off");
  assert.equal(reactionTo(CloseCode.TOO_LARGE), "back_off");
  assert.equal(reactionTo(CloseCode.UNAUTHORIZED), "refresh_token");
  assert.equal(reactionTo(CloseCode.AUTH_TIMEOUT), "back_off");
  assert.equal(reactionTo(CloseCode.TOO_MANY_CONNECTIONS), "back_off_longer");
  assert.equal(reactionTo(1006), "back_off");
});
