#!/usr/bin/env node
// WebSocket load generator for bench/fanout.py: many `ws` clients in one Node process.
//
// Driven over stdin/stdout, one JSON object per line. Commands (stdin):
//   {"cmd":"open","url":"ws://127.0.0.1:P/ws","clients":[["<token>",["<job id>",…]],…],
//    "concurrency":200,"local_addresses":["127.0.0.1",…]}
//        connect every client (at most `concurrency` handshakes in flight), subscribe each to its
//        jobs; answers {"ev":"opened",…} once every client has its ack (or has given up).
//   {"cmd":"reset"}      zero the counters and the latency histogram, start recording latencies.
//   {"cmd":"stats"}      {"ev":"stats",…}: updates received, latency histogram, open sockets.
//   {"cmd":"storm"}      drop every socket at once (TCP reset, no close frame) and reconnect at
//                        once; answers {"ev":"storm",…} when every client has its ack again.
//   {"cmd":"expect_restart"}  reconnect (with backoff) whenever the server closes a socket, and
//                        answer {"ev":"storm",…} once every client is subscribed again.
//   {"cmd":"clock"}      {"ev":"clock","ns":…}: this process's wall clock, to check calibration.
//   {"cmd":"exit"}
//
// Latency: the publisher puts time.time_ns() (CLOCK_REALTIME) at the start of the snapshot's
// "message"; a client computes receive - publish with the same clock, calibrated once at start
// (common.js: the clock, histogram, samples, recorder and the command plumbing, shared with the
// Socket.IO peer's load generator and publisher in bench/peers/socketio).
"use strict";

const WebSocket = require("ws");
const common = require("./common.js");
const { nowNs, Histogram, Recorder, send, bye, serve } = common;
const { failures, fail, clients, target, localAddress, openClients } = common;

// -- state ---------------------------------------------------------------------------------------

const UPDATE_PREFIX = Buffer.from('{"op":"update"');
const ACK_MARK = Buffer.from('"op":"ack"');
const ERROR_PREFIX = Buffer.from('{"op":"error"');

const rec = new Recorder();
let openSockets = 0;
let closesSeen = 0;

// Reconnect bookkeeping (storm / restart).
let reconnecting = false;
let pendingReconnect = 0;
let reconnectTimes = new Histogram();
let lastAckNs = 0;
let retries = 0;
let subscribeRetries = 0;
let stormDone = null;

class Client {
  constructor(index, token, jobs) {
    this.index = index;
    this.token = token;
    this.jobs = jobs;
    this.ws = null;
    this.acked = false;
    this.startedNs = 0;
    this.onAck = null; // called once per (re)subscription
    this.attempts = 0;
    this.subscribeFailed = false;
    this.subscribeAttempts = 0;
    this.openRetries = 0;
    this.subscribeFrame = JSON.stringify({ op: "subscribe", ref: "s", jobs: jobs.map((id) => ({ id })) });
  }

  connect() {
    this.acked = false;
    this.subscribeFailed = false;
    const ws = new WebSocket(`${target.url}?token=${this.token}`, {
      perMessageDeflate: false,
      localAddress: localAddress(this.index),
      handshakeTimeout: 60000,
      // The server is ours and sends JSON text; skipping validation keeps the client cheap.
      skipUTF8Validation: true,
    });
    this.ws = ws;
    ws.on("open", () => {
      openSockets++;
      ws.send(this.subscribeFrame);
    });
    ws.on("message", (data, isBinary) => this.onMessage(data, isBinary));
    ws.on("error", (err) => fail(err.code || err.message.slice(0, 60)));
    ws.on("close", (code) => {
      if (this.ws !== ws) return; // an old socket dropped on purpose, already uncounted
      closesSeen++;
      if (ws._pgwCounted) openSockets--;
      this.onClose(code);
    });
    ws.once("open", () => {
      ws._pgwCounted = true;
    });
  }

  onMessage(data, isBinary) {
    if (isBinary) return;
    if (data.compare(UPDATE_PREFIX, 0, UPDATE_PREFIX.length, 0, UPDATE_PREFIX.length) === 0) {
      if (rec.recording && this.acked) rec.frame(data);
      return;
    }
    if (!this.acked && data.indexOf(ACK_MARK) >= 0) {
      if (this.subscribeFailed) {
        // The server could not subscribe us (e.g. store_unavailable): retry like a client
        // would, after a jittered backoff, on the same connection.
        this.subscribeFailed = false;
        subscribeRetries++;
        this.subscribeAttempts++;
        const delay = Math.random() * Math.min(2000, 50 * 2 ** this.subscribeAttempts);
        const ws = this.ws;
        setTimeout(() => {
          if (this.ws === ws && ws.readyState === WebSocket.OPEN) ws.send(this.subscribeFrame);
        }, delay);
        return;
      }
      this.subscribeAttempts = 0;
      this.acked = true;
      this.attempts = 0;
      const cb = this.onAck;
      this.onAck = null;
      if (cb) cb();
      return;
    }
    if (data.compare(ERROR_PREFIX, 0, ERROR_PREFIX.length, 0, ERROR_PREFIX.length) === 0) {
      rec.errors++;
      const code = /"code":"([a-z_]+)"/.exec(data.toString());
      fail(`error_${code ? code[1] : "unknown"}`);
      if (!this.acked) this.subscribeFailed = true;
      if (rec.errors <= 3) process.stderr.write(`loadgen: server error frame: ${data}\n`);
    }
  }

  onClose(code) {
    if (this.acked && !reconnecting) {
      fail(`closed_${code}`);
      return;
    }
    if (!this.acked && this.onAck && !reconnecting && this.openRetries < 5) {
      // The handshake failed (e.g. a reset from a full accept queue): retry like a client.
      this.openRetries++;
      fail(`open_retry_${code}`);
      setTimeout(() => this.connect(), Math.random() * Math.min(2000, 100 * 2 ** this.openRetries));
      return;
    }
    if (!this.acked && this.onAck && !reconnecting) {
      // Failed during the initial open, five times: give up on this client, count it.
      fail(`open_failed_${code}`);
      const cb = this.onAck;
      this.onAck = null;
      cb(false);
      return;
    }
    if (reconnecting) {
      // First reconnect at once (the server said nothing about backing off); after a failed
      // attempt, full jitter up to an exponentially growing cap (50 ms · 2^n, at most 2 s).
      this.acked = false;
      if (this.attempts > 0) retries++;
      const delay = this.attempts === 0 ? 0 : Math.random() * Math.min(2000, 50 * 2 ** this.attempts);
      this.attempts++;
      setTimeout(() => this.reconnect(), delay);
    }
  }

  reconnect() {
    this.onAck = () => {
      const t = nowNs();
      reconnectTimes.record((t - this.startedNs) / 1000);
      if (t > lastAckNs) lastAckNs = t;
      pendingReconnect--;
      if (pendingReconnect === 0 && stormDone) stormDone();
    };
    this.connect();
  }
}

// -- commands ------------------------------------------------------------------------------------

function open(cmd) {
  openClients(cmd, (index, token, jobs) => new Client(index, token, jobs));
}

function stats() {
  rec.stats({
    open: openSockets,
    acked: clients.reduce((n, c) => n + (c.acked ? 1 : 0), 0),
    closes: closesSeen,
    subscribe_retries: subscribeRetries,
  });
}

function beginReconnect(kind) {
  reconnecting = true;
  pendingReconnect = clients.length;
  reconnectTimes = new Histogram();
  lastAckNs = 0;
  retries = 0;
  subscribeRetries = 0;
  const startNs = nowNs();
  stormDone = () => {
    reconnecting = false;
    stormDone = null;
    send({
      ev: "storm",
      kind,
      clients: clients.length,
      start_ns: startNs,
      last_ack_ns: lastAckNs,
      reconnect_us: reconnectTimes.toJSON(),
      retries,
      subscribe_retries: subscribeRetries,
      failures,
    });
  };
  return startNs;
}

function storm() {
  const startNs = beginReconnect("drop");
  for (const client of clients) {
    client.startedNs = startNs;
    client.attempts = 1;
    const old = client.ws;
    // Reconnect at once; the dropped socket's own close event is ignored (this.ws moved on).
    client.reconnect();
    if (old) {
      if (old._pgwCounted) openSockets--;
      old.terminate();
    }
  }
}

function expectRestart() {
  const startNs = beginReconnect("restart");
  for (const client of clients) {
    client.startedNs = startNs;
    client.attempts = 0;
    client.onAck = null;
  }
  // Re-arm each client's reconnect in its close handler: reconnect() sets onAck when it runs.
  send({ ev: "armed", start_ns: startNs });
}

serve({
  open,
  reset: (cmd) => rec.reset(cmd),
  stats,
  storm,
  expect_restart: expectRestart,
  exit: () => {
    for (const client of clients) if (client.ws) client.ws.terminate();
    bye();
  },
});
