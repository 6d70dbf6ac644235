#!/usr/bin/env node
// Socket.IO load generator for bench/peer_socketio.py: many socket.io-client clients in one
// Node process, the counterpart of bench/loadgen/loadgen.js (which speaks progress-gateway's
// protocol over `ws`).
//
// Every client is `io(url, {transports: ["websocket"], forceNew: true})` (its own Manager and
// engine.io connection, no polling, no compression), emits `subscribe` with its job id and waits
// for the ack. Each `update` event is timestamped on receipt.
//
// Driven over stdin/stdout with bench/loadgen/loadgen.js's protocol (the subset the peer
// benchmark uses), so fanout.py's Agent and Bench helpers drive it unchanged:
//   {"cmd":"open","url":"http://127.0.0.1:P","clients":[["<token>",["<job id>",…]],…],
//    "concurrency":16,"local_addresses":["127.0.0.1",…]}
//        connect every client (at most `concurrency` handshakes in flight), subscribe each to its
//        jobs; answers {"ev":"opened",…} once every client has its ack (or has given up). The
//        token is ignored (the peer server has no authentication).
//   {"cmd":"reset","samples":bool}  zero the counters and the histogram, start recording.
//   {"cmd":"stats"}      {"ev":"stats",…}: updates received, latency histogram, open sockets.
//   {"cmd":"clock"}      {"ev":"clock","ns":…}
//   {"cmd":"exit"}
//
// Latency: the publisher puts its CLOCK_REALTIME in ns at the start of the snapshot's
// "message"; a client subtracts it from its own. Date.now() only has ms resolution, so the
// process calibrates once, as bench/loadgen/loadgen.js does: it spins until Date.now() ticks to
// a new millisecond and pins performance.now() (monotonic, sub-µs) to that instant.
//
// Unlike bench/loadgen/loadgen.js, which finds the timestamp in the raw frame without parsing
// it, socket.io-client decodes every packet (engine.io + socket.io-parser, a JSON.parse of the
// frame) before the handler sees the snapshot: that is the library's client cost, on core 1.
//
// `--client raw`: the same connections made with `ws` alone, speaking Engine.IO 4 / Socket.IO 5
// over the WebSocket as socket.io-client does (GET /socket.io/?EIO=4&transport=websocket; open
// packet `0{…}`; `40` connect, `40{"sid":…}`; `42N["subscribe",job]` → ack `43N[…]`; ping `2` →
// pong `3`; updates `42["update",{…}]`). The server sees the same frames; the client reads the
// timestamp from the raw frame without a JSON parse, as bench/loadgen/loadgen.js does, so the
// load generators cost what fanout.py's cost and core 1 does not run out first.
"use strict";

const readline = require("node:readline");
const { performance, PerformanceObserver } = require("node:perf_hooks");
const { io } = require("socket.io-client");
const WebSocket = require("ws");

const CLIENT_KIND = process.argv.includes("--client")
  ? process.argv[process.argv.indexOf("--client") + 1]
  : "socketio";
if (!["socketio", "raw"].includes(CLIENT_KIND)) throw new Error(`unknown --client ${CLIENT_KIND}`);

// -- clock (as bench/loadgen/loadgen.js) ----------------------------------------------------------

function calibrate() {
  let best = -Infinity;
  for (let i = 0; i < 5; i++) {
    const start = Date.now();
    let now;
    let mono;
    do {
      now = Date.now();
      mono = performance.now();
    } while (now === start);
    const offset = now * 1e6 - mono * 1e6;
    if (offset > best) best = offset;
  }
  return best;
}

const CLOCK_OFFSET_NS = calibrate();
const nowNs = () => CLOCK_OFFSET_NS + performance.now() * 1e6;

// -- histogram (as bench/loadgen/loadgen.js): exact below 2048 µs, then 1/1024 relative ---------

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

// Every latency with its 100 ms slot, in typed arrays (outside V8's heap), as loadgen.js keeps.
class Samples {
  constructor(capacity = 1 << 18) {
    this.slots = new Float64Array(capacity);
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

// -- state ---------------------------------------------------------------------------------------

let url = "";
let localAddresses = ["127.0.0.1"];
let clients = [];
let recording = false;
let latency = new Histogram();
let timeline = new Map();
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
let samples = new Samples();
let keepSamples = false;
let updates = 0;
let updateBytes = 0;
let frameBytes = 0; // the WebSocket payload of one update, measured on the first one
let errorsReceived = 0;
let openSockets = 0;
let closesSeen = 0;
const failures = {};

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function fail(reason) {
  failures[reason] = (failures[reason] || 0) + 1;
}

function onUpdate(client, snapshot) {
  if (!recording || !client.acked) return;
  const received = nowNs();
  updates++;
  if (frameBytes === 0) {
    // What the server sent: engine.io "4" (message) + socket.io "2" (event) + the JSON array.
    frameBytes = 2 + Buffer.byteLength(JSON.stringify(["update", snapshot]));
  }
  updateBytes += frameBytes;
  const message = snapshot && snapshot.message;
  if (typeof message !== "string") return;
  let ns = 0;
  let digits = 0;
  for (let i = 0; i < message.length; i++) {
    const c = message.charCodeAt(i);
    if (c < 48 || c > 57) break;
    ns = ns * 10 + (c - 48);
    digits++;
  }
  if (digits >= 18) {
    const us = (received - ns) / 1000;
    latency.record(us);
    const slot = Math.floor(received / 1e8);
    const worst = timeline.get(slot);
    if (worst === undefined || us > worst) timeline.set(slot, us);
    if (keepSamples) samples.push(slot, us);
  }
}

class Client {
  constructor(index, jobs) {
    this.index = index;
    this.jobs = jobs;
    this.socket = null;
    this.acked = false;
    this.onAck = null; // called once, when every job is acked (or the client gave up)
    this.openRetries = 0;
    this.counted = false;
  }

  connect() {
    this.acked = false;
    const socket = io(url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      perMessageDeflate: false,
      localAddress: localAddresses[this.index % localAddresses.length],
      timeout: 60000,
    });
    this.socket = socket;
    socket.on("connect", () => {
      openSockets++;
      this.counted = true;
      let waiting = this.jobs.length;
      for (const jobId of this.jobs) {
        socket.emit("subscribe", jobId, (reply) => {
          if (!reply || reply.ok !== true) {
            errorsReceived++;
            fail("subscribe_refused");
          }
          if (--waiting === 0) {
            this.acked = true;
            const cb = this.onAck;
            this.onAck = null;
            if (cb) cb(true);
          }
        });
      }
    });
    socket.on("update", (snapshot) => onUpdate(this, snapshot));
    socket.on("connect_error", (err) => {
      if (this.socket !== socket) return;
      fail(`connect_error_${String(err.message).slice(0, 40)}`);
      this.retryOrGiveUp();
    });
    socket.on("disconnect", (reason) => {
      if (this.socket !== socket) return;
      closesSeen++;
      if (this.counted) openSockets--;
      this.counted = false;
      if (this.acked) {
        fail(`closed_${reason.replace(/ /g, "_")}`);
        this.acked = false;
        return;
      }
      this.retryOrGiveUp();
    });
  }

  disconnect(socket = this.socket) {
    if (socket) socket.close();
  }

  retryOrGiveUp() {
    if (!this.onAck) return;
    if (this.openRetries < 5) {
      // The handshake failed (e.g. a reset from a full accept queue): retry like a client.
      this.openRetries++;
      retries++;
      const old = this.socket;
      this.socket = null; // its late events are ignored from now on
      this.disconnect(old);
      setTimeout(() => this.connect(), Math.random() * Math.min(2000, 100 * 2 ** this.openRetries));
      return;
    }
    fail("open_failed");
    const cb = this.onAck;
    this.onAck = null;
    cb(false);
  }
}

let retries = 0;

// -- raw Engine.IO/Socket.IO over ws ---------------------------------------------------------------

const MESSAGE_MARK = Buffer.from('"message":"');
const CH_0 = 48; // "0": engine.io open / socket.io connect
const CH_2 = 50; // "2": engine.io ping / socket.io event
const CH_3 = 51; // "3": socket.io ack
const CH_4 = 52; // "4": engine.io message

function onRawUpdate(client, data) {
  if (!recording || !client.acked) return;
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
    const slot = Math.floor(received / 1e8);
    const worst = timeline.get(slot);
    if (worst === undefined || us > worst) timeline.set(slot, us);
    if (keepSamples) samples.push(slot, us);
  }
}

class RawClient extends Client {
  connect() {
    this.acked = false;
    const base = url.replace(/^http/, "ws");
    const ws = new WebSocket(`${base}/socket.io/?EIO=4&transport=websocket`, {
      perMessageDeflate: false,
      localAddress: localAddresses[this.index % localAddresses.length],
      handshakeTimeout: 60000,
      skipUTF8Validation: true,
    });
    this.socket = ws;
    let waiting = 0;
    ws.on("message", (data, isBinary) => {
      if (isBinary || data.length === 0) return;
      const c0 = data[0];
      if (c0 === CH_4) {
        const c1 = data[1];
        if (c1 === CH_2) return onRawUpdate(this, data);
        if (c1 === CH_3) {
          // 43<id>[{"ok":true}]
          if (data.indexOf('"ok":true') < 0) {
            errorsReceived++;
            fail("subscribe_refused");
          }
          if (--waiting === 0 && !this.acked) {
            this.acked = true;
            const cb = this.onAck;
            this.onAck = null;
            if (cb) cb(true);
          }
          return;
        }
        if (c1 === CH_0) {
          // 40{"sid":…}: connected to the namespace; subscribe to every job, each with an ack id.
          openSockets++;
          this.counted = true;
          waiting = this.jobs.length;
          this.jobs.forEach((jobId, i) => ws.send(`42${i}${JSON.stringify(["subscribe", jobId])}`));
          return;
        }
        if (data[1] === 52) fail("connect_error"); // 44: namespace connect error
        return;
      }
      if (c0 === CH_2) {
        ws.send("3"); // pong
        return;
      }
      if (c0 === CH_0) {
        ws.send("40"); // engine.io open → connect to the "/" namespace
      }
    });
    ws.on("error", (err) => fail(err.code || String(err.message).slice(0, 40)));
    ws.on("close", (code) => {
      if (this.socket !== ws) return;
      closesSeen++;
      if (this.counted) openSockets--;
      this.counted = false;
      if (this.acked) {
        fail(`closed_${code}`);
        this.acked = false;
        return;
      }
      this.retryOrGiveUp();
    });
  }

  disconnect(socket = this.socket) {
    if (socket) socket.terminate();
  }
}

// -- commands ------------------------------------------------------------------------------------

function open(cmd) {
  url = cmd.url;
  if (cmd.local_addresses && cmd.local_addresses.length) localAddresses = cmd.local_addresses;
  const base = clients.length;
  const Kind = CLIENT_KIND === "raw" ? RawClient : Client;
  const fresh = cmd.clients.map(([, jobs], i) => new Kind(base + i, jobs));
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
            retries,
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
    subscribe_retries: 0,
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
    case "clock":
      send({ ev: "clock", ns: nowNs() });
      break;
    case "exit":
      for (const client of clients) client.disconnect();
      send({ ev: "bye" });
      setTimeout(() => process.exit(0), 50);
      break;
    default:
      send({ ev: "error", message: `unknown command ${cmd.cmd}` });
  }
});
rl.on("close", () => process.exit(0));
send({ ev: "hello", pid: process.pid, clock_offset_ns: CLOCK_OFFSET_NS, client: CLIENT_KIND });
