/**
 * Requests that get no answer: a real HTTP server that accepts every request and never answers
 * (a dead connection after a network change looks the same to the client).
 */

import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { after, before, test } from "node:test";
import { HttpApi, HttpError, isAbort } from "../src/http.js";
import { TokenSource } from "../src/token.js";

let server: Server;
let baseUrl: string;

before(async () => {
  server = createServer(() => {
    // never answers
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  baseUrl = `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

test("an unanswered request fails as a retryable network error after requestTimeoutMs", async () => {
  const api = new HttpApi(baseUrl, fetch, new TokenSource("t"), 100);
  await assert.rejects(api.active(), (error: unknown) => {
    assert.ok(error instanceof HttpError, String(error));
    assert.equal(error.status, 0);
    assert.equal(error.code, "network");
    assert.ok(error.retryable);
    assert.match(error.message, /GET \/exports\/active: no answer within 100 ms/);
    return true;
  });
  assert.equal(await api.reachable(), false);
});

test("a long-poll's own timeout replaces the default, and the caller's abort stays an abort", async () => {
  const api = new HttpApi(baseUrl, fetch, new TokenSource("t"), 60_000);
  await assert.rejects(
    api.request("/exports/j1?wait=1", { timeoutMs: 100 }),
    (error: unknown) => error instanceof HttpError && /no answer within 100 ms/.test(error.message),
  );
  const controller = new AbortController();
  const pending = api.request("/exports/j1", { signal: controller.signal });
  controller.abort();
  await assert.rejects(pending, (error: unknown) => isAbort(error));
});
