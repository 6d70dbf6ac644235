"""Where an idle connection's memory goes: tracemalloc in the gateway, per connection.

The idle scenario of ``bench/fanout.py`` gives RSS per connection; this says what it is made of.
The gateway runs under tracemalloc (via ``_serve``, below) with the same layout as fanout.py: it
opens a few warm-up connections (imports and first-use allocations), snapshots, opens
``--idle-clients`` authenticated and subscribed connections (each on its own job, as in the idle
scenario), and snapshots again. The difference divided by the connections is printed by
allocation site, with the RSS difference beside it: tracemalloc sees Python's allocations only,
not uvloop's and libuv's (``malloc`` from C) nor the allocator's overhead.

    .venv/bin/python bench/connection_memory.py --idle-clients 3000 --frames 12

Numbers, not a test; tracemalloc slows the gateway, so its CPU figures mean nothing here.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import fanout
from fanout import Bench, Gateway, proc_rss


def serve_traced(dump_dir: Path, argv: list[str]) -> None:
    """Run the gateway (traced from start-up by ``PYTHONTRACEMALLOC``); ``request-N`` in
    ``dump_dir`` asks for snapshot N."""

    def answer_requests() -> None:
        index = 0
        while True:
            request = dump_dir / f"request-{index}"
            if request.exists():
                gc.collect()  # live objects only: garbage is not what a connection holds
                tracemalloc.take_snapshot().dump(str(dump_dir / f"snapshot-{index}"))
                (dump_dir / f"done-{index}").touch()
                index += 1
            time.sleep(0.1)

    threading.Thread(target=answer_requests, name="tracemalloc-dumps", daemon=True).start()
    from progress_gateway.cli import main

    main(argv)


class TracedGateway(Gateway):
    """The gateway started through ``serve_traced``, its snapshots in its log directory."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.dump_dir = self.log_dir / "tracemalloc"
        self.dump_dir.mkdir(exist_ok=True)
        self.snapshots = 0

    def argv(self) -> list[str]:
        serve = super().argv()[3:]  # after "python -m progress_gateway.cli"
        return [sys.executable, str(Path(__file__).resolve()), "_serve", str(self.dump_dir), *serve]

    def snapshot(self) -> tracemalloc.Snapshot:
        index = self.snapshots
        self.snapshots += 1
        (self.dump_dir / f"request-{index}").touch()
        deadline = time.monotonic() + 300
        while not (self.dump_dir / f"done-{index}").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway wrote no tracemalloc snapshot within 300 s")
            time.sleep(0.1)
        return tracemalloc.Snapshot.load(str(self.dump_dir / f"snapshot-{index}"))


class MemoryBench(Bench):
    GATEWAY = TracedGateway

    def make_server(self) -> Gateway:
        gateway = super().make_server()
        gateway.extra_env["PYTHONTRACEMALLOC"] = str(self.args.frames)
        return gateway

    def run_scenarios(self) -> None:
        a = self.args
        n = a.idle_clients
        self.flush_store()
        plan = self.new_plan(n, n, "idle")
        warm = self.new_plan(50, 50, "warm")
        gateway = self.gateway
        assert isinstance(gateway, TracedGateway)
        with self.fresh("memory"):
            self.open_clients(warm)
            time.sleep(1.0)
            rss_before = proc_rss(gateway.pid)
            before = gateway.snapshot()
            opened = self.open_clients(plan)
            time.sleep(2.0)
            rss_after = proc_rss(gateway.pid)
            after = gateway.snapshot()
        report(before, after, opened["ok"], rss_after - rss_before, a.top, a.group_by)


def report(
    before: tracemalloc.Snapshot,
    after: tracemalloc.Snapshot,
    connections: int,
    rss_delta: int,
    top: int,
    group_by: str,
) -> None:
    stats = after.compare_to(before, group_by)
    traced = sum(s.size_diff for s in stats)
    print(f"\n{connections} connections opened")
    print(f"RSS per connection:    {rss_delta / connections / 1024:6.2f} KiB")
    print(f"traced per connection: {traced / connections / 1024:6.2f} KiB (Python allocations)")
    print(f"\n| bytes per connection | blocks per connection | {group_by} |")
    print("|---:|---:|---|")
    for stat in stats[:top]:
        where = "<br>".join(str(frame) for frame in reversed(stat.traceback))
        print(
            f"| {stat.size_diff / connections:.0f} | {stat.count_diff / connections:.2f} | "
            f"{where} |"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        serve_traced(Path(argv[1]), argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-clients", type=int, default=3000, help="connections measured")
    parser.add_argument("--frames", type=int, default=12, help="traceback depth")
    parser.add_argument("--top", type=int, default=30, help="allocation sites printed")
    parser.add_argument("--group-by", choices=("lineno", "traceback"), default="traceback")
    parser.add_argument("--loadgens", type=int, default=2, help="Node load generator processes")
    fanout.add_gateway_args(parser)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(fanout.ROOT))
    args.nofile = fanout.fit_host(args, fanout.FD_RESERVE)
    fanout.run_bench(MemoryBench, args, "pgw-memory-")
    return 0


if __name__ == "__main__":
    sys.exit(main())
