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

Reused from ``bench/fanout.py`` (imported, not copied): ``Bench`` with its scenarios
(``run_throughput``, ``run_latency``, ``run_idle``: the same windows, meters and figures), the
quiet-machine wait, opening clients, collecting the load generators' counters and settling;
``PeerBench`` only supplies the hooks (the server, jobs without a store, the Node publisher's and
load generators' command lines, what the logs add) and ``--repeat-disturbed``. Also ``Gateway``
(subclassed for the Node server), ``Agent``, ``Plan``, the shared options, ``--quick`` sizes,
the report's latency rows and ``main``'s setup. The Node side shares
``bench/loadgen/common.js`` with fanout.py's load generator.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import (  # bench/ is not a package: fanout.py is found via sys.path
    GATEWAY_CORE,
    ROOT,
    Agent,
    Bench,
    Gateway,
    Json,
    Plan,
    Table,
    add_idle_args,
    add_latency_sizes,
    add_run_args,
    add_throughput_args,
    finish,
    fit_host,
    log,
    pinned,
    run_bench,
    shrink_quick,
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
    """fanout.py's Bench, scenarios and all, with the Socket.IO server, the redis-emitter
    publisher and the Socket.IO load generators in place of the gateway's."""

    SERVER = "server"
    gateway: SocketIOServer  # Bench's name for the server under test

    def make_server(self) -> SocketIOServer:
        server = SocketIOServer(self.redis.url, self.work)
        server.node_args = list(self.args.server_node_arg)
        return server

    def loadgen_argv(self) -> list[str]:
        return [
            node_binary(),
            "--max-old-space-size=4096",
            str(LOADGEN_JS),
            *("--client", self.args.client),
        ]

    def publisher_argv(self, filler: int, mode: str | None) -> list[str]:
        # publisher.js pads its own snapshots to --snapshot-bytes and has one mode.
        return [
            node_binary(),
            str(PUBLISHER_JS),
            *("--redis", self.redis.url),
            *("--snapshot-bytes", str(self.args.snapshot_bytes)),
            *("--inflight", str(self.args.publisher_inflight)),
        ]

    def flush_store(self) -> None:
        """Nothing to empty: the peer keeps its rooms in the server, not in Redis."""

    def new_plan(self, n_jobs: int, n_clients: int, tag: str) -> Plan:
        return make_jobs(n_jobs, n_clients)

    def filler(self, plan: Plan) -> int:
        return 0  # publisher.js pads the snapshots itself

    def fixed_rates(self) -> list[float]:
        return sorted(self.args.tp_rates)

    def profile_peak(self, publisher: Agent, plan: Plan, steps: list[Json]) -> Json | None:
        return None

    def core1_detail(self, step: Json) -> str:
        return (
            f"load gen. {step['loadgen_share']:.0%}, publisher {step['publisher_share']:.0%}, "
            f"redis {step['redis_share']:.0%}"
        )

    def latency_detail(self, result: Json) -> str:
        return (
            f"delivered {result['delivery_ratio']:.3f}; server {result['server_cpu_share']:.0%}, "
            f"core 1 {result['core1_share']:.0%} (load gen. {result['loadgen_share']:.0%}, "
            f"publisher {result['publisher_share']:.0%}); others {result['foreign_share']:.0%}"
        )

    def about(self) -> Json:
        return {"peer": peer_versions()}

    def run_scenarios(self) -> None:
        a = self.args
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
    table = Table("Socket.IO 4 + Redis adapter")
    row = table.row

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
            shares = (
                f"delivered {lat['delivery_ratio']:.3f}; server {lat['server_cpu_share']:.0%}, "
                f"core 1 {lat['core1_share']:.0%} (load gen. {lat['loadgen_share']:.0%})"
            )
            table.latency(label, lat, shares)
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
    return str(table)


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
    add_run_args(parser, SCENARIOS)
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
    add_throughput_args(
        parser.add_argument_group("throughput"),
        start_help="without --tp-rates",
        factor_help="rate growth per step after",
        max_steps=10,
        max_steps_help="growing steps, at most",
        fixed_rates=[100.0, 240.0, 600.0],
    )
    g = parser.add_argument_group("latency")
    add_latency_sizes(g)
    g.add_argument("--lat-warmup-s", type=float, default=3.0)
    g.add_argument("--lat-s", type=float, default=30.0)
    add_idle_args(parser.add_argument_group("idle"), 5_000)
    return parser


def apply_quick(args: argparse.Namespace) -> None:
    shrink_quick(args, idle_clients=1_000, tp_max_steps=2)
    args.wait_idle_s = min(args.wait_idle_s, 30.0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        apply_quick(args)
    node_binary()
    fit_host(args, FD_RESERVE)
    results = run_bench(PeerBench, args, "pgw-peer-socketio-")
    return finish(args, results, f"{steps_table(results)}\n\n{report(results)}")


if __name__ == "__main__":
    sys.exit(main())
