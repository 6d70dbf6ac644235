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
// "message"; a client computes receive - publish with the same clock. Date.now() only has ms
// resolution, so the process calibrates once: it spins until Date.now() ticks to a new
// millisecond and pins performance.now() (monotonic, sub-µs) to that instant.
"use strict";

const readline = require("node:readline");
const { performance, PerformanceObserver } = require("node:perf_hooks");
const WebSocket = require("ws");

// -- clock ---------------------------------------------------------------------------------------

function calibrate() {
  // Several tick edges; keep the earliest-observed offset (least delayed by the spin loop).
  let best = -Infinity;
  for (let i = 0; i < 5; i++) {
    const start = Date.now();
    let now;
    let mono;
    do {
      now = Date.now();
      mono = performance.now();
    } while (now === start);
    // At the edge the wall clock is exactly `now` ms; any delay in observing it makes the
    // offset smaller, so the largest offset seen is the most accurate.
    const offset = now * 1e6 - mono * 1e6;
    if (offset > best) best = offset;
  }
  return best;
}

const CLOCK_OFFSET_NS = calibrate();
const nowNs = () => CLOCK_OFFSET_NS + performance.now() * 1e6;

// -- histogram: exact below 2048 µs, then 1/1024 relative precision ------------------------------

class Histogram {
  constructor() {
    this.counts = new Map();
    this.n = 0;
    this.negative = 0;
    this.max = 0;
  }
  record(us) {
    if (us < 0) {
      this.negative++;
      us = 0;
    }
    let v = Math.floor(us);
    let shift = 0;
    while (v >= 2048) {
      v >>>= 1;
      shift++;
    }
    const key = v * 2 ** shift;
    this.counts.set(key, (this.counts.get(key) || 0) + 1);
    this.n++;
    if (us > this.max) this.max = us;
  }
  toJSON() {
    return { counts: Object.fromEntries(this.counts), n: this.n, negative: this.negative, max: this.max };
  }
}

// -- state ---------------------------------------------------------------------------------------

const UPDATE_PREFIX = Buffer.from('{"op":"update"');
const ACK_MARK = Buffer.from('"op":"ack"');
const ERROR_PREFIX = Buffer.from('{"op":"error"');
const MESSAGE_MARK = Buffer.from('"message":"');

let url = "";
let localAddresses = ["127.0.0.1"];
let clients = [];
let recording = false;
let latency = new Histogram();
let timeline = new Map();
// The load generator's own GC pauses (ms) per 100 ms slot: a pause delays every receive
// timestamp behind it, so a latency spike that lines up with one is the instrument's, not the
// server's.
let gcPauses = new Map();
let gcTotalMs = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const endNs = CLOCK_OFFSET_NS + (entry.startTime + entry.duration) * 1e6;
    const slot = Math.floor(endNs / 1e8);
    gcPauses.set(slot, (gcPauses.get(slot) || 0) + entry.duration);
    gcTotalMs += entry.duration;
  }
}).observe({ entryTypes: ["gc"] });
// Every latency (µs) with its 100 ms slot, when asked to keep them. Typed arrays, grown by
// doubling: their memory is outside V8's heap, so keeping 10^5–10^6 samples does not set off the
// major GCs (10–23 ms pauses) that plain arrays of numbers did in the middle of measuring.
class Samples {
  constructor(capacity = 1 << 18) {
    this.slots = new Float64Array(capacity); // slots since the epoch exceed 2^31
    this.values = new Float32Array(capacity);
    this.n = 0;
  }
  push(slot, us) {
    if (this.n === this.values.length) {
      const slots = new Float64Array(this.n * 2);
      const values = new Float32Array(this.n * 2);
      slots.set(this.slots);
      values.set(this.values);
      this.slots = slots;
      this.values = values;
    }
    this.slots[this.n] = slot;
    this.values[this.n++] = us;
  }
  toJSON() {
    const bySlot = {};
    for (let i = 0; i < this.n; i++) {
      (bySlot[this.slots[i]] ||= []).push(Math.round(this.values[i]));
    }
    return bySlot;
  }
}
let samples = new Samples();
let keepSamples = false;
let updates = 0;
let updateBytes = 0;
let errorsReceived = 0;
let openSockets = 0;
let closesSeen = 0;
const failures = {};

// Reconnect bookkeeping (storm / restart).
let reconnecting = false;
let pendingReconnect = 0;
let reconnectTimes = new Histogram();
let lastAckNs = 0;
let retries = 0;
let subscribeRetries = 0;
let stormDone = null;

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function fail(reason) {
  failures[reason] = (failures[reason] || 0) + 1;
}

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
    const ws = new WebSocket(`${url}?token=${this.token}`, {
      perMessageDeflate: false,
      localAddress: localAddresses[this.index % localAddresses.length],
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
      if (!recording || !this.acked) return;
      const received = nowNs();
      updates++;
      updateBytes += data.length;
      const at = data.indexOf(MESSAGE_MARK);
      if (at < 0) return;
      let end = at + MESSAGE_MARK.length;
      let ns = 0;
      let digits = 0;
      for (let c = data[end]; c >= 48 && c <= 57; c = data[++end]) {
        ns = ns * 10 + (c - 48);
        digits++;
      }
      if (digits >= 18) {
        const us = (received - ns) / 1000;
        latency.record(us);
        // Worst latency per 100 ms of receive time: shows periodic stalls (GC, resync, …).
        const slot = Math.floor(received / 1e8);
        const worst = timeline.get(slot);
        if (worst === undefined || us > worst) timeline.set(slot, us);
        if (keepSamples) {
          samples.push(slot, us);
        }
      }
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
      errorsReceived++;
      const code = /"code":"([a-z_]+)"/.exec(data.toString());
      fail(`error_${code ? code[1] : "unknown"}`);
      if (!this.acked) this.subscribeFailed = true;
      if (errorsReceived <= 3) process.stderr.write(`loadgen: server error frame: ${data}\n`);
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
  url = cmd.url;
  if (cmd.local_addresses && cmd.local_addresses.length) localAddresses = cmd.local_addresses;
  const base = clients.length;
  const fresh = cmd.clients.map(([token, jobs], i) => new Client(base + i, token, jobs));
  clients = clients.concat(fresh);
  const concurrency = cmd.concurrency || 200;
  const started = performance.now();
  let next = 0;
  let inFlight = 0;
  let ok = 0;
  let failed = 0;
  const connectTimes = new Histogram();
  const launch = () => {
    while (inFlight < concurrency && next < fresh.length) {
      const client = fresh[next++];
      inFlight++;
      const t0 = performance.now();
      client.onAck = (success = true) => {
        inFlight--;
        if (success) {
          ok++;
          connectTimes.record((performance.now() - t0) * 1000);
        } else {
          failed++;
        }
        if (ok + failed === fresh.length) {
          send({
            ev: "opened",
            ok,
            failed,
            seconds: (performance.now() - started) / 1000,
            connect_us: connectTimes.toJSON(),
            failures,
          });
        } else {
          launch();
        }
      };
      client.connect();
    }
  };
  if (fresh.length === 0) send({ ev: "opened", ok: 0, failed: 0, seconds: 0, failures });
  launch();
}

function stats() {
  send({
    ev: "stats",
    updates,
    update_bytes: updateBytes,
    errors: errorsReceived,
    open: openSockets,
    acked: clients.reduce((n, c) => n + (c.acked ? 1 : 0), 0),
    closes: closesSeen,
    subscribe_retries: subscribeRetries,
    latency_us: latency.toJSON(),
    worst_per_100ms: Object.fromEntries(timeline),
    gc_ms_per_100ms: Object.fromEntries(gcPauses),
    gc_total_ms: gcTotalMs,
    samples_per_100ms: keepSamples ? samples.toJSON() : undefined,
    failures,
  });
}

function reset(cmd) {
  latency = new Histogram();
  timeline = new Map();
  gcPauses = new Map();
  gcTotalMs = 0;
  samples = new Samples();
  keepSamples = Boolean(cmd && cmd.samples);
  updates = 0;
  updateBytes = 0;
  errorsReceived = 0;
  recording = true;
  send({ ev: "reset" });
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

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  switch (cmd.cmd) {
    case "open":
      open(cmd);
      break;
    case "reset":
      reset(cmd);
      break;
    case "stats":
      stats();
      break;
    case "storm":
      storm();
      break;
    case "expect_restart":
      expectRestart();
      break;
    case "clock":
      send({ ev: "clock", ns: nowNs() });
      break;
    case "exit":
      for (const client of clients) if (client.ws) client.ws.terminate();
      send({ ev: "bye" });
      setTimeout(() => process.exit(0), 50);
      break;
    default:
      send({ ev: "error", message: `unknown command ${cmd.cmd}` });
  }
});
rl.on("close", () => process.exit(0));
send({ ev: "hello", pid: process.pid, clock_offset_ns: CLOCK_OFFSET_NS });
