"""The peer, measured here: Socket.IO 4 with its Redis adapter, by ``bench/fanout.py``'s method.

A script, not a test: it prints numbers and never passes or fails. The project's targets were
derived from figures for Socket.IO on Node with ``@socket.io/redis-adapter``; this measures that
stack on this machine, with the layout, clocks and meters of ``bench/fanout.py`` (see the
``Method`` section of ``docs/performance.md``), so the two can be compared honestly.

Layout (2 cores), as fanout.py's: the Socket.IO server (``bench/peers/socketio/server.js``, one
Node process) runs alone on core 0 (``taskset -c 0``); a private ``redis-server`` on a free port,
the publisher (``publisher.js``: ``@socket.io/redis-emitter``), the load generators
(``loadgen.js``, several processes) and this script run on core 1. CPU is
utime+stime from ``/proc/<pid>/stat`` (every thread of the Node process, V8's GC helpers
included), memory VmRSS from ``/proc/<pid>/status``, each core's busy time from ``/proc/stat``.

The server: websocket transport only, ``perMessageDeflate`` and ``httpCompression`` off, the Redis
adapter (pub + sub clients, node-redis 4). A client emits ``subscribe`` with a job id and an ack;
the server joins the socket to that room. The publisher calls
``emitter.to(job).emit("update", snapshot)``: a msgpack PUBLISH on the room's channel, which the
adapter (PSUBSCRIBEd to ``socket.io#/#*``) decodes and broadcasts to the room. Snapshots have
progress-gateway's Job fields and are ~300 bytes of JSON; ``message`` starts with the publish
time in ns (CLOCK_REALTIME), so latency = receive time - publish time, both calibrated to
CLOCK_REALTIME the way ``bench/loadgen/loadgen.js`` does.

Scenarios (``--scenarios``, all by default), sizes as fanout.py's:

* ``throughput``: ``--tp-clients`` clients on ``--tp-jobs`` jobs; fixed publish rates
  (``--tp-rates``, 100, 240 and 600/s: 10,000, 24,000 and 60,000 deliveries/s at 100 clients per
  job), then times ``--tp-factor`` per step until deliveries/s stop growing; deliveries/s, server
  CPU and µs of server CPU per delivery at each step.
* ``latency``: ``--lat-shared-clients`` on ``--lat-shared-jobs`` jobs, and ``--lat-clients``
  each on its own job; every job updated ``--lat-rate`` times a second; p50/p99/p99.9.
* ``idle``: ``--idle-clients`` connected and subscribed; server RSS before (10 warm
  connections) and after, per connection; held ``--idle-hold-s`` (past one Socket.IO ping
  round, 25 s), then one update per job must reach every client.

Load generator clients (``--client``): ``raw`` (default) opens the same WebSocket connections with
``ws`` and speaks Engine.IO 4 / Socket.IO 5 itself (open, namespace connect, ``subscribe`` with an
ack id, pong), reading the timestamp from the raw frame as ``bench/loadgen/loadgen.js`` does; the
server cannot tell it from socket.io-client. ``socketio`` uses socket.io-client, which decodes
every packet (engine.io + socket.io-parser, a JSON.parse per delivery): measured on 2026-12-02,
32 µs of load-generator CPU per delivery at 24,000/s (raw: 17-20 µs), 88 % of core 1 at 24,000/s
and 100 % at 60,000/s, and a shared-jobs p99 of 25-27 ms against 7-9 ms with raw clients: the
instrument, not the server, would set the latency. The server's µs/delivery is the same with
either (16 µs at 60,000/s).

Before each scenario the script waits (up to ``--wait-idle-s``) until programs other than ours use
less than ``--quiet-share`` of a core. ``--quick`` shrinks every size for a smoke run.

Reused from ``bench/fanout.py`` (imported, not copied): ``Bench`` (subclassed: the quiet-machine
wait, opening clients, collecting and resetting the load generators' counters, settling),
``Gateway`` (subclassed for the Node server), ``RedisServer``, ``Agent``, ``Meter``, ``Sampler``,
``Histogram``, ``Plan``, ``undisturbed``, ``stalls``, ``machine``, ``raise_nofile`` and helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import (  # bench/ is not a package: fanout.py is found via sys.path
    GATEWAY_CORE,
    LOAD_CORE,
    ROOT,
    Agent,
    Bench,
    Gateway,
    Json,
    Meter,
    Plan,
    RedisServer,
    Sampler,
    log,
    machine,
    pinned,
    proc_rss,
    raise_nofile,
    stalls,
    undisturbed,
)

PEER = ROOT / "bench" / "peers" / "socketio"
SERVER_JS = PEER / "server.js"
PUBLISHER_JS = PEER / "publisher.js"
LOADGEN_JS = PEER / "loadgen.js"
SCENARIOS = ("throughput", "latency", "idle")
FD_RESERVE = 60


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not installed")
    if not (PEER / "node_modules" / "socket.io").exists():
        raise SystemExit(f"run `npm ci` in {PEER.relative_to(ROOT)} first")
    return node


class SocketIOServer(Gateway):
    """``node server.js`` pinned to core 0: fanout.py's Gateway interface, driven as an Agent."""

    def __init__(self, redis_url: str, log_dir: Path) -> None:
        super().__init__(redis_url, log_dir, "warning", ROOT)
        self.agent: Agent | None = None
        self.node_args: list[str] = []

    @property
    def pid(self) -> int:
        assert self.agent is not None
        return self.agent.pid

    @property
    def ws_url(self) -> str:
        # socket.io-client takes the server's origin; the path is /socket.io/.
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [
            node_binary(),
            "--expose-gc",  # only for the idle scenario's post-GC reading, on request
            *self.node_args,
            str(SERVER_JS),
            *("--port", str(self.port), "--redis", self.redis_url),
        ]
        self.agent = Agent("server", pinned(GATEWAY_CORE, argv), self.log_dir, dict(os.environ))
        self.agent.expect("ready", 30)

    def ready(self) -> bool:
        return self.agent is not None and self.agent.process.poll() is None

    def stats(self, *, gc: bool = False) -> Json:
        assert self.agent is not None
        return self.agent.ask({"cmd": "gc" if gc else "stats"}, "stats", 60)

    def metrics(self) -> dict[str, float]:
        return {}

    def kill(self) -> None:
        if self.agent is not None and self.agent.process.poll() is None:
            self.agent.process.kill()
            self.agent.process.wait(timeout=10)

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None


def make_jobs(n_jobs: int, n_clients: int) -> Plan:
    """``n_jobs`` job ids (rooms), client ``i`` on job ``i % n_jobs``; no tokens (no auth)."""
    jobs = [str(uuid.uuid4()) for _ in range(n_jobs)]
    clients = [("", [jobs[i % n_jobs]]) for i in range(n_clients)]
    return Plan(jobs, ["bench-owner"] * n_jobs, clients)


class PeerBench(Bench):
    """fanout.py's Bench with the Socket.IO server, publisher and load generators."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.redis = RedisServer(work / "redis")
        self.server = SocketIOServer(self.redis.url, work)
        self.server.node_args = list(args.server_node_arg)
        self.gateway = self.server  # Bench's helpers (fresh, settle) call it the gateway
        self.loadgens: list[Agent] = []
        self.publisher: Agent | None = None
        self.results: Json = {}
        self.worst_per_100ms: dict[int, float] = {}
        self.loadgen_gc_per_100ms: dict[int, float] = {}
        self.loadgen_gc_total_ms = 0.0
        self.samples_per_100ms: dict[int, list[float]] = {}

    # -- processes -------------------------------------------------------------------------------

    def start_loadgens(self) -> None:
        node = node_binary()
        self.loadgens = []
        for index in range(self.args.loadgens):
            argv = [
                node,
                "--max-old-space-size=4096",
                str(LOADGEN_JS),
                "--client",
                self.args.client,
            ]
            argv = pinned(LOAD_CORE, argv)
            agent = Agent(f"loadgen{index}", argv, self.work, dict(os.environ))
            agent.expect("hello", 30)
            self.loadgens.append(agent)

    def start_publisher(self, filler: int = 0, mode: str | None = None) -> Agent:
        argv = [
            node_binary(),
            str(PUBLISHER_JS),
            *("--redis", self.redis.url),
            *("--snapshot-bytes", str(self.args.snapshot_bytes)),
            *("--inflight", str(self.args.publisher_inflight)),
        ]
        agent = Agent("publisher", pinned(LOAD_CORE, argv), self.work, dict(os.environ))
        agent.expect("hello", 30)
        self.publisher = agent
        return agent

    def pids(self) -> dict[str, int]:
        pids = {"server": self.server.pid, "redis": self.redis.process.pid}
        for agent in self.loadgens:
            pids[agent.name] = agent.pid
        if self.publisher is not None:
            pids["publisher"] = self.publisher.pid
        pids["orchestrator"] = os.getpid()
        return pids

    # -- scenarios -------------------------------------------------------------------------------

    def run_throughput(self) -> Json:
        a = self.args
        log(f"throughput: {a.tp_clients} clients on {a.tp_jobs} jobs")
        plan = make_jobs(a.tp_jobs, a.tp_clients)
        fanout = a.tp_clients / a.tp_jobs
        steps: list[Json] = []
        with self.fresh("throughput"):
            publisher = self.start_publisher()
            opened = self.open_clients(plan)
            log(f"throughput: {opened['ok']} clients subscribed in {opened['seconds']:.1f}s")
            fixed = sorted(a.tp_rates)
            rate = fixed[0] if fixed else a.tp_start_rate
            best = 0.0
            for index in range(len(fixed) + a.tp_max_steps):
                if index < len(fixed):
                    rate = fixed[index]
                step = self._step(publisher, plan, rate, fanout)
                steps.append(step)
                log(
                    f"throughput: publish {step['publish_rate']:.0f}/s (target {rate:.0f}) → "
                    f"{step['deliveries_per_s']:.0f} deliveries/s, server "
                    f"{step['server_cpu_share']:.0%}, {step['server_us_per_delivery']:.1f} µs/"
                    f"delivery, ratio {step['delivery_ratio']:.2f}, "
                    f"p99 {step['latency']['p99_ms']:.1f} ms; core 0 softirq "
                    f"{step['core0_softirq_share']:.0%}, others {step['core0_foreign_share']:.0%}; "
                    f"core 1 {step['core1_share']:.0%} (load gen. {step['loadgen_share']:.0%}, "
                    f"publisher {step['publisher_share']:.0%}, redis {step['redis_share']:.0%})"
                )
                best_before, best = best, max(best, step["deliveries_per_s"])
                if index + 1 < len(fixed):
                    self.settle()
                    continue
                saturated = step["server_cpu_share"] >= 0.95 or step["delivery_ratio"] < 0.9
                if step["deliveries_per_s"] < best_before * 1.03 and saturated:
                    break
                if step["publish_rate"] < 0.9 * rate:
                    log("throughput: the publisher cannot keep up; stopping the ramp")
                    break
                if step["core1_share"] >= 0.97 and step["delivery_ratio"] < 0.9:
                    log("throughput: core 1 (load generators) is saturated; stopping the ramp")
                    break
                rate *= a.tp_factor
                self.settle()
        peak = max(steps, key=lambda s: s["deliveries_per_s"])
        loaded = [s for s in steps if s["server_cpu_share"] >= 0.5] or steps
        at = {f"at_{s['target_rate']:g}": s for s in steps if s["target_rate"] in a.tp_rates}
        return {
            "clients": a.tp_clients,
            "jobs": a.tp_jobs,
            "opened": opened,
            "steps": steps,
            "fixed_steps": {
                key: {
                    "deliveries_per_s": s["deliveries_per_s"],
                    "server_us_per_delivery": s["server_us_per_delivery"],
                    "server_cpu_share": s["server_cpu_share"],
                    "delivery_ratio": s["delivery_ratio"],
                    "loadgen_share": s["loadgen_share"],
                    "core1_share": s["core1_share"],
                }
                for key, s in at.items()
            },
            "peak_deliveries_per_s": peak["deliveries_per_s"],
            "peak_us_per_delivery": peak["server_us_per_delivery"],
            "peak_core0_us_per_delivery": peak["core0_us_per_delivery"],
            "peak_server_cpu_share": peak["server_cpu_share"],
            "peak_core1_share": peak["core1_share"],
            "min_us_per_delivery_loaded": min(s["server_us_per_delivery"] for s in loaded),
            "foreign_share_max": max(s["foreign_share"] for s in steps),
        }

    def _step(self, publisher: Agent, plan: Plan, rate: float, fanout: float) -> Json:
        a = self.args
        warm, measure = a.tp_warmup_s, a.tp_step_s
        publisher.send({"cmd": "run", "jobs": plan.jobs, "rate": rate, "seconds": warm + measure})
        time.sleep(warm)  # the warm-up window
        self.reset()
        meter = Meter(self.pids()).start()
        time.sleep(measure)  # the measured window
        updates, nbytes, latency, totals = self.collect()
        meter.stop()
        ran = publisher.expect("ran", warm + measure + 120)
        deliveries = updates / meter.wall_s
        return {
            "target_rate": rate,
            "publish_rate": ran["rate"],
            "publisher_behind": ran["behind"],
            "snapshot_bytes": ran.get("snapshot_bytes"),
            "deliveries_per_s": deliveries,
            "expected_per_s": ran["rate"] * fanout,
            "delivery_ratio": deliveries / (ran["rate"] * fanout) if ran["rate"] else 0.0,
            "frame_bytes": nbytes / updates if updates else 0,
            "server_cpu_share": meter.share("server"),
            "server_us_per_delivery": meter.cpu_s["server"] / max(1, updates) * 1e6,
            "core0_share": meter.core_share(GATEWAY_CORE),
            "core0_us_per_delivery": meter.cores_s.get(GATEWAY_CORE, 0.0) / max(1, updates) * 1e6,
            "core0_softirq_share": meter.softirq_share(GATEWAY_CORE),
            "core0_foreign_share": meter.foreign_core_share(GATEWAY_CORE, ["server"]),
            "core1_share": meter.core_share(LOAD_CORE),
            "loadgen_share": self.loadgen_cpu(meter) / meter.wall_s,
            "loadgen_us_per_delivery": self.loadgen_cpu(meter) / max(1, updates) * 1e6,
            "redis_share": meter.share("redis"),
            "publisher_share": meter.share("publisher"),
            "foreign_share": meter.foreign_share(),
            "latency": latency.summary_ms(),
            "client_errors": totals["errors"],
            "open": totals["open"],
            "failures": totals["failures"],
        }

    def run_latency(self, name: str, clients: int, jobs: int, mode: str = "emitter") -> Json:
        a = self.args
        log(f"latency {name}: {clients} clients on {jobs} jobs, {a.lat_rate:g} updates/s per job")
        plan = make_jobs(jobs, clients)
        rate = jobs * a.lat_rate
        with self.fresh(name):
            publisher = self.start_publisher()
            opened = self.open_clients(plan)
            publisher.send(
                {"cmd": "run", "jobs": plan.jobs, "rate": rate, "seconds": a.lat_warmup_s + a.lat_s}
            )
            # Record during the warm-up too (as fanout.py does), so the load generators'
            # recording path is compiled before the measured window, not in it.
            self.reset(samples=True)
            time.sleep(a.lat_warmup_s)  # the warm-up window
            self.reset(samples=True)
            meter = Meter(self.pids()).start()
            with Sampler(self.pids()) as sampler:
                time.sleep(a.lat_s)  # the measured window
            updates, nbytes, latency, totals = self.collect()
            meter.stop()
            ran = publisher.expect("ran", a.lat_s + 120)
        summary = latency.summary_ms()
        expected = ran["rate"] * clients / jobs
        result = {
            "clients": clients,
            "jobs": jobs,
            "opened": opened["ok"],
            "target_publish_rate": rate,
            "publish_rate": ran["rate"],
            "publisher_behind": ran["behind"],
            "deliveries_per_s": updates / meter.wall_s,
            "delivery_ratio": updates / meter.wall_s / expected if expected else 0.0,
            "frame_bytes": nbytes / updates if updates else 0,
            "latency": summary,
            "server_cpu_share": meter.share("server"),
            "server_us_per_delivery": meter.cpu_s["server"] / max(1, updates) * 1e6,
            "core0_softirq_share": meter.softirq_share(GATEWAY_CORE),
            "core1_share": meter.core_share(LOAD_CORE),
            "loadgen_share": self.loadgen_cpu(meter) / meter.wall_s,
            "redis_share": meter.share("redis"),
            "redis_us_per_publish": meter.cpu_s["redis"] / max(1, ran["issued"]) * 1e6,
            "publisher_share": meter.share("publisher"),
            "foreign_share": meter.foreign_share(),
            "client_errors": totals["errors"],
            "failures": totals["failures"],
            "stalls": stalls(self.worst_per_100ms, sampler.foreign),
            "undisturbed": undisturbed(self.samples_per_100ms, sampler.foreign, a.quiet_share),
            "foreign_per_100ms": sampler.foreign,
            "worst_us_per_100ms": [
                round(self.worst_per_100ms[k]) for k in sorted(self.worst_per_100ms)
            ],
            "loadgen_gc_ms_per_100ms": [
                round(self.loadgen_gc_per_100ms.get(k, 0.0), 2)
                for k in sorted(self.worst_per_100ms)
            ],
            "loadgen_gc_total_ms": round(self.loadgen_gc_total_ms, 1),
        }
        log(
            f"latency {name}: p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
            f"p99.9 {summary['p999_ms']:.2f} ms; publish {ran['rate']:.0f}/s of {rate:.0f}; "
            f"delivered {result['delivery_ratio']:.3f}; server {meter.share('server'):.0%}, "
            f"core 1 {meter.core_share(LOAD_CORE):.0%} (load gen. {result['loadgen_share']:.0%}, "
            f"publisher {result['publisher_share']:.0%}); others {result['foreign_share']:.0%}"
        )
        if quiet := result["undisturbed"]:
            log(
                f"latency {name}, quiet windows only ({quiet['windows_kept']} of "
                f"{quiet['windows_total']}): p50 {quiet['p50_ms']} ms, p99 {quiet['p99_ms']} ms, "
                f"p99.9 {quiet['p999_ms']} ms"
            )
        return result

    def undisturbed_latency(self, name: str, clients: int, jobs: int) -> Json:
        """A latency run, repeated (``--repeat-disturbed`` times at most) while programs other
        than ours used ``--quiet-share`` of a core or more over its measured window; the earlier
        attempts are kept in the result."""
        disturbed: list[Json] = []
        while True:
            result = self.run_latency(name, clients, jobs)
            if result["foreign_share"] < self.args.quiet_share:
                break
            if len(disturbed) >= self.args.repeat_disturbed:
                log(f"latency {name}: still disturbed after {len(disturbed)} repeats; keeping it")
                break
            log(
                f"latency {name}: others used {result['foreign_share']:.0%} of a core while "
                "measuring; repeating"
            )
            disturbed.append(
                {
                    "foreign_share": result["foreign_share"],
                    "latency": result["latency"],
                    "undisturbed": {
                        k: v for k, v in result["undisturbed"].items() if k != "foreign_limit"
                    },
                }
            )
        result["disturbed_attempts"] = disturbed
        return result

    def run_idle(self) -> Json:
        a = self.args
        n = a.idle_clients
        plan = make_jobs(n, n)
        warm = make_jobs(10, 10)
        with self.fresh("idle"):
            publisher = self.start_publisher()
            self.open_clients(warm)  # first-use allocations and compilation, not per connection
            time.sleep(1.0)  # let the server go idle before the reading, as fanout.py does
            rss_before = proc_rss(self.server.pid)
            before_gc = self.server.stats(gc=True)
            loadgen_before = self.loadgen_rss()
            steps: list[Json] = []
            chunks = max(1, a.idle_steps)
            meter = Meter(self.pids()).start()
            opened: list[Json] = []
            for index in range(chunks):
                part = plan.clients[index * n // chunks : (index + 1) * n // chunks]
                opened.append(self.open_clients(Plan(plan.jobs, plan.owners, part)))
                time.sleep(1.0)
                steps.append(
                    {"connections": (index + 1) * n // chunks, "rss": proc_rss(self.server.pid)}
                )
                log(
                    f"idle: {steps[-1]['connections']} open, server RSS "
                    f"{steps[-1]['rss'] / 2**20:.1f} MiB"
                )
            meter.stop()
            ok = sum(o["ok"] for o in opened)
            time.sleep(2.0)
            rss_after = proc_rss(self.server.pid)
            loadgen_after = self.loadgen_rss()
            after_gc = self.server.stats(gc=True)
            log(f"idle: holding {ok} connections for {a.idle_hold_s:.0f}s")
            hold = Meter(self.pids()).start()
            time.sleep(a.idle_hold_s)  # the held window (past one ping round)
            hold.stop()
            rss_end = proc_rss(self.server.pid)
            self.reset()
            _, _, _, totals = self.collect()
            self.reset()
            log("idle: one update per job")
            publisher.ask({"cmd": "once", "jobs": plan.jobs}, "once", timeout=600)
            delivered = self.wait_delivered(totals["acked"] - len(warm.clients), 60)
            server_stats = self.server.stats()
        per_connection = (rss_after - rss_before) / max(1, ok)
        per_connection_gc = (after_gc["rss"] - before_gc["rss"]) / max(1, ok)
        result = {
            "clients": n,
            "connected": ok,
            "open_failed": sum(o["failed"] for o in opened),
            "open_s": meter.wall_s,
            "open_per_s": ok / meter.wall_s,
            "server_cpu_per_connect_us": meter.cpu_s["server"] / max(1, ok) * 1e6,
            "server_sockets": server_stats["sockets"],
            "open_after_hold": totals["open"] - len(warm.clients),
            "acked_after_hold": totals["acked"] - len(warm.clients),
            "failures": totals["failures"],
            "rss_before_mib": rss_before / 2**20,
            "rss_after_mib": rss_after / 2**20,
            "rss_end_mib": rss_end / 2**20,
            "rss_per_connection_kib": per_connection / 1024,
            # The same after a full GC on both sides (node --expose-gc, global.gc()): live data
            # only; V8 holds garbage until it collects, which fanout.py's reading includes.
            "rss_per_connection_after_gc_kib": per_connection_gc / 1024,
            "heap_used_per_connection_kib": (after_gc["heap_used"] - before_gc["heap_used"])
            / max(1, ok)
            / 1024,
            "before_gc": before_gc,
            "after_gc": after_gc,
            "steps": steps,
            "idle_server_cpu_share": hold.share("server"),
            "hold_s": hold.wall_s,
            "liveness_delivered": delivered,
            "loadgen_rss_per_connection_kib": (loadgen_after - loadgen_before) / max(1, ok) / 1024,
            "foreign_share": hold.foreign_share(),
        }
        log(
            f"idle: {ok}/{n} held, {per_connection / 1024:.1f} KiB/connection "
            f"({per_connection_gc / 1024:.1f} after GC), liveness {delivered}/{n}"
        )
        return result

    def run(self) -> Json:
        a = self.args
        self.results["machine"] = machine()
        self.results["peer"] = peer_versions()
        self.results["settings"] = {k: v for k, v in vars(a).items() if k != "func"}
        try:
            if "throughput" in a.scenarios:
                self.results["throughput"] = self.run_throughput()
            if "latency" in a.scenarios:
                self.results["latency_shared"] = self.undisturbed_latency(
                    "shared", a.lat_shared_clients, a.lat_shared_jobs
                )
                self.results["latency_own"] = self.undisturbed_latency(
                    "own", a.lat_clients, a.lat_clients
                )
            if "idle" in a.scenarios:
                self.results["idle"] = self.run_idle()
        finally:
            self.stop_clients()
            self.server.stop()
            self.redis.stop()
        return self.results


def peer_versions() -> Json:
    versions: Json = {}
    for name in (
        "socket.io",
        "socket.io-client",
        "socket.io-adapter",
        "engine.io",
        "ws",
        "@socket.io/redis-adapter",
        "@socket.io/redis-emitter",
        "redis",
    ):
        with contextlib.suppress(OSError, ValueError, KeyError):
            package = json.loads((PEER / "node_modules" / name / "package.json").read_text())
            versions[name] = package["version"]
    return versions


# -- report ------------------------------------------------------------------------------------


def report(results: Json) -> str:
    lines = ["| measure | Socket.IO 4 + Redis adapter |", "|---|---|"]

    def row(name: str, value: str) -> None:
        lines.append(f"| {name} | {value} |")

    if tp := results.get("throughput"):
        for key, step in tp["fixed_steps"].items():
            row(
                f"server CPU per delivery, {key[3:]} publishes/s",
                f"{step['server_us_per_delivery']:.1f} µs ({step['deliveries_per_s']:,.0f} "
                f"deliveries/s, ratio {step['delivery_ratio']:.2f}, server "
                f"{step['server_cpu_share']:.0%}, load gen. {step['loadgen_share']:.0%}, "
                f"core 1 {step['core1_share']:.0%})",
            )
        row(
            "peak deliveries/s (one core)",
            f"{tp['peak_deliveries_per_s']:,.0f} ({tp['clients']:,} clients on {tp['jobs']} jobs; "
            f"server {tp['peak_server_cpu_share']:.0%}, core 1 {tp['peak_core1_share']:.0%})",
        )
        row(
            "server CPU per delivery at peak",
            f"{tp['peak_us_per_delivery']:.1f} µs (core 0 incl. softirq "
            f"{tp['peak_core0_us_per_delivery']:.1f} µs); best loaded step "
            f"{tp['min_us_per_delivery_loaded']:.1f} µs",
        )
    for key, label in (("latency_shared", "latency, shared jobs"), ("latency_own", "own job")):
        if lat := results.get(key):
            s = lat["latency"]
            row(
                f"{label} ({lat['clients']:,} clients / {lat['jobs']:,} jobs)",
                f"p50 {s['p50_ms']:.2f} / p99 {s['p99_ms']:.2f} / p99.9 {s['p999_ms']:.2f} ms; "
                f"publish {lat['publish_rate']:,.0f}/s of {lat['target_publish_rate']:,.0f}; "
                f"delivered {lat['delivery_ratio']:.3f}; server {lat['server_cpu_share']:.0%}, "
                f"core 1 {lat['core1_share']:.0%} (load gen. {lat['loadgen_share']:.0%})",
            )
            if (quiet := lat.get("undisturbed")) and quiet.get("n"):
                row(
                    f"{label}, quiet windows ({quiet['windows_kept']}/{quiet['windows_total']})",
                    f"p50 {quiet['p50_ms']:.2f} / p99 {quiet['p99_ms']:.2f} / p99.9 "
                    f"{quiet['p999_ms']:.2f} ms",
                )
    if idle := results.get("idle"):
        row(
            "RSS per idle connection",
            f"{idle['rss_per_connection_kib']:.1f} KiB ({idle['rss_before_mib']:.0f} → "
            f"{idle['rss_after_mib']:.0f} MiB; after a full GC "
            f"{idle['rss_per_connection_after_gc_kib']:.1f} KiB, V8 heap "
            f"{idle['heap_used_per_connection_kib']:.1f} KiB)",
        )
        row(
            "idle connections held",
            f"{idle['acked_after_hold']:,} of {idle['clients']:,} "
            f"(liveness {idle['liveness_delivered']:,}/{idle['clients']:,}); server CPU "
            f"{idle['server_cpu_per_connect_us']:.0f} µs per connect+subscribe",
        )
    if quiet := results.get("quiet"):
        row(
            "others' CPU before each scenario",
            ", ".join(
                f"{name} {q['foreign_share_before']:.0%} (waited {q['waited_s']:.0f} s)"
                for name, q in quiet.items()
            ),
        )
    during = []
    if tp:
        during.append(f"throughput ≤ {tp['foreign_share_max']:.0%}")
    for key in ("latency_shared", "latency_own"):
        if lat := results.get(key):
            during.append(f"{key[8:]} {lat['foreign_share']:.0%}")
    if idle:
        during.append(f"idle hold {idle['foreign_share']:.0%}")
    if during:
        row("others' CPU while measuring", ", ".join(during))
    return "\n".join(lines)


def steps_table(results: Json) -> str:
    tp = results.get("throughput")
    if not tp:
        return ""
    lines = [
        "| publish/s | deliveries/s | ratio | server CPU | µs/delivery | core 0 µs/delivery "
        "| load gen. | core 1 | p99 ms | others |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in tp["steps"]:
        lines.append(
            f"| {s['publish_rate']:,.0f} | {s['deliveries_per_s']:,.0f} | "
            f"{s['delivery_ratio']:.2f} | {s['server_cpu_share']:.0%} | "
            f"{s['server_us_per_delivery']:.1f} | {s['core0_us_per_delivery']:.1f} | "
            f"{s['loadgen_share']:.0%} | {s['core1_share']:.0%} | "
            f"{s['latency']['p99_ms']:.1f} | {s['foreign_share']:.0%} |"
        )
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Socket.IO 4 + Redis adapter, measured by bench/fanout.py's method "
        "(see docs/performance.md and this file's docstring)."
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="which scenarios to run (all)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--loadgens", type=int, default=4, help="Node load generator processes")
    parser.add_argument(
        "--client",
        choices=("raw", "socketio"),
        default="raw",
        help="load generator clients: raw (ws speaking Engine.IO 4/Socket.IO 5, the timestamp "
        "read from the raw frame as bench/loadgen does: the same frames for the server, a "
        "fanout.py-sized cost on core 1) or socketio (socket.io-client: a full decode per "
        "update, 1.2-1.9x the load generators' CPU per delivery; core 1 is full at 60,000/s)",
    )
    parser.add_argument(
        "--open-concurrency", type=int, default=64, help="handshakes in flight, all load generators"
    )
    parser.add_argument("--snapshot-bytes", type=int, default=300, help="snapshot JSON size")
    parser.add_argument(
        "--publisher-inflight",
        type=int,
        default=20_000,
        help="PUBLISHes awaiting Redis's reply, at most (beyond it the publisher falls behind)",
    )
    parser.add_argument(
        "--wait-idle-s",
        type=float,
        default=600.0,
        help="before each scenario, wait at most this long for a quiet machine",
    )
    parser.add_argument(
        "--repeat-disturbed",
        type=int,
        default=2,
        help="repeat a latency run whose measured window others disturbed, at most N times",
    )
    parser.add_argument(
        "--server-node-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra node flag for the server, e.g. --server-node-arg=--trace-gc (repeatable)",
    )
    parser.add_argument(
        "--quiet-share",
        type=float,
        default=0.15,
        help="'quiet': programs other than ours use less than this share of a core",
    )
    g = parser.add_argument_group("throughput")
    g.add_argument("--tp-clients", type=int, default=2_000)
    g.add_argument("--tp-jobs", type=int, default=20)
    g.add_argument(
        "--tp-rates",
        type=float,
        nargs="*",
        default=[100.0, 240.0, 600.0],
        help="fixed publish rates measured first (per s)",
    )
    g.add_argument("--tp-start-rate", type=float, default=100.0, help="without --tp-rates")
    g.add_argument("--tp-factor", type=float, default=1.35, help="rate growth per step after")
    g.add_argument("--tp-max-steps", type=int, default=10, help="growing steps, at most")
    g.add_argument("--tp-warmup-s", type=float, default=2.0)
    g.add_argument("--tp-step-s", type=float, default=8.0)
    g = parser.add_argument_group("latency")
    g.add_argument("--lat-clients", type=int, default=1_000, help="each on its own job")
    g.add_argument("--lat-shared-clients", type=int, default=2_000)
    g.add_argument("--lat-shared-jobs", type=int, default=20)
    g.add_argument("--lat-rate", type=float, default=10.0, help="updates/s per job")
    g.add_argument("--lat-warmup-s", type=float, default=3.0)
    g.add_argument("--lat-s", type=float, default=30.0)
    g = parser.add_argument_group("idle")
    g.add_argument("--idle-clients", type=int, default=5_000)
    g.add_argument("--idle-steps", type=int, default=4, help="RSS read after each of N chunks")
    g.add_argument("--idle-hold-s", type=float, default=25.0)
    return parser


def apply_quick(args: argparse.Namespace) -> None:
    args.idle_clients = min(args.idle_clients, 1_000)
    args.idle_hold_s = min(args.idle_hold_s, 3.0)
    args.tp_clients, args.tp_jobs = min(args.tp_clients, 400), min(args.tp_jobs, 20)
    args.tp_step_s, args.tp_max_steps = min(args.tp_step_s, 3.0), min(args.tp_max_steps, 2)
    args.tp_warmup_s = min(args.tp_warmup_s, 1.0)
    args.lat_clients = min(args.lat_clients, 200)
    args.lat_shared_clients = min(args.lat_shared_clients, 400)
    args.lat_s, args.lat_warmup_s = min(args.lat_s, 5.0), min(args.lat_warmup_s, 1.0)
    args.wait_idle_s = min(args.wait_idle_s, 30.0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        apply_quick(args)
    if os.cpu_count() != 2:
        log(f"this machine has {os.cpu_count()} cores; the layout assumes 2 (cores 0 and 1)")
    node_binary()
    nofile = raise_nofile()
    if args.idle_clients > nofile - FD_RESERVE:
        log(f"idle: {args.idle_clients} connections do not fit RLIMIT_NOFILE {nofile}")
        args.idle_clients = nofile - FD_RESERVE
    os.sched_setaffinity(0, {LOAD_CORE})
    with tempfile.TemporaryDirectory(prefix="pgw-peer-socketio-") as tmp:
        work = Path(tmp)
        log(f"logs in {work}")
        bench = PeerBench(args, work)
        try:
            results: dict[str, Any] = bench.run()
        except BaseException:
            for name in ("server.log", "publisher.log", "loadgen0.log"):
                path = work / name
                if path.exists():
                    log(f"--- {name} (tail) ---\n{path.read_text(errors='replace')[-3000:]}")
            raise
    print(steps_table(results))
    print()
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
