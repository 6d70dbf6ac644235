#!/usr/bin/env node
// Publisher for bench/peer_socketio.py: job snapshots broadcast with @socket.io/redis-emitter.
//
//   node publisher.js --redis redis://127.0.0.1:R/0 --snapshot-bytes 300 --inflight 20000
//
// Each update is `emitter.to(jobId).emit("update", snapshot)`: the emitter msgpack-encodes the
// packet and PUBLISHes it on the room's channel (socket.io#/#<job id>#), where the server's
// Redis adapter picks it up. A snapshot has the fields of progress-gateway's Job (id, owner,
// kind, status "running", progress, stage, message, seq, …, ISO timestamps), ~300 bytes as JSON;
// its `message` starts with the publish time in ns (CLOCK_REALTIME) followed by padding, as
// bench/fanout.py's publisher builds it.
//
// Clock: bench/loadgen/common.js's, calibrated to CLOCK_REALTIME as the load generators' is; the
// command plumbing is common.js's too.
//
// Commands (stdin, one JSON object per line), answers on stdout (the protocol of fanout.py's
// Python publisher, so the orchestrator drives both alike):
//   {"cmd":"run","jobs":[…],"rate":R,"seconds":S}  R updates/s round-robin over the jobs for S s;
//        answers {"ev":"ran","issued","seconds","rate","target","behind","worst_backlog",…}
//        once every PUBLISH issued has been answered by Redis.
//   {"cmd":"once","jobs":[…]}  one update per job, as fast as allowed; {"ev":"once",…}
//   {"cmd":"exit"}
"use strict";

const { performance } = require("node:perf_hooks");
const { Emitter } = require("@socket.io/redis-emitter");
const { createClient } = require("redis");
const common = require("../../loadgen/common.js");

function arg(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : fallback;
}

const redisUrl = arg("redis", "redis://127.0.0.1:6379/0");
const snapshotBytes = Number(arg("snapshot-bytes", "300"));
// PUBLISHes sent but not yet answered by Redis, at most: a publisher that cannot keep up falls
// behind (and says so) instead of queueing without bound in the client.
const inflightLimit = Number(arg("inflight", "20000"));

const nowNs = () => Math.round(common.nowNs());
const send = common.send;

// -- snapshots -----------------------------------------------------------------------------------

const created = new Date().toISOString();
const seqs = new Map();
let pad = null;
let snapshotLength = 0;

function snapshot(jobId, seq, message, now) {
  // The field order of progress-gateway's Job model.
  return {
    id: jobId,
    owner: "bench-owner",
    kind: "export",
    status: "running",
    progress: 50.0,
    stage: null,
    message,
    seq,
    attempt: 1,
    created_at: created,
    updated_at: now,
    heartbeat_at: now,
    executor: null,
    call_id: null,
    params: {},
    result: null,
    error: null,
    cancel_requested: false,
  };
}

function padding(jobId) {
  // Characters after the timestamp so the snapshot's JSON is ~snapshotBytes (fanout.py's
  // message_filler does the same against the stored snapshot).
  const bare = JSON.stringify(snapshot(jobId, 1, "1700000000000000000", created)).length;
  const filler = Math.max(0, snapshotBytes - bare - 1);
  return filler > 0 ? " " + "x".repeat(filler - 1) : "";
}

// -- publishing ----------------------------------------------------------------------------------

let pending = 0;
let errors = 0;
let drained = null;

async function main() {
  const client = createClient({ url: redisUrl });
  client.on("error", (err) => process.stderr.write(`publisher: redis error: ${err.message}\n`));
  await client.connect();
  // The emitter calls publish() and drops the promise; count the replies to bound what is in
  // flight and to know when every update has reached Redis.
  const counting = {
    publish(channel, message) {
      pending++;
      return client.publish(channel, message).then(settled, (err) => {
        errors++;
        if (errors <= 5) process.stderr.write(`publisher: ${err.message}\n`);
        settled();
      });
    },
  };
  const emitter = new Emitter(counting);

  function settled() {
    pending--;
    if (pending === 0 && drained) {
      const done = drained;
      drained = null;
      done();
    }
  }

  const allSettled = () =>
    pending === 0 ? Promise.resolve() : new Promise((resolve) => (drained = resolve));

  function publishOne(jobId) {
    if (pad === null) {
      pad = padding(jobId);
      snapshotLength = JSON.stringify(snapshot(jobId, 2, `${nowNs()}${pad}`, created)).length;
    }
    const seq = (seqs.get(jobId) || 1) + 1;
    seqs.set(jobId, seq);
    const message = `${nowNs()}${pad}`;
    const now = new Date().toISOString();
    emitter.to(jobId).emit("update", snapshot(jobId, seq, message, now));
  }

  function paced(jobs, rate, seconds) {
    return new Promise((resolve) => {
      const started = performance.now();
      let issued = 0;
      let index = 0;
      let worstBacklog = 0;
      const tick = () => {
        const elapsed = (performance.now() - started) / 1000;
        if (elapsed >= seconds) {
          allSettled().then(() => {
            const wall = (performance.now() - started) / 1000;
            resolve({
              ev: "ran",
              issued,
              seconds: wall,
              rate: issued / wall,
              target: rate,
              behind: Math.max(0, Math.floor(rate * wall) - issued),
              worst_backlog: worstBacklog,
              errors,
              snapshot_bytes: snapshotLength,
            });
          });
          return;
        }
        const due = Math.floor(rate * elapsed) + 1;
        while (issued < due && pending < inflightLimit) {
          publishOne(jobs[index]);
          index = (index + 1) % jobs.length;
          issued++;
        }
        worstBacklog = Math.max(worstBacklog, due - issued);
        // At least 1 ms (timer resolution); sooner when behind.
        const ahead = (issued / rate - elapsed) * 1000;
        setTimeout(tick, Math.max(1, Math.min(10, ahead)));
      };
      tick();
    });
  }

  async function once(jobs) {
    const started = performance.now();
    for (const jobId of jobs) {
      publishOne(jobId);
      if (pending >= inflightLimit) await allSettled();
    }
    await allSettled();
    return { ev: "once", issued: jobs.length, seconds: (performance.now() - started) / 1000, errors };
  }

  // Commands run one after another, in order.
  common.serve(
    {
      run: async (cmd) => send(await paced(cmd.jobs, cmd.rate, cmd.seconds)),
      once: async (cmd) => send(await once(cmd.jobs)),
      exit: async () => {
        await client.quit();
        send({ ev: "bye" });
        process.exit(0);
      },
    },
    { serial: true },
  );
}

main().catch((err) => {
  process.stderr.write(`publisher: ${err.stack || err}\n`);
  process.exit(1);
});
