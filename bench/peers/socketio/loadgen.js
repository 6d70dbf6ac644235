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
// "message"; a client subtracts it from its own, calibrated once at start. The clock, histogram,
// samples, recorder and command plumbing are bench/loadgen/common.js, loadgen.js's own.
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

const { io } = require("socket.io-client");
const WebSocket = require("ws");
const common = require("../../loadgen/common.js");
const { nowNs, Recorder, bye, serve } = common;
const { fail, clients, target, localAddress, openClients } = common;

const CLIENT_KIND = process.argv.includes("--client")
  ? process.argv[process.argv.indexOf("--client") + 1]
  : "socketio";
if (!["socketio", "raw"].includes(CLIENT_KIND)) throw new Error(`unknown --client ${CLIENT_KIND}`);

// -- state ---------------------------------------------------------------------------------------

const rec = new Recorder();
let frameBytes = 0; // the WebSocket payload of one update, measured on the first one
let openSockets = 0;
let closesSeen = 0;
let retries = 0;

function onUpdate(client, snapshot) {
  if (!rec.recording || !client.acked) return;
  const received = nowNs();
  if (frameBytes === 0) {
    // What the server sent: engine.io "4" (message) + socket.io "2" (event) + the JSON array.
    frameBytes = 2 + Buffer.byteLength(JSON.stringify(["update", snapshot]));
  }
  rec.decoded(snapshot && snapshot.message, frameBytes, received);
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
    const socket = io(target.url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      perMessageDeflate: false,
      localAddress: localAddress(this.index),
      timeout: 60000,
    });
    this.socket = socket;
    socket.on("connect", () => {
      openSockets++;
      this.counted = true;
      let waiting = this.jobs.length;
      for (const jobId of this.jobs) {
        socket.emit("subscribe", jobId, (reply) => {
          this.subscribeAcked(Boolean(reply && reply.ok === true), --waiting);
        });
      }
    });
    socket.on("update", (snapshot) => onUpdate(this, snapshot));
    socket.on("connect_error", (err) => {
      if (this.socket !== socket) return;
      fail(`connect_error_${String(err.message).slice(0, 40)}`);
      this.retryOrGiveUp();
    });
    socket.on("disconnect", (reason) => this.closed(socket, reason.replace(/ /g, "_")));
  }

  // One subscribe answered (`ok`: the server joined the room), `waiting` more to come: once
  // every job is acked, the client is subscribed.
  subscribeAcked(ok, waiting) {
    if (!ok) {
      rec.errors++;
      fail("subscribe_refused");
    }
    if (waiting === 0 && !this.acked) {
      this.acked = true;
      const cb = this.onAck;
      this.onAck = null;
      if (cb) cb(true);
    }
  }

  // `socket` closed for `reason`: counted, then retried if it never got subscribed.
  closed(socket, reason) {
    if (this.socket !== socket) return;
    closesSeen++;
    if (this.counted) openSockets--;
    this.counted = false;
    if (this.acked) {
      fail(`closed_${reason}`);
      this.acked = false;
      return;
    }
    this.retryOrGiveUp();
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

// -- raw Engine.IO/Socket.IO over ws ---------------------------------------------------------------

const CH_0 = 48; // "0": engine.io open / socket.io connect
const CH_2 = 50; // "2": engine.io ping / socket.io event
const CH_3 = 51; // "3": socket.io ack
const CH_4 = 52; // "4": engine.io message

class RawClient extends Client {
  connect() {
    this.acked = false;
    const base = target.url.replace(/^http/, "ws");
    const ws = new WebSocket(`${base}/socket.io/?EIO=4&transport=websocket`, {
      perMessageDeflate: false,
      localAddress: localAddress(this.index),
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
        if (c1 === CH_2) {
          if (rec.recording && this.acked) rec.frame(data);
          return;
        }
        if (c1 === CH_3) {
          // 43<id>[{"ok":true}]
          this.subscribeAcked(data.indexOf('"ok":true') >= 0, --waiting);
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
    ws.on("close", (code) => this.closed(ws, code));
  }

  disconnect(socket = this.socket) {
    if (socket) socket.terminate();
  }
}

// -- commands ------------------------------------------------------------------------------------

function open(cmd) {
  const Kind = CLIENT_KIND === "raw" ? RawClient : Client;
  openClients(
    cmd,
    (index, token, jobs) => new Kind(index, jobs),
    () => ({ retries }),
  );
}

function stats() {
  rec.stats({
    open: openSockets,
    acked: clients.reduce((n, c) => n + (c.acked ? 1 : 0), 0),
    closes: closesSeen,
    subscribe_retries: 0,
  });
}

serve(
  {
    open,
    reset: (cmd) => rec.reset(cmd),
    stats,
    exit: () => {
      for (const client of clients) client.disconnect();
      bye();
    },
  },
  { hello: { client: CLIENT_KIND } },
);
