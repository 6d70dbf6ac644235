/**
 * The platform seams accept the real implementations without casts: the browser's WebSocket
 * and EventSource (DOM types), the `ws` package and the `eventsource` package, and fetch.
 * This file fails to compile if one of them stops fitting.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { EventSource as EventSourcePolyfill } from "eventsource";
import NodeWebSocket from "ws";
import type { EventSourceConstructor, FetchLike, WebSocketConstructor } from "../src/types.js";

declare const browserWebSocket: typeof globalThis.WebSocket;
declare const browserEventSource: typeof globalThis.EventSource;

export const seams: Array<[WebSocketConstructor, EventSourceConstructor, FetchLike]> = [
  [NodeWebSocket, EventSourcePolyfill, fetch],
];

export function browserSeams(): [WebSocketConstructor, EventSourceConstructor] {
  return [browserWebSocket, browserEventSource];
}

test("the ws and eventsource packages fit the client's seams", () => {
  assert.equal(seams.length, 1);
});
