#!/usr/bin/env node
// The peer for bench/peer_socketio.py: a Socket.IO 4 server with the Redis adapter.
//
//   node server.js --port P --redis redis://127.0.0.1:R/0
//
// WebSocket transport only, no compression (perMessageDeflate and httpCompression off), the
// Redis adapter with its own pub and sub clients (node-redis 4, as the adapter's docs show).
// A client emits `subscribe` with a job id and an ack callback; the server joins the socket to
// the room named after the job and acks. Nothing else happens per message: updates reach the
// server through the adapter's Redis subscription (published by @socket.io/redis-emitter) and
// are broadcast to the room by the adapter.
//
// stdout, one JSON object per line: {"ev":"ready","port":P,"pid":…} once listening and
// subscribed to Redis. stdin: {"cmd":"stats"} answers {"ev":"stats",…} (sockets, memory);
// {"cmd":"gc"} the same after a full garbage collection (when started with --expose-gc);
// {"cmd":"exit"} (or EOF) closes everything and exits.
"use strict";

const http = require("node:http");
const readline = require("node:readline");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

function arg(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : fallback;
}

const port = Number(arg("port", "3000"));
const redisUrl = arg("redis", "redis://127.0.0.1:6379/0");

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function main() {
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  for (const client of [pubClient, subClient]) {
    client.on("error", (err) => process.stderr.write(`server: redis error: ${err.message}\n`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    transports: ["websocket"],
    perMessageDeflate: false,
    httpCompression: false,
    serveClient: false,
    adapter: createAdapter(pubClient, subClient),
  });

  let subscribes = 0;
  io.on("connection", (socket) => {
    socket.on("subscribe", (jobId, ack) => {
      socket.join(String(jobId));
      subscribes++;
      if (typeof ack === "function") ack({ ok: true });
    });
  });

  await new Promise((resolve) => httpServer.listen(port, "127.0.0.1", resolve));
  send({ ev: "ready", port, pid: process.pid, node: process.version });

  const shutdown = async () => {
    io.close();
    await Promise.allSettled([pubClient.quit(), subClient.quit()]);
    process.exit(0);
  };
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    if (cmd.cmd === "stats" || cmd.cmd === "gc") {
      // "gc" (needs node --expose-gc): a full collection first, so RSS holds live data only.
      if (cmd.cmd === "gc" && typeof global.gc === "function") global.gc();
      const mem = process.memoryUsage();
      send({
        ev: "stats",
        sockets: io.of("/").sockets.size,
        rooms: io.of("/").adapter.rooms.size,
        subscribes,
        gc: cmd.cmd === "gc" && typeof global.gc === "function",
        rss: mem.rss,
        heap_used: mem.heapUsed,
        external: mem.external,
        array_buffers: mem.arrayBuffers,
      });
    } else if (cmd.cmd === "exit") {
      shutdown();
    } else {
      send({ ev: "error", message: `unknown command ${cmd.cmd}` });
    }
  });
  rl.on("close", shutdown);
}

main().catch((err) => {
  process.stderr.write(`server: ${err.stack || err}\n`);
  process.exit(1);
});
