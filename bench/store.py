"""Store write-path benchmark: many concurrent ``apply(Update)`` calls against each backend.

A script, not a test: it prints numbers and never passes or fails. See ``bench/README.md``.

For each backend it creates ``--jobs`` jobs, then runs one asyncio task per job, each applying
``Update.build(progress=..., stage=..., message=...)`` to its own job in a loop, until the
measured number of updates (``--updates``) is done; a warm-up phase runs first and is excluded.
Reported per backend:

* throughput (updates/s, wall clock of the measured phase);
* latency of each ``await store.apply(...)`` (``time.perf_counter_ns``): p50, p99, p99.9, max;
* CPU time of this process (all threads, ``resource.getrusage``) per update and as a share of
  one core, and for Redis the redis-server's CPU per update (``/proc/<pid>/stat``, or
  ``INFO cpu`` for a server given with ``--redis-url``), so it is clear which side saturates.

Unless ``--redis-url`` is given, a private ``redis-server`` is started on a free port with a
temporary directory and killed at the end; the machine's shared Redis is never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import RedisError

from progress_core.models import Create, Update
from progress_core.store.base import JobStore, StoreOptions
from progress_core.store.redis import RedisJobStore
from progress_core.store.sqlite import SqliteJobStore

DEFAULT_UPDATES = {"redis": 50_000, "sqlite": 20_000}
STAGES = ("download", "transform", "render", "upload", "finalize")
CLIENT_CORE = 1
SERVER_CORE = 0
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PROC_SOURCE = "/proc/<pid>/stat"
NOISY_SHARE = 0.10  # other programs using more than this share of a core spoil a run


# -- measurement -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds so far: this process (user, sys), the server (None if unknown), the machine."""

    client_user: float
    client_sys: float
    server: float | None
    machine_busy: float


@dataclass(frozen=True, slots=True)
class Result:
    backend: str
    updates: int
    wall_s: float
    latencies_ns: list[int]
    client_user_s: float
    client_sys_s: float
    server_cpu_s: float | None
    server_cpu_source: str
    machine_busy_s: float

    @property
    def rate(self) -> float:
        return self.updates / self.wall_s

    def percentile_ms(self, fraction: float) -> float:
        """Nearest-rank percentile of the sorted latencies, in milliseconds."""
        ordered = self.latencies_ns
        rank = max(
            1, min(len(ordered), -(-round(fraction * 1_000_000) * len(ordered) // 1_000_000))
        )
        return ordered[rank - 1] / 1e6

    @property
    def client_cpu_us(self) -> float:
        return (self.client_user_s + self.client_sys_s) / self.updates * 1e6

    @property
    def server_cpu_us(self) -> float | None:
        return None if self.server_cpu_s is None else self.server_cpu_s / self.updates * 1e6

    @property
    def others_share(self) -> float:
        """Cores' worth of CPU used by everything but this process and our server, meanwhile.

        Clock-tick resolution, so a few percent either way is noise; much more means another
        program competed for the cores and the run is not clean.
        """
        ours = self.client_user_s + self.client_sys_s
        if self.server_cpu_source == PROC_SOURCE and self.server_cpu_s is not None:
            ours += self.server_cpu_s  # our own server; a --redis-url one counts as "others"
        return max(0.0, self.machine_busy_s - ours) / self.wall_s


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads), from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces; the fields after it start past the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / TICKS_PER_S


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and iowait since boot (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / TICKS_PER_S


def wait_for_idle(limit_s: float, window_s: float = 1.0) -> None:
    """Wait until the machine was idle for one ``window_s``, at most ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while True:
        before = machine_busy_seconds()
        time.sleep(window_s)
        busy = (machine_busy_seconds() - before) / window_s
        if busy <= NOISY_SHARE:
            return
        if time.monotonic() > deadline:
            print(f"(machine still busy: {busy:.0%} of a core; running anyway)")
            return


def filesystem_of(path: str) -> str:
    """The type of the filesystem holding ``path`` (longest matching mount point), or "?"."""
    best, kind = "", "?"
    resolved = os.path.realpath(path)
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[1]
                inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def client_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


# -- the private redis-server ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    url: str
    pid: int | None  # None: a server we did not start (``--redis-url``), CPU read via INFO

    def cpu_seconds(self) -> float:
        if self.pid is not None:
            return proc_cpu_seconds(self.pid)
        client = redis.Redis.from_url(self.url)
        try:
            info: dict[str, Any] = client.info("cpu")
        finally:
            client.close()
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    @property
    def cpu_source(self) -> str:
        return PROC_SOURCE if self.pid is not None else "INFO cpu"


@contextmanager
def private_redis(pin: bool, timeout_s: float = 15.0) -> Iterator[RedisServer]:
    """A redis-server of our own on a free port and a temporary directory; killed on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit(
            "redis-server not found on PATH (apt-get install redis-server), or use --redis-url"
        )
    with tempfile.TemporaryDirectory(prefix="pgw-bench-redis-") as directory:
        port = free_port()
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
            "--logfile",
            str(Path(directory) / "redis.log"),
        ]
        if pin:
            # taskset execs redis-server in place, so the pid stays the server's own.
            args = ["taskset", "-c", str(SERVER_CORE), *args]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            wait_for_ping(url, process, timeout_s)
            yield RedisServer(url=url, pid=process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def wait_for_ping(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        while True:
            if process.poll() is not None:
                sys.exit(f"redis-server exited with status {process.returncode} before answering")
            try:
                if client.ping():
                    return
            except RedisError as exc:
                last: Exception = exc
            if time.monotonic() > deadline:
                sys.exit(f"redis-server at {url} did not answer PING in {timeout_s}s: {last!r}")
            time.sleep(0.02)
    finally:
        client.close()


def server_version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        info: dict[str, Any] = client.info("server")
    finally:
        client.close()
    return str(info.get("redis_version", "?"))


# -- the workload ------------------------------------------------------------------------------


async def create_jobs(store: JobStore, count: int) -> list[str]:
    jobs = await asyncio.gather(
        *(
            store.create(Create.build(owner="bench", kind="bench", params={"index": index}))
            for index in range(count)
        )
    )
    return [job.id for job in jobs]


async def run_phase(
    store: JobStore, job_ids: list[str], total: int, first_step: int, latencies: list[int] | None
) -> float:
    """Apply ``total`` updates spread over one task per job; return the wall time in seconds.

    Each task updates only its own job; tasks claim the next update from a shared counter (safe:
    one event loop thread), so the total is exact however the tasks interleave.
    """
    remaining = total
    perf_ns = time.perf_counter_ns

    async def worker(job_id: str) -> None:
        nonlocal remaining
        step = first_step
        while remaining > 0:
            remaining -= 1
            step += 1
            change = Update.build(
                progress=min(100.0, step / 1000),
                stage=STAGES[step % len(STAGES)],
                message=f"processed {step} of many items",
            )
            started = perf_ns()
            await store.apply(job_id, change)
            if latencies is not None:
                latencies.append(perf_ns() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker(job_id) for job_id in job_ids))
    return time.perf_counter() - began


async def bench_store(
    backend: str,
    store: JobStore,
    jobs: int,
    updates: int,
    warmup: int,
    server_cpu: Callable[[], float] | None,
    server_cpu_source: str,
) -> Result:
    job_ids = await create_jobs(store, jobs)
    await run_phase(store, job_ids, warmup, 0, None)
    latencies: list[int] = []

    def sample() -> CpuSample:
        user, system = client_cpu()
        server = None if server_cpu is None else server_cpu()
        return CpuSample(user, system, server, machine_busy_seconds())

    before = sample()
    wall_s = await run_phase(store, job_ids, updates, warmup, latencies)
    after = sample()
    latencies.sort()
    return Result(
        backend=backend,
        updates=updates,
        wall_s=wall_s,
        latencies_ns=latencies,
        client_user_s=after.client_user - before.client_user,
        client_sys_s=after.client_sys - before.client_sys,
        server_cpu_s=(
            None if after.server is None or before.server is None else after.server - before.server
        ),
        server_cpu_source=server_cpu_source,
        machine_busy_s=after.machine_busy - before.machine_busy,
    )


async def bench_redis(server: RedisServer, jobs: int, updates: int, warmup: int) -> Result:
    # A fresh prefix per run: never collides with data already in a server given by --redis-url.
    store = RedisJobStore.from_url(server.url, StoreOptions(prefix=f"bench{uuid.uuid4().hex[:8]}"))
    try:
        result = await bench_store(
            "redis", store, jobs, updates, warmup, server.cpu_seconds, server.cpu_source
        )
        await drop_redis_keys(store)
    finally:
        await store.aclose()
    return result


async def drop_redis_keys(store: RedisJobStore) -> None:
    client = store._redis  # the bench owns this store; tidy up a shared --redis-url server
    pattern = f"{store.keys.prefix}:*"
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.delete(*batch)
            batch.clear()
    if batch:
        await client.delete(*batch)


async def bench_sqlite(jobs: int, updates: int, warmup: int, parent: str | None) -> Result:
    with tempfile.TemporaryDirectory(prefix="pgw-bench-sqlite-", dir=parent) as directory:
        store = SqliteJobStore(Path(directory) / "bench.db")
        try:
            return await bench_store("sqlite", store, jobs, updates, warmup, None, "-")
        finally:
            await store.aclose()


# -- reporting ---------------------------------------------------------------------------------


def print_result(result: Result) -> None:
    cpu_total = result.client_user_s + result.client_sys_s
    print(f"  updates          {result.updates:,} in {result.wall_s:.2f} s")
    print(f"  throughput       {result.rate:,.0f} updates/s")
    print(
        f"  latency ms       p50 {result.percentile_ms(0.50):.3f}"
        f"  p99 {result.percentile_ms(0.99):.3f}"
        f"  p99.9 {result.percentile_ms(0.999):.3f}"
        f"  max {result.latencies_ns[-1] / 1e6:.3f}"
    )
    print(
        f"  client CPU       {result.client_cpu_us:.1f} µs/update"
        f" (user {result.client_user_s:.2f} s + sys {result.client_sys_s:.2f} s;"
        f" {cpu_total / result.wall_s:.0%} of one core)"
    )
    if result.server_cpu_s is not None and result.server_cpu_us is not None:
        print(
            f"  redis-server CPU {result.server_cpu_us:.1f} µs/update"
            f" ({result.server_cpu_s:.2f} s; {result.server_cpu_s / result.wall_s:.0%} of one core;"
            f" {result.server_cpu_source})"
        )
    print(f"  other programs   {result.others_share:.0%} of one core meanwhile")
    if result.others_share > NOISY_SHARE:
        print(
            "  WARNING: other programs competed for the CPUs during this run;"
            " its numbers understate what the store can do"
        )


TABLE_HEADER = (
    f"{'backend':<8} {'updates':>8} {'updates/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
    f" {'p99.9 ms':>9} {'client µs/upd':>14} {'client core%':>13} {'redis µs/upd':>13}"
    f" {'redis core%':>12} {'others core%':>13}"
)


def table_row(result: Result, note: str = "") -> str:
    client_share = (result.client_user_s + result.client_sys_s) / result.wall_s
    server_us = "-" if result.server_cpu_us is None else f"{result.server_cpu_us:.1f}"
    server_share = (
        "-" if result.server_cpu_s is None else f"{result.server_cpu_s / result.wall_s:.0%}"
    )
    return (
        f"{result.backend:<8} {result.updates:>8} {result.rate:>10,.0f}"
        f" {result.percentile_ms(0.50):>8.3f} {result.percentile_ms(0.99):>8.3f}"
        f" {result.percentile_ms(0.999):>9.3f} {result.client_cpu_us:>14.1f}"
        f" {client_share:>13.0%} {server_us:>13} {server_share:>12}"
        f" {result.others_share:>13.0%}{note}"
    )


def print_table(results: list[Result]) -> None:
    """Every run; with repeats, the run of median throughput per backend is marked."""
    print(TABLE_HEADER)
    print("-" * len(TABLE_HEADER))
    medians: set[int] = set()
    for backend in dict.fromkeys(result.backend for result in results):
        runs = sorted(
            (result for result in results if result.backend == backend), key=lambda r: r.rate
        )
        if len(runs) > 1:
            medians.add(id(runs[(len(runs) - 1) // 2]))
    for result in results:
        notes = []
        if id(result) in medians:
            notes.append("median")
        if result.others_share > NOISY_SHARE:
            notes.append("noisy")
        print(table_row(result, f"  {', '.join(notes)}" if notes else ""))


def print_environment(args: argparse.Namespace, loop_name: str) -> None:
    import hiredis
    import pydantic

    print(
        f"python {platform.python_version()}  redis-py {redis.__version__}"
        f"  hiredis {hiredis.__version__}  pydantic {pydantic.VERSION}  loop {loop_name}"
    )
    print(
        f"cpus {os.cpu_count()} (this process may run on {sorted(os.sched_getaffinity(0))})"
        f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        f"  pinned {'yes' if args.pin else 'no'}"
    )


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput, latency and CPU of concurrent store.apply(Update) per backend."
    )
    parser.add_argument("--backend", choices=("redis", "sqlite", "both"), default="both")
    parser.add_argument(
        "--updates",
        type=int,
        default=None,
        help="measured updates per backend (default: redis 50000, sqlite 20000)",
    )
    parser.add_argument("--jobs", type=int, default=64, help="jobs = concurrent tasks (64)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="updates run first and excluded from the numbers (default: 10%% of --updates)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per backend, each on fresh jobs (and a fresh server or file); the table marks"
        " the median",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="use this Redis instead of starting a private redis-server (keys get a fresh "
        "prefix and are deleted afterwards)",
    )
    parser.add_argument(
        "--sqlite-dir",
        default=None,
        help="where the temporary SQLite file goes (default: the system temp dir); put it on the"
        " disk the gateway will use, since COMMIT cost depends on the filesystem",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for the machine to be idle (other programs"
        f" under {NOISY_SHARE:.0%}% of a core); 0 (default) does not wait",
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"pin this process to core {CLIENT_CORE} and the private redis-server to core "
        f"{SERVER_CORE} (as taskset -c)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1 or (args.updates is not None and args.updates < 1):
        parser.error("--jobs, --repeat and --updates must be positive")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def event_loop_factory(use_uvloop: bool) -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    if not use_uvloop:
        return asyncio.new_event_loop, "asyncio"
    if importlib.util.find_spec("uvloop") is None:
        sys.exit("--uvloop: uvloop is not installed (.venv/bin/pip install uvloop)")
    uvloop: Any = importlib.import_module("uvloop")
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory, f"uvloop {uvloop.__version__}"


def run(
    factory: Callable[[], asyncio.AbstractEventLoop], coro: Coroutine[Any, Any, Result]
) -> Result:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


@contextmanager
def given_redis(url: str) -> Iterator[RedisServer]:
    yield RedisServer(url=url, pid=None)


def run_backend(
    backend: str,
    args: argparse.Namespace,
    factory: Callable[[], asyncio.AbstractEventLoop],
    updates: int,
    warmup: int,
) -> Result:
    if backend == "sqlite":
        parent = args.sqlite_dir or tempfile.gettempdir()
        print(
            f"sqlite: temporary file under {parent} ({filesystem_of(parent)}), WAL,"
            " one connection on one executor thread (every apply is serialized there),"
            f" {args.jobs} jobs/tasks, {warmup:,} warm-up + {updates:,} measured updates"
        )
        return run(factory, bench_sqlite(args.jobs, updates, warmup, args.sqlite_dir))
    with given_redis(args.redis_url) if args.redis_url else private_redis(args.pin) as server:
        where = "given" if args.redis_url else "private"
        print(
            f"redis: {where} redis-server {server_version(server.url)} at {server.url},"
            f" {args.jobs} jobs/tasks, {warmup:,} warm-up + {updates:,} measured updates"
        )
        return run(factory, bench_redis(server, args.jobs, updates, warmup))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    factory, loop_name = event_loop_factory(args.uvloop)
    if args.pin:
        if not {CLIENT_CORE, SERVER_CORE} <= os.sched_getaffinity(0):
            sys.exit(f"--pin needs cores {SERVER_CORE} and {CLIENT_CORE}")
        os.sched_setaffinity(0, {CLIENT_CORE})
    print_environment(args, loop_name)
    backends = ["redis", "sqlite"] if args.backend == "both" else [args.backend]
    results: list[Result] = []
    for backend in backends:
        updates = args.updates or DEFAULT_UPDATES[backend]
        warmup = updates // 10 if args.warmup is None else args.warmup
        for _ in range(args.repeat):
            print()
            if args.wait_idle > 0:
                wait_for_idle(args.wait_idle)
            result = run_backend(backend, args, factory, updates, warmup)
            print_result(result)
            results.append(result)
    print()
    print_table(results)


if __name__ == "__main__":
    main()
