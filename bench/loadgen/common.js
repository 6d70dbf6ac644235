// What the benchmarks' Node processes share: bench/loadgen/loadgen.js (progress-gateway's
// protocol over `ws`), and bench/peers/socketio/loadgen.js and publisher.js (the Socket.IO peer of
// bench/peer_socketio.py). Node built-ins only: the two folders have their own node_modules, and
// the peer's files load this one as require("../../loadgen/common.js").
//
//   clock      CLOCK_OFFSET_NS, nowNs(): this process's CLOCK_REALTIME in ns, sub-µs resolution.
//   Histogram  latencies (µs): exact below 2048 µs, then 1/1024 relative precision.
//   Samples    every latency with its 100 ms slot, outside V8's heap.
//   Recorder   the load generators' counters, latency histogram, worst latency and own GC pauses
//              per 100 ms, and the timestamp read from an update ("reset"/"stats").
//   openClients  the "open" command: connect and subscribe a batch of clients, at most
//              `concurrency` handshakes in flight, and answer {"ev":"opened",…}.
//   serve      stdin/stdout plumbing: one JSON command per line in, one JSON event per line out.
//
// Latency: a publisher puts its CLOCK_REALTIME in ns (Python's time.time_ns(), or nowNs() here)
// at the start of the snapshot's "message"; a client computes receive - publish with the same
// clock. Date.now() only has ms resolution, so the process calibrates once, when this module is
// loaded: it spins until Date.now() ticks to a new millisecond and pins performance.now()
// (monotonic, sub-µs) to that instant.
"use strict";

const readline = require("node:readline");
const { performance, PerformanceObserver } = require("node:perf_hooks");

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

// -- what a load generator records -----------------------------------------------------------------

const MESSAGE_MARK = Buffer.from('"message":"');

class Recorder {
  constructor() {
    this.recording = false; // nothing is counted before the first "reset"
    this.clear(false);
    // The load generator's own GC pauses (ms) per 100 ms slot: a pause delays every receive
    // timestamp behind it, so a latency spike that lines up with one is the instrument's, not
    // the server's.
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        const endNs = CLOCK_OFFSET_NS + (entry.startTime + entry.duration) * 1e6;
        const slot = Math.floor(endNs / 1e8);
        this.gcPauses.set(slot, (this.gcPauses.get(slot) || 0) + entry.duration);
        this.gcTotalMs += entry.duration;
      }
    }).observe({ entryTypes: ["gc"] });
  }

  clear(keepSamples) {
    this.latency = new Histogram();
    this.timeline = new Map(); // worst latency (µs) per 100 ms slot
    this.gcPauses = new Map();
    this.gcTotalMs = 0;
    this.samples = new Samples();
    this.keepSamples = keepSamples;
    this.updates = 0;
    this.updateBytes = 0;
    this.errors = 0;
  }

  // The "reset" command: zero the counters and the histogram, start recording.
  reset(cmd) {
    this.clear(Boolean(cmd && cmd.samples));
    this.recording = true;
    send({ ev: "reset" });
  }

  // An update frame as received (a Buffer): count it, and record its latency from the digits
  // that start its "message", found in the raw frame without parsing it.
  frame(data) {
    const received = nowNs();
    this.updates++;
    this.updateBytes += data.length;
    const at = data.indexOf(MESSAGE_MARK);
    if (at < 0) return;
    let end = at + MESSAGE_MARK.length;
    let ns = 0;
    let digits = 0;
    for (let c = data[end]; c >= 48 && c <= 57; c = data[++end]) {
      ns = ns * 10 + (c - 48);
      digits++;
    }
    if (digits >= 18) this.latencyOf(received, ns);
  }

  // An update already decoded (its "message" a string) that came in a frame of `bytes` bytes,
  // received at `received` (nowNs()).
  decoded(message, bytes, received) {
    this.updates++;
    this.updateBytes += bytes;
    if (typeof message !== "string") return;
    let ns = 0;
    let digits = 0;
    for (let i = 0; i < message.length; i++) {
      const c = message.charCodeAt(i);
      if (c < 48 || c > 57) break;
      ns = ns * 10 + (c - 48);
      digits++;
    }
    if (digits >= 18) this.latencyOf(received, ns);
  }

  latencyOf(received, publishedNs) {
    const us = (received - publishedNs) / 1000;
    this.latency.record(us);
    // Worst latency per 100 ms of receive time: shows periodic stalls (GC, resync, …).
    const slot = Math.floor(received / 1e8);
    const worst = this.timeline.get(slot);
    if (worst === undefined || us > worst) this.timeline.set(slot, us);
    if (this.keepSamples) this.samples.push(slot, us);
  }

  // The "stats" answer: these figures, then the load generator's own (`sockets`), then failures.
  stats(sockets) {
    send({
      ev: "stats",
      updates: this.updates,
      update_bytes: this.updateBytes,
      errors: this.errors,
      ...sockets,
      latency_us: this.latency.toJSON(),
      worst_per_100ms: Object.fromEntries(this.timeline),
      gc_ms_per_100ms: Object.fromEntries(this.gcPauses),
      gc_total_ms: this.gcTotalMs,
      samples_per_100ms: this.keepSamples ? this.samples.toJSON() : undefined,
      failures,
    });
  }
}

// -- clients ---------------------------------------------------------------------------------------

const failures = {}; // reason → count, since the process started

function fail(reason) {
  failures[reason] = (failures[reason] || 0) + 1;
}

// Every client of the process, and where the latest "open" told them to connect.
const clients = [];
const target = { url: "", localAddresses: ["127.0.0.1"] };
const localAddress = (index) => target.localAddresses[index % target.localAddresses.length];

// The "open" command: `makeClient(index, token, jobs)` for each of cmd.clients; each client's
// connect() must end in one call of its onAck(success = true). Answers {"ev":"opened",…} with
// `extra()`'s fields once every client is subscribed or has given up.
function openClients(cmd, makeClient, extra = () => ({})) {
  target.url = cmd.url;
  if (cmd.local_addresses && cmd.local_addresses.length) target.localAddresses = cmd.local_addresses;
  const base = clients.length;
  const fresh = cmd.clients.map(([token, jobs], i) => makeClient(base + i, token, jobs));
  for (const client of fresh) clients.push(client);
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
            ...extra(),
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

// -- stdin/stdout ----------------------------------------------------------------------------------

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// The "exit" command's answer: {"ev":"bye"}, then exit once stdout has had a moment.
function bye() {
  send({ ev: "bye" });
  setTimeout(() => process.exit(0), 50);
}

// Read commands from stdin, one JSON object a line, and call handlers[cmd.cmd](cmd) for each
// ("clock" is built in: this process's wall clock, to check calibration). With `serial`, a
// handler's promise settles before the next command starts. Says {"ev":"hello",…} (with
// `hello`'s fields) once listening; exits when stdin closes.
function serve(handlers, { hello = {}, serial = false } = {}) {
  const table = { clock: () => send({ ev: "clock", ns: nowNs() }), ...handlers };
  const dispatch = (cmd) => {
    const handler = table[cmd.cmd];
    if (!handler) return send({ ev: "error", message: `unknown command ${cmd.cmd}` });
    return handler(cmd);
  };
  let chain = Promise.resolve();
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    if (serial) chain = chain.then(() => dispatch(cmd));
    else dispatch(cmd);
  });
  rl.on("close", () => process.exit(0));
  send({ ev: "hello", pid: process.pid, clock_offset_ns: CLOCK_OFFSET_NS, ...hello });
}

module.exports = {
  CLOCK_OFFSET_NS,
  nowNs,
  Histogram,
  Samples,
  Recorder,
  failures,
  fail,
  clients,
  target,
  localAddress,
  openClients,
  send,
  bye,
  serve,
};
