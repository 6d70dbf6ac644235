"""Fan-out benchmark of the WebSocket gateway: idle connections, throughput, latency, reconnects.

A script, not a test: it prints numbers and never passes or fails. ``docs/performance.md`` holds
the method and the measured table.

Layout (2 cores): the gateway (``progress-gateway serve``, one process) runs alone on core 0
(``taskset -c 0``); a private ``redis-server``, the Node load generators (``bench/loadgen``, the
``ws`` library, several processes) and the publisher run on core 1, and so does this script.
Every figure is read from ``/proc``: CPU as utime+stime of ``/proc/<pid>/stat``, memory as VmRSS
of ``/proc/<pid>/status``; the busy time of each core comes from ``/proc/stat``.

The publisher writes through the real store path, ``RedisJobStore.apply(job, Update.build(...))``:
one Lua script per update that writes the job and PUBLISHes its snapshot. It puts
``time.time_ns()`` at the start of the snapshot's ``message``; a client subtracts it from its own
``CLOCK_REALTIME`` on receipt (the load generator calibrates its monotonic clock to the wall clock
once at start, to the microsecond), so latency is publish call → frame handed to the client.

Scenarios (``--scenarios``, all by default):

* ``idle``: ``--idle-clients`` connections, each authenticated and subscribed to its own job;
  RSS per connection = (RSS after - RSS before) / N; held for ``--idle-hold-s`` (past one server
  ping round), then one update per job proves that every connection still receives.
* ``throughput``: ``--tp-clients`` clients on ``--tp-jobs`` jobs; the publisher's rate grows by
  ``--tp-factor`` per step until deliveries/s stop growing; deliveries/s and gateway CPU per
  delivery at each step.
* ``latency``: ``--lat-clients`` clients each on its own job, and ``--lat-shared-clients`` on
  ``--lat-shared-jobs`` jobs, every job updated ``--lat-rate`` times a second; p50/p99/p99.9.
* ``storm``: ``--storm-clients`` connected and subscribed; every socket drops at once (TCP reset)
  and reconnects at once (``--storm-mode drop``), or the gateway is SIGKILLed and restarted
  (``restart``); time until every client has its ``ack`` again.

The private Redis is started on a free port and killed at the end; the machine's shared Redis is
never touched. ``--quick`` shrinks every size for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import http.client
import itertools
import json
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = ROOT / "bench" / "loadgen" / "loadgen.js"
GATEWAY_CORE = 0
LOAD_CORE = 1
SECRET = "bench-fanout-secret-" + "k" * 40
PREFIX = "pgwbench"
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
NOFILE = 262_144
FD_RESERVE = 40
LOCAL_ADDRESSES = [f"127.0.0.{n}" for n in range(1, 9)]
SCENARIOS = ("idle", "throughput", "latency", "storm")

Json: TypeAlias = dict[str, Any]


# -- /proc -------------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def core_times_s() -> dict[int, tuple[float, float]]:
    """(busy, irq + softirq) seconds of each core so far; busy is all but idle and iowait.

    Loopback TCP runs the receiving side's network stack in softirq context on the sender's
    core; that time is in the core's softirq column, not in any process's utime/stime.
    """
    times: dict[int, tuple[float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            name, *values = line.split()
            ticks = [int(v) for v in values]
            busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICKS_PER_S
            times[int(name[3:])] = (busy, (ticks[5] + ticks[6]) / TICKS_PER_S)
    return times


@dataclass
class Meter:
    """CPU of named processes and of each core over a window: ``start()``, then ``stop()``."""

    pids: dict[str, int]
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    cores_s: dict[int, float] = field(default_factory=dict)
    softirq_s: dict[int, float] = field(default_factory=dict)
    _t0: float = 0.0
    _cpu0: dict[str, float] = field(default_factory=dict)
    _cores0: dict[int, tuple[float, float]] = field(default_factory=dict)

    def start(self) -> Meter:
        self._t0 = time.perf_counter()
        self._cpu0 = {name: _cpu_or_zero(pid) for name, pid in self.pids.items()}
        self._cores0 = core_times_s()
        return self

    def stop(self) -> Meter:
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = {name: _cpu_or_zero(pid) - self._cpu0[name] for name, pid in self.pids.items()}
        cores, before = core_times_s(), self._cores0
        self.cores_s = {c: cores[c][0] - before.get(c, (0.0, 0.0))[0] for c in cores}
        self.softirq_s = {c: cores[c][1] - before.get(c, (0.0, 0.0))[1] for c in cores}
        return self

    def share(self, name: str) -> float:
        """CPU of one process as a share of one core."""
        return self.cpu_s.get(name, 0.0) / self.wall_s if self.wall_s else 0.0

    def core_share(self, core: int) -> float:
        return self.cores_s.get(core, 0.0) / self.wall_s if self.wall_s else 0.0

    def softirq_share(self, core: int) -> float:
        return self.softirq_s.get(core, 0.0) / self.wall_s if self.wall_s else 0.0

    def foreign_share(self) -> float:
        """Busy time not spent in our processes nor in softirq, as a share of one core."""
        if not self.wall_s:
            return 0.0
        ours = sum(self.cpu_s.values()) + sum(self.softirq_s.values())
        return max(0.0, sum(self.cores_s.values()) - ours) / self.wall_s

    def foreign_core_share(self, core: int, ours: Sequence[str]) -> float:
        """Busy time of one core beyond the named processes and softirq (others' programs)."""
        if not self.wall_s:
            return 0.0
        used = sum(self.cpu_s.get(name, 0.0) for name in ours) + self.softirq_s.get(core, 0.0)
        return max(0.0, self.cores_s.get(core, 0.0) - used) / self.wall_s


def _cpu_or_zero(pid: int) -> float:
    try:
        return proc_cpu_s(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def raise_nofile() -> int:
    """Room for 20k+ sockets in this process and every child; returns the limit in force.

    Raising the hard limit needs CAP_SYS_RESOURCE; without it the soft limit goes up to the hard
    one and the caller sizes the scenarios to fit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
    except OSError:
        ceiling = NOFILE
    wanted = min(NOFILE, ceiling)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError) as exc:
        log(f"cannot raise the hard RLIMIT_NOFILE ({hard}) to {wanted}: {exc}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log(f"RLIMIT_NOFILE {soft}/{hard}")
    return soft


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv]


# -- histograms ----------------------------------------------------------------------------------


@dataclass
class Histogram:
    """Counts keyed by bucket lower bound (µs), as the load generator sends them."""

    counts: dict[float, int] = field(default_factory=dict)
    negative: int = 0
    max_us: float = 0.0

    def merge(self, data: Json) -> None:
        for key, count in data.get("counts", {}).items():
            self.counts[float(key)] = self.counts.get(float(key), 0) + int(count)
        self.negative += int(data.get("negative", 0))
        self.max_us = max(self.max_us, float(data.get("max", 0.0)))

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def quantile(self, q: float) -> float:
        total = self.n
        if total == 0:
            return float("nan")
        rank = q * total
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                return key
        return max(self.counts)

    def summary_ms(self) -> Json:
        return {
            "n": self.n,
            "p50_ms": self.quantile(0.50) / 1000,
            "p90_ms": self.quantile(0.90) / 1000,
            "p99_ms": self.quantile(0.99) / 1000,
            "p999_ms": self.quantile(0.999) / 1000,
            "max_ms": self.max_us / 1000,
            "negative": self.negative,
        }


# -- child processes speaking JSON lines ------------------------------------------------------


class Agent:
    """A child process driven by JSON commands on stdin, answering JSON events on stdout."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self._stderr = (log_dir / f"{name}.log").open("ab")
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=ROOT,
            text=True,
            bufsize=1,
        )
        self._events: queue.Queue[Json | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if line:
                try:
                    self._events.put(json.loads(line))
                except json.JSONDecodeError:
                    log(f"{self.name}: {line[:200]}")
        self._events.put(None)

    def send(self, command: Json) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command, separators=(",", ":")) + "\n")
        self.process.stdin.flush()

    def expect(self, event: str, timeout: float) -> Json:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {event!r} within {timeout:.0f}s")
            try:
                message = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if message is None:
                raise RuntimeError(f"{self.name} exited ({self.process.poll()}); see its log")
            if message.get("ev") == event:
                return message
            log(f"{self.name}: unexpected {message}")

    def ask(self, command: Json, event: str, timeout: float = 60.0) -> Json:
        self.send(command)
        return self.expect(event, timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send({"cmd": "exit"})
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._stderr.close()


def ask_all(agents: Sequence[Agent], command: Json, event: str, timeout: float) -> list[Json]:
    for agent in agents:
        agent.send(command)
    return [agent.expect(event, timeout) for agent in agents]


# -- servers -------------------------------------------------------------------------------------


class RedisServer:
    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory)),
            *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
            *("--logfile", str(directory / "redis.log")),
        ]
        self.process = subprocess.Popen(
            pinned(LOAD_CORE, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while not self._ping():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start (see {directory}/redis.log)")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            parts = [f"*{len(args)}\r\n".encode()]
            for arg in args:
                raw = arg.encode()
                parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
            sock.sendall(b"".join(parts))
            return sock.recv(65536)

    def commands_processed(self) -> int:
        """Redis's ``total_commands_processed``: what the server was asked, by anyone."""
        for line in self.command("INFO", "stats").decode().splitlines():
            if line.startswith("total_commands_processed:"):
                return int(line.split(":", 1)[1])
        raise RuntimeError("INFO stats has no total_commands_processed")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Gateway:
    """``progress-gateway serve`` pinned to core 0, on a fixed port (kept across restarts)."""

    def __init__(self, redis_url: str, log_dir: Path, log_level: str, source: Path) -> None:
        self.source = source
        self.port = free_port()
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_env: dict[str, str] = {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.pop("REDIS_URL", None)
        env.update(
            GATEWAY_SECRET=SECRET,
            GATEWAY_REDIS_URL=self.redis_url,
            GATEWAY_PORT=str(self.port),
            GATEWAY_KEY_PREFIX=PREFIX,
            GATEWAY_MAX_CONNECTIONS_PER_OWNER="100000",
        )
        env.update(self.extra_env)
        if self.source != ROOT:
            env["PYTHONPATH"] = str(self.source)
        return env

    def argv(self) -> list[str]:
        # ``python -m progress_gateway.cli serve`` is what the ``progress-gateway`` script runs;
        # with
        # ``--gateway-src`` the package comes from that directory (e.g. a copy under test).
        return [
            sys.executable,
            "-m",
            "progress_gateway.cli",
            "serve",
            "--log-level",
            self.log_level,
        ]

    def start(self) -> None:
        with (self.log_dir / "gateway.log").open("ab") as out:
            self.process = subprocess.Popen(
                pinned(GATEWAY_CORE, self.argv()),
                env=self.environment(),
                cwd=self.source,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}: see its log")
            if time.monotonic() > deadline:
                raise RuntimeError("gateway not ready within 30s")
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/readyz")
            ok = connection.getresponse().status == 200
            connection.close()
            return ok
        except OSError:
            return False

    def stats(self, *, gc: bool = False) -> Json | None:
        """The server's own reading of its memory, where it has one (the Node peer's, after a
        full GC with ``gc``); the gateway's is /proc and /metrics only."""
        return None

    def metrics(self) -> dict[str, float]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.request("GET", "/metrics")
        body = connection.getresponse().read().decode()
        connection.close()
        values: dict[str, float] = {}
        for line in body.splitlines():
            if line.startswith("pgw_") and " " in line:
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # SIGINT twice: the first starts the drain, the second stops at once.
            self.process.send_signal(signal.SIGINT)
            time.sleep(0.2)
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- jobs and tokens -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Jobs (each owned by its own owner) and which jobs each client subscribes to."""

    jobs: list[str]
    owners: list[str]
    clients: list[tuple[str, list[str]]]  # (token, job ids)


def make_plan(redis_url: str, n_jobs: int, n_clients: int, tag: str) -> Plan:
    """``n_jobs`` jobs, client ``i`` on job ``i % n_jobs``, one owner (and token) per job."""
    from progress_gateway.auth import issue_token

    jobs = [str(uuid.uuid4()) for _ in range(n_jobs)]
    owners = [f"bench-{tag}-{i}" for i in range(n_jobs)]
    asyncio.run(_create_jobs(redis_url, jobs, owners))
    tokens = [issue_token(SECRET, owner, 4 * 3600) for owner in owners]
    clients = [(tokens[i % n_jobs], [jobs[i % n_jobs]]) for i in range(n_clients)]
    return Plan(jobs, owners, clients)


async def _create_jobs(redis_url: str, jobs: list[str], owners: list[str]) -> None:
    from progress_core.models import Create
    from progress_core.store.base import StoreOptions
    from progress_core.store.redis import RedisJobStore

    store = RedisJobStore.from_url(redis_url, StoreOptions(prefix=PREFIX))
    gate = asyncio.Semaphore(64)  # redis-py 8 pools raise past 100 connections

    async def create(job_id: str, owner: str) -> None:
        async with gate:
            await store.create(Create.build(owner=owner, kind="export", job_id=job_id))

    try:
        await asyncio.gather(*(create(j, o) for j, o in zip(jobs, owners, strict=True)))
    finally:
        await store.aclose()


def message_filler(redis_url: str, job_id: str, snapshot_bytes: int) -> int:
    """Characters of padding after the timestamp so an updated snapshot is ~``snapshot_bytes``."""
    reply = asyncio.run(_snapshot(redis_url, job_id))
    with_timestamp = len(reply.encode()) - len("null") + len('"1700000000000000000"')
    return max(0, snapshot_bytes - with_timestamp - 1)


async def _snapshot(redis_url: str, job_id: str) -> str:
    from progress_core.store.base import StoreOptions
    from progress_core.store.redis import RedisJobStore

    store = RedisJobStore.from_url(redis_url, StoreOptions(prefix=PREFIX))
    try:
        (raw,) = await store.snapshots([job_id])
    finally:
        await store.aclose()
    assert raw is not None
    return raw


# -- the publisher (a child process: ``fanout.py _publish``) -------------------------------------


def publisher_main(redis_url: str, filler: int, inflight: int, mode: str) -> None:
    """Read ``run``/``once`` commands on stdin; answer one JSON line per command."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(_publisher(redis_url, filler, inflight, mode))


class _Snapshots:
    """``--publisher-mode publish``: the snapshots apply.lua would publish, without the write.

    Each job's stored snapshot is the template; every update bumps ``seq`` and sets ``status``,
    ``message``, ``updated_at`` and ``heartbeat_at`` as the script does, then PUBLISHes it on the
    job's channel. The gateway cannot tell the difference; Redis does ~10x less work. The
    templates are split once around the changing fields, so an update costs a string join, not a
    JSON encode: the publisher shares core 1 with Redis and the load generators.
    """

    MARKS = {"message": "\x01M", "seq": "\x01S", "updated_at": "\x01U", "heartbeat_at": "\x01H"}

    def __init__(self, channel: dict[str, str], templates: dict[str, Json]) -> None:
        self.channel = {job_id: name.encode() for job_id, name in channel.items()}
        self.seq = {job_id: int(job["seq"]) for job_id, job in templates.items()}
        self.parts = {job_id: self._split(job) for job_id, job in templates.items()}

    @classmethod
    def _split(cls, job: Json) -> list[str]:
        marked = dict(job, status="running", **cls.MARKS)
        text = json.dumps(marked, separators=(",", ":"), ensure_ascii=False)
        for mark in cls.MARKS.values():
            text = text.replace(json.dumps(mark), "\x00")
        parts = text.split("\x00")
        names = sorted(cls.MARKS, key=lambda name: text.find(f'"{name}":'))
        assert names == ["message", "seq", "updated_at", "heartbeat_at"], names
        return parts

    def next(self, job_id: str, message: str, now: str) -> tuple[bytes, bytes]:
        """``message`` must need no JSON escaping (the benchmark's digits and padding)."""
        seq = self.seq[job_id] = self.seq[job_id] + 1
        p = self.parts[job_id]
        quoted = f'"{now}"'
        text = f'{p[0]}"{message}"{p[1]}{seq}{p[2]}{quoted}{p[3]}{quoted}{p[4]}'
        return self.channel[job_id], text.encode()


class _RawPublisher:
    """PUBLISHes over one plain connection: commands packed by hiredis, replies only counted."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import hiredis

        self.reader, self.writer = reader, writer
        self.parser = hiredis.Reader()
        self.pending: collections.deque[list[Any]] = collections.deque()  # [replies left, future]
        self.task = asyncio.create_task(self._replies())

    @classmethod
    async def connect(cls, redis_url: str) -> _RawPublisher:
        from urllib.parse import urlsplit

        url = urlsplit(redis_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port or 6379)
        return cls(reader, writer)

    async def publish(self, messages: list[tuple[bytes, bytes]]) -> None:
        import hiredis

        self.writer.write(b"".join(hiredis.pack_command((b"PUBLISH", c, m)) for c, m in messages))  # type: ignore[arg-type]
        done = asyncio.get_running_loop().create_future()
        self.pending.append([len(messages), done])
        await done

    async def _replies(self) -> None:
        while data := await self.reader.read(1 << 16):
            self.parser.feed(data)
            while self.parser.gets() is not False:
                head = self.pending[0]
                head[0] -= 1
                if head[0] == 0:
                    self.pending.popleft()[1].set_result(None)

    async def aclose(self) -> None:
        self.task.cancel()
        self.writer.close()


async def _publisher(redis_url: str, filler: int, inflight: int, mode: str) -> None:
    from datetime import UTC, datetime

    from progress_core.errors import GatewayError
    from progress_core.models import Update, format_time
    from progress_core.store.base import StoreOptions
    from progress_core.store.redis import RedisJobStore

    store = RedisJobStore.from_url(redis_url, StoreOptions(prefix=PREFIX))
    pad = " " + "x" * (filler - 1) if filler > 0 else ""
    errors = 0
    snapshots: _Snapshots | None = None
    raw = await _RawPublisher.connect(redis_url) if mode == "publish" else None

    async def prepare(jobs: list[str]) -> None:
        nonlocal snapshots
        if mode != "publish":
            return
        missing = [job_id for job_id in jobs if snapshots is None or job_id not in snapshots.seq]
        if not missing:
            return
        known: dict[str, Json] = {}
        for job_id, stored in zip(missing, await store.snapshots(missing), strict=True):
            assert stored is not None, job_id
            known[job_id] = json.loads(stored)
        fresh = _Snapshots({j: store.keys.channel(j) for j in known}, known)
        if snapshots is not None:
            fresh.channel.update(snapshots.channel)
            fresh.seq.update(snapshots.seq)
            fresh.parts.update(snapshots.parts)
        snapshots = fresh

    async def write(batch: list[str]) -> None:
        nonlocal errors
        try:
            if snapshots is None:
                for job_id in batch:
                    update = Update.build(message=f"{time.time_ns()}{pad}")
                    await store.apply(job_id, update)
                return
            assert raw is not None
            now = format_time(datetime.now(UTC))
            await raw.publish(
                [snapshots.next(job_id, f"{time.time_ns()}{pad}", now) for job_id in batch]
            )
        except GatewayError as exc:
            errors += 1
            if errors <= 5:
                print(f"publisher: {exc}", file=sys.stderr, flush=True)

    async def paced(jobs: list[str], rate: float, seconds: float) -> Json:
        await prepare(jobs)
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        issued = 0
        worst_lag = 0
        index = 0
        while True:
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
            due = int(rate * elapsed) + 1
            # Issue what is due but never more than the in-flight bound: a publisher that cannot
            # keep up falls behind (and says so) instead of building a backlog. Store mode
            # applies one update per task; publish mode pipelines each tick's batch.
            while issued < due and len(tasks) < inflight:
                size = 1 if snapshots is None else min(due - issued, 500)
                batch = [jobs[(index + k) % len(jobs)] for k in range(size)]
                index += size
                task = asyncio.create_task(write(batch))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                issued += size
            worst_lag = max(worst_lag, due - issued)
            # At least 1 ms: uvloop (libuv) timers have millisecond resolution, a shorter sleep
            # fires at once and turns this loop into a busy spin.
            await asyncio.sleep(max(0.001, min(0.01, issued / rate - elapsed)))
        if tasks:
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
        return {
            "ev": "ran",
            "issued": issued,
            "seconds": wall,
            "rate": issued / wall,
            "target": rate,
            "behind": max(0, int(rate * wall) - issued),
            "worst_backlog": worst_lag,
            "errors": errors,
        }

    async def once(jobs: list[str]) -> Json:
        await prepare(jobs)
        started = time.perf_counter()
        gate = asyncio.Semaphore(inflight)
        size = 1 if snapshots is None else 200

        async def gated(batch: list[str]) -> None:
            async with gate:
                await write(batch)

        batches = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        await asyncio.gather(*(gated(batch) for batch in batches))
        wall = time.perf_counter() - started
        return {"ev": "once", "issued": len(jobs), "seconds": wall, "errors": errors}

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)  # job lists are long lines
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ev": "hello", "pid": os.getpid()}), flush=True)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command["cmd"] == "run":
                reply = await paced(command["jobs"], command["rate"], command["seconds"])
            elif command["cmd"] == "once":
                reply = await once(command["jobs"])
            elif command["cmd"] == "exit":
                break
            else:
                reply = {"ev": "error", "message": f"unknown command {command['cmd']}"}
            print(json.dumps(reply), flush=True)
    finally:
        if raw is not None:
            await raw.aclose()
        await store.aclose()


# -- a bench run ---------------------------------------------------------------------------------


class Bench:
    """One benchmark run: the server under test on core 0; Redis, the publisher and the load
    generators on core 1; the scenarios, each with a fresh server and load generators.

    ``bench/peer_socketio.py`` subclasses it for the Socket.IO peer. What differs between the two
    is in the hooks (the server, the jobs, the child processes' command lines, a few log details
    and the attributes below); the scenarios and their measurements are these.
    """

    # The server's name among the metered processes, in the figures' keys and in the logs.
    SERVER = "gateway"
    # The gateway's process (bench/connection_memory.py runs it under tracemalloc).
    GATEWAY: type[Gateway] = Gateway

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.redis = RedisServer(work / "redis")
        self.gateway = self.make_server()
        self.loadgens: list[Agent] = []
        self.publisher: Agent | None = None
        self.results: Json = {}
        self.worst_per_100ms: dict[int, float] = {}
        self.loadgen_gc_per_100ms: dict[int, float] = {}
        self.loadgen_gc_total_ms = 0.0
        self.samples_per_100ms: dict[int, list[float]] = {}

    # -- what the peer's benchmark changes -------------------------------------------------------

    def make_server(self) -> Gateway:
        args = self.args
        gateway = self.GATEWAY(
            self.redis.url, self.work, args.gateway_log_level, Path(args.gateway_src).resolve()
        )
        for setting in args.gateway_env:
            name, sep, value = setting.partition("=")
            if not sep or not name.startswith("GATEWAY_"):
                raise SystemExit(f"--gateway-env wants GATEWAY_NAME=VALUE, not {setting!r}")
            gateway.extra_env[name] = value
        return gateway

    def loadgen_argv(self) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise SystemExit("node is not installed")
        if not (LOADGEN.parent / "node_modules" / "ws").exists():
            raise SystemExit("run `npm install` in bench/loadgen first")
        return [node, "--max-old-space-size=4096", str(LOADGEN)]

    def publisher_argv(self, filler: int, mode: str | None) -> list[str]:
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            "_publish",
            self.redis.url,
            str(filler),
            str(self.args.publisher_inflight),
            mode or self.args.publisher_mode,
        ]

    def flush_store(self) -> None:
        """Empty the store before a scenario creates its jobs."""
        self.redis.command("FLUSHALL")

    def new_plan(self, n_jobs: int, n_clients: int, tag: str) -> Plan:
        return make_plan(self.redis.url, n_jobs, n_clients, tag)

    def filler(self, plan: Plan) -> int:
        """The publisher's padding after the timestamp, for ``--snapshot-bytes`` snapshots."""
        return message_filler(self.redis.url, plan.jobs[0], self.args.snapshot_bytes)

    def fixed_rates(self) -> list[float]:
        """Publish rates measured before the ramp (which then starts from the last of them)."""
        return []

    def profile_peak(self, publisher: Agent, plan: Plan, steps: list[Json]) -> Json | None:
        if not self.args.profile:
            return None
        peak = max(steps, key=lambda s: s["deliveries_per_s"])
        return self._profile(publisher, plan, peak["target_rate"], self.args.profile)

    def core1_detail(self, step: Json) -> str:
        """What a throughput step's log line says of core 1's users."""
        return f"load gen. {step['loadgen_share']:.0%}"

    def latency_detail(self, result: Json) -> str:
        """How a latency run's log line ends: CPU shares."""
        return f"gateway {result['gateway_cpu_share']:.0%}, core 1 {result['core1_share']:.0%}"

    def about(self) -> Json:
        """Results recorded before the settings (the peer's package versions)."""
        return {}

    def run_scenarios(self) -> None:
        a = self.args
        scenarios = a.scenarios
        if "idle" in scenarios:
            self.results["idle"] = self.run_idle()
        if "throughput" in scenarios:
            self.results["throughput"] = self.run_throughput()
        if "latency" in scenarios:
            for mode in a.lat_own_modes:
                self.results[f"latency_own_{mode}"] = self.run_latency(
                    f"own-{mode}", a.lat_clients, a.lat_clients, mode
                )
            self.results["latency_shared"] = self.run_latency(
                "shared", a.lat_shared_clients, a.lat_shared_jobs, a.publisher_mode
            )
        if "storm" in scenarios:
            for mode in a.storm_mode:
                self.results[f"storm_{mode}"] = self.run_storm(mode)

    # -- processes -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start_loadgens(self) -> None:
        argv = pinned(LOAD_CORE, self.loadgen_argv())
        self.loadgens = []
        for index in range(self.args.loadgens):
            agent = Agent(f"loadgen{index}", argv, self.work, self.env())
            agent.expect("hello", 30)
            self.loadgens.append(agent)

    def start_publisher(self, filler: int = 0, mode: str | None = None) -> Agent:
        argv = pinned(LOAD_CORE, self.publisher_argv(filler, mode))
        agent = Agent("publisher", argv, self.work, self.env())
        agent.expect("hello", 30)
        self.publisher = agent
        return agent

    def stop_clients(self) -> None:
        for agent in [*self.loadgens, *([self.publisher] if self.publisher else [])]:
            agent.stop()
        self.loadgens = []
        self.publisher = None

    def pids(self) -> dict[str, int]:
        pids = {self.SERVER: self.gateway.pid, "redis": self.redis.process.pid}
        for agent in self.loadgens:
            pids[agent.name] = agent.pid
        if self.publisher is not None:
            pids["publisher"] = self.publisher.pid
        pids["orchestrator"] = os.getpid()
        return pids

    def loadgen_cpu(self, meter: Meter) -> float:
        return sum(v for k, v in meter.cpu_s.items() if k.startswith("loadgen"))

    def loadgen_rss(self) -> int:
        return sum(proc_rss(agent.pid) for agent in self.loadgens)

    @contextlib.contextmanager
    def fresh(self, name: str) -> Iterator[None]:
        """A fresh gateway, load generators and an empty Redis for one scenario."""
        self.wait_quiet(name)
        self.gateway.start()
        self.start_loadgens()
        try:
            yield
        finally:
            self.stop_clients()
            self.gateway.stop()

    def wait_quiet(self, name: str) -> None:
        """Wait (bounded) until programs other than ours use little CPU; record what was seen."""
        limit, waited = self.args.wait_idle_s, 0.0
        while True:
            meter = Meter({}).start()
            time.sleep(2.0)
            foreign = meter.stop().foreign_share()
            load = os.getloadavg()[0]
            if foreign < self.args.quiet_share or waited >= limit:
                break
            log(f"{name}: machine busy ({foreign:.0%} of a core used by others); waiting")
            waited += 2.0
        self.results.setdefault("quiet", {})[name] = {
            "foreign_share_before": round(foreign, 3),
            "loadavg_1m": load,
            "waited_s": waited,
        }
        log(f"{name}: others use {foreign:.0%} of a core (load avg {load:.2f}); starting")

    def open_clients(self, plan: Plan, *, timeout: float = 600.0) -> Json:
        shares: list[list[tuple[str, list[str]]]] = [[] for _ in self.loadgens]
        for index, client in enumerate(plan.clients):
            shares[index % len(self.loadgens)].append(client)
        concurrency = max(1, self.args.open_concurrency // len(self.loadgens))
        started = time.perf_counter()
        for agent, share in zip(self.loadgens, shares, strict=True):
            agent.send(
                {
                    "cmd": "open",
                    "url": self.gateway.ws_url,
                    "clients": share,
                    "concurrency": concurrency,
                    "local_addresses": LOCAL_ADDRESSES,
                }
            )
        replies = [agent.expect("opened", timeout) for agent in self.loadgens]
        seconds = time.perf_counter() - started
        connect = Histogram()
        failures: dict[str, int] = {}
        for reply in replies:
            connect.merge(reply.get("connect_us", {}))
            for reason, count in reply["failures"].items():
                failures[reason] = failures.get(reason, 0) + count
        ok = sum(reply["ok"] for reply in replies)
        return {
            "ok": ok,
            "failed": sum(reply["failed"] for reply in replies),
            "seconds": seconds,
            "per_s": ok / seconds if seconds else 0.0,
            "connect_ms": connect.summary_ms(),
            "failures": failures,
        }

    def collect(self) -> tuple[int, int, Histogram, Json]:
        replies = ask_all(self.loadgens, {"cmd": "stats"}, "stats", 60)
        latency = Histogram()
        worst: dict[int, float] = {}
        gc_pauses: dict[int, float] = {}
        self.samples_per_100ms = {}
        for reply in replies:
            latency.merge(reply["latency_us"])
            for slot, values in (reply.get("samples_per_100ms") or {}).items():
                self.samples_per_100ms.setdefault(int(slot), []).extend(values)
            for slot, us in reply.get("worst_per_100ms", {}).items():
                worst[int(slot)] = max(worst.get(int(slot), 0.0), float(us))
            for slot, ms in (reply.get("gc_ms_per_100ms") or {}).items():
                gc_pauses[int(slot)] = max(gc_pauses.get(int(slot), 0.0), float(ms))
        self.worst_per_100ms = worst
        self.loadgen_gc_per_100ms = gc_pauses
        self.loadgen_gc_total_ms = sum(float(r.get("gc_total_ms", 0.0)) for r in replies)
        totals = {
            "open": sum(r["open"] for r in replies),
            "acked": sum(r["acked"] for r in replies),
            "errors": sum(r["errors"] for r in replies),
            "failures": _sum_maps([r["failures"] for r in replies]),
        }
        return (
            sum(r["updates"] for r in replies),
            sum(r["update_bytes"] for r in replies),
            latency,
            totals,
        )

    def reset(self, *, samples: bool = False) -> None:
        ask_all(self.loadgens, {"cmd": "reset", "samples": samples}, "reset", 60)

    def wait_delivered(self, expected: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            updates, _, _, _ = self.collect()
            if updates >= expected or time.monotonic() > deadline:
                return updates
            time.sleep(0.25)

    def settle(self, max_s: float = 15.0) -> None:
        """Let the gateway finish a backlog: wait until it uses < 20% of its core."""
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            meter = Meter({"gateway": self.gateway.pid}).start()
            time.sleep(0.5)
            if meter.stop().share("gateway") < 0.2:
                return

    # -- scenarios -------------------------------------------------------------------------------

    def run_idle(self) -> Json:
        a = self.args
        n = a.idle_clients
        server = self.SERVER
        log(f"idle: creating {n} jobs")
        self.flush_store()
        plan = self.new_plan(n, n, "idle")
        warm = self.new_plan(10, 10, "warm")
        filler = self.filler(plan)
        with self.fresh("idle"):
            publisher = self.start_publisher(filler)
            self.open_clients(warm)  # imports and first-use allocations, not per connection
            time.sleep(1.0)
            rss_before = proc_rss(self.gateway.pid)
            before_gc = self.gateway.stats(gc=True)
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
                    {"connections": (index + 1) * n // chunks, "rss": proc_rss(self.gateway.pid)}
                )
                log(
                    f"idle: {steps[-1]['connections']} open, {server} RSS "
                    f"{steps[-1]['rss'] / 2**20:.1f} MiB"
                )
            meter.stop()
            ok = sum(o["ok"] for o in opened)
            time.sleep(2.0)
            rss_after = proc_rss(self.gateway.pid)
            loadgen_after = self.loadgen_rss()
            after_gc = self.gateway.stats(gc=True)
            log(f"idle: holding {ok} connections for {a.idle_hold_s:.0f}s")
            hold = Meter(self.pids()).start()
            commands_before = self.redis.commands_processed()
            time.sleep(a.idle_hold_s)
            commands = self.redis.commands_processed() - commands_before
            hold.stop()
            self.reset()
            _, _, _, totals = self.collect()
            self.reset()
            log("idle: one update per job")
            publisher.ask({"cmd": "once", "jobs": plan.jobs}, "once", timeout=600)
            delivered = self.wait_delivered(totals["acked"] - len(warm.clients), 60)
            rss_end = proc_rss(self.gateway.pid)
            server_stats = self.gateway.stats()
        per_connection = (rss_after - rss_before) / max(1, ok)
        slope = _slope([(s["connections"], s["rss"]) for s in steps])
        after_full_gc = _after_full_gc(before_gc, after_gc, ok)
        result = {
            "clients": n,
            "connected": ok,
            "open_failed": sum(o["failed"] for o in opened),
            "open_s": meter.wall_s,
            "open_per_s": ok / meter.wall_s,
            "connect_ms": _merge_summaries(opened),
            f"{server}_cpu_per_connect_us": meter.cpu_s[server] / max(1, ok) * 1e6,
            **({"server_sockets": server_stats["sockets"]} if server_stats else {}),
            "open_after_hold": totals["open"] - len(warm.clients),
            "acked_after_hold": totals["acked"] - len(warm.clients),
            "failures": totals["failures"],
            "rss_before_mib": rss_before / 2**20,
            "rss_after_mib": rss_after / 2**20,
            "rss_end_mib": rss_end / 2**20,
            "rss_per_connection_kib": per_connection / 1024,
            "rss_slope_kib": slope / 1024 if slope is not None else None,
            **after_full_gc,
            "steps": steps,
            f"idle_{server}_cpu_share": hold.share(server),
            "hold_s": hold.wall_s,
            # Everything Redis was asked during the hold (the INFO calls themselves included).
            "idle_redis_commands_per_s": commands / hold.wall_s,
            "idle_redis_commands_per_s_per_job": commands / hold.wall_s / max(1, ok),
            "liveness_delivered": delivered,
            "loadgen_rss_per_connection_kib": (loadgen_after - loadgen_before) / max(1, ok) / 1024,
            "loadgen_cpu_s_open": self.loadgen_cpu(meter),
            "foreign_share": hold.foreign_share(),
        }
        gc_note = (
            f" ({after_full_gc['rss_per_connection_after_gc_kib']:.1f} after GC)"
            if after_full_gc
            else ""
        )
        log(
            f"idle: {ok}/{n} held, {per_connection / 1024:.1f} KiB/connection{gc_note}, "
            f"liveness {delivered}/{n}"
        )
        return result

    def run_throughput(self) -> Json:
        a = self.args
        server = self.SERVER
        log(f"throughput: {a.tp_clients} clients on {a.tp_jobs} jobs")
        self.flush_store()
        plan = self.new_plan(a.tp_jobs, a.tp_clients, "tp")
        filler = self.filler(plan)
        fanout = a.tp_clients / a.tp_jobs
        fixed = self.fixed_rates()
        steps: list[Json] = []
        with self.fresh("throughput"):
            publisher = self.start_publisher(filler)
            opened = self.open_clients(plan)
            log(f"throughput: {opened['ok']} clients subscribed in {opened['seconds']:.1f}s")
            rate = fixed[0] if fixed else a.tp_start_rate
            best = 0.0
            for index in range(len(fixed) + a.tp_max_steps):
                if index < len(fixed):
                    rate = fixed[index]
                step = self._throughput_step(publisher, plan, rate, fanout)
                steps.append(step)
                log(
                    f"throughput: publish {step['publish_rate']:.0f}/s (target {rate:.0f}) → "
                    f"{step['deliveries_per_s']:.0f} deliveries/s, {server} "
                    f"{step[f'{server}_cpu_share']:.0%}, {step[f'{server}_us_per_delivery']:.1f} "
                    f"µs/delivery, ratio {step['delivery_ratio']:.2f}, "
                    f"p99 {step['latency']['p99_ms']:.1f} ms; core 0 softirq "
                    f"{step['core0_softirq_share']:.0%}, others {step['core0_foreign_share']:.0%}; "
                    f"core 1 {step['core1_share']:.0%} ({self.core1_detail(step)})"
                )
                best_before, best = best, max(best, step["deliveries_per_s"])
                if index + 1 < len(fixed):
                    self.settle()
                    continue
                saturated = step[f"{server}_cpu_share"] >= 0.95 or step["delivery_ratio"] < 0.9
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
            profile = self.profile_peak(publisher, plan, steps)
        peak = max(steps, key=lambda s: s["deliveries_per_s"])
        loaded = [s for s in steps if s[f"{server}_cpu_share"] >= 0.5] or steps
        at = {f"at_{s['target_rate']:g}": s for s in steps if s["target_rate"] in fixed}
        result = {
            "clients": a.tp_clients,
            "jobs": a.tp_jobs,
            "opened": opened,
            "steps": steps,
            "fixed_steps": {
                key: {
                    "deliveries_per_s": s["deliveries_per_s"],
                    f"{server}_us_per_delivery": s[f"{server}_us_per_delivery"],
                    f"{server}_cpu_share": s[f"{server}_cpu_share"],
                    "delivery_ratio": s["delivery_ratio"],
                    "loadgen_share": s["loadgen_share"],
                    "core1_share": s["core1_share"],
                }
                for key, s in at.items()
            },
            "peak_deliveries_per_s": peak["deliveries_per_s"],
            "peak_us_per_delivery": peak[f"{server}_us_per_delivery"],
            "peak_core0_us_per_delivery": peak["core0_us_per_delivery"],
            f"peak_{server}_cpu_share": peak[f"{server}_cpu_share"],
            "peak_core1_share": peak["core1_share"],
            "min_us_per_delivery_loaded": min(s[f"{server}_us_per_delivery"] for s in loaded),
            "profile": profile,
            "foreign_share_max": max(s["foreign_share"] for s in steps),
        }
        return result

    def _throughput_step(self, publisher: Agent, plan: Plan, rate: float, fanout: float) -> Json:
        a = self.args
        server = self.SERVER
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
        step = {
            "target_rate": rate,
            "publish_rate": ran["rate"],
            "publisher_behind": ran["behind"],
            # The Node publisher's size of one snapshot (the Python one's is --snapshot-bytes).
            **({"snapshot_bytes": ran["snapshot_bytes"]} if "snapshot_bytes" in ran else {}),
            "deliveries_per_s": deliveries,
            "expected_per_s": ran["rate"] * fanout,
            "delivery_ratio": deliveries / (ran["rate"] * fanout) if ran["rate"] else 0.0,
            "frame_bytes": nbytes / updates if updates else 0,
            f"{server}_cpu_share": meter.share(server),
            f"{server}_us_per_delivery": meter.cpu_s[server] / max(1, updates) * 1e6,
            "core0_share": meter.core_share(GATEWAY_CORE),
            "core0_us_per_delivery": meter.cores_s.get(GATEWAY_CORE, 0.0) / max(1, updates) * 1e6,
            "core0_softirq_share": meter.softirq_share(GATEWAY_CORE),
            "core0_softirq_us_per_delivery": meter.softirq_s.get(GATEWAY_CORE, 0.0)
            / max(1, updates)
            * 1e6,
            "core0_foreign_share": meter.foreign_core_share(GATEWAY_CORE, [server]),
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
        return step

    def _profile(self, publisher: Agent, plan: Plan, rate: float, out: str) -> Json:
        """py-spy (on core 1, non-blocking) on the gateway at a fixed publish rate."""
        spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
        seconds = self.args.profile_s
        self.settle()
        publisher.send({"cmd": "run", "jobs": plan.jobs, "rate": rate, "seconds": seconds + 4})
        time.sleep(2)
        raw = f"{out}.txt"
        argv = [spy, "record", "--nonblocking", "--rate", "200", "--duration", str(seconds)]
        argv += ["--pid", str(self.gateway.pid)]
        subprocess.run(
            pinned(LOAD_CORE, [*argv, "--format", "raw", "-o", raw]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        publisher.expect("ran", seconds + 120)
        self.settle()
        publisher.send({"cmd": "run", "jobs": plan.jobs, "rate": rate, "seconds": seconds + 4})
        time.sleep(2)
        subprocess.run(
            pinned(LOAD_CORE, [*argv, "--format", "flamegraph", "-o", f"{out}.svg"]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        publisher.expect("ran", seconds + 120)
        return {"rate": rate, "raw": raw, "svg": f"{out}.svg", "top": top_frames(Path(raw))}

    def run_latency(self, name: str, clients: int, jobs: int, mode: str | None = None) -> Json:
        a = self.args
        server = self.SERVER
        log(
            f"latency {name}: {clients} clients on {jobs} jobs, {a.lat_rate:g} updates/s per job"
            + (f", publisher mode {mode}" if mode else "")
        )
        self.flush_store()
        plan = self.new_plan(jobs, clients, name)
        filler = self.filler(plan)
        rate = jobs * a.lat_rate
        with self.fresh(name):
            publisher = self.start_publisher(filler, mode)
            opened = self.open_clients(plan)
            publisher.send(
                {"cmd": "run", "jobs": plan.jobs, "rate": rate, "seconds": a.lat_warmup_s + a.lat_s}
            )
            # Record during the warm-up too, so the load generators' recording path is compiled
            # (V8's optimizing compiler shares core 1) before the measured window, not in it.
            self.reset(samples=True)
            time.sleep(a.lat_warmup_s)  # the warm-up window
            self.reset(samples=True)
            metrics_before = self.gateway.metrics()
            meter = Meter(self.pids()).start()
            with Sampler(self.pids()) as sampler:
                time.sleep(a.lat_s)  # the measured window
            updates, nbytes, latency, totals = self.collect()
            meter.stop()
            gateway_view = publish_to_send(metrics_before, self.gateway.metrics())
            ran = publisher.expect("ran", a.lat_s + 120)
        summary = latency.summary_ms()
        expected = ran["rate"] * clients / jobs
        result = {
            "clients": clients,
            "jobs": jobs,
            "publisher_mode": mode,
            "opened": opened["ok"],
            "target_publish_rate": rate,
            "publish_rate": ran["rate"],
            "publisher_behind": ran["behind"],
            "deliveries_per_s": updates / meter.wall_s,
            "delivery_ratio": updates / meter.wall_s / expected if expected else 0.0,
            "frame_bytes": nbytes / updates if updates else 0,
            "latency": summary,
            f"{server}_cpu_share": meter.share(server),
            f"{server}_us_per_delivery": meter.cpu_s[server] / max(1, updates) * 1e6,
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
            # The gateway's own histogram (snapshot's updated_at → frame handed to the socket),
            # per publish: a tail here is the gateway's (or before it); a tail only in the
            # clients' figures happened after the gateway wrote the frame.
            "gateway_publish_to_send": gateway_view,
            "worst_us_per_100ms": [
                round(self.worst_per_100ms[k]) for k in sorted(self.worst_per_100ms)
            ],
            # The load generators' own GC pauses (worst process, ms) in the same windows.
            "loadgen_gc_ms_per_100ms": [
                round(self.loadgen_gc_per_100ms.get(k, 0.0), 2)
                for k in sorted(self.worst_per_100ms)
            ],
            "loadgen_gc_total_ms": round(self.loadgen_gc_total_ms, 1),
        }
        log(
            f"latency {name}: p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
            f"p99.9 {summary['p999_ms']:.2f} ms; publish {ran['rate']:.0f}/s of {rate:.0f}; "
            f"{self.latency_detail(result)}"
        )
        if quiet := result["undisturbed"]:
            log(
                f"latency {name}, quiet windows only ({quiet['windows_kept']} of "
                f"{quiet['windows_total']}): p50 {quiet['p50_ms']} ms, p99 {quiet['p99_ms']} ms, "
                f"p99.9 {quiet['p999_ms']} ms"
            )
        return result

    def run_storm(self, mode: str) -> Json:
        a = self.args
        n = a.storm_clients
        log(f"storm ({mode}): {n} clients")
        self.redis.command("FLUSHALL")
        plan = make_plan(self.redis.url, n, n, "storm")
        filler = message_filler(self.redis.url, plan.jobs[0], a.snapshot_bytes)
        with self.fresh(f"storm-{mode}"):
            publisher = self.start_publisher(filler)
            opened = self.open_clients(plan)
            log(f"storm: {opened['ok']} subscribed in {opened['seconds']:.1f}s; dropping all")
            time.sleep(2.0)
            meter = Meter(self.pids()).start()
            if mode == "drop":
                started_ns = time.time_ns()
                for agent in self.loadgens:
                    agent.send({"cmd": "storm"})
            else:
                ask_all(self.loadgens, {"cmd": "expect_restart"}, "armed", 30)
                started_ns = time.time_ns()
                self.gateway.kill()
                self.gateway.start()
                meter.pids["gateway"] = self.gateway.pid
                meter._cpu0["gateway"] = 0.0
            replies = [agent.expect("storm", a.storm_timeout_s) for agent in self.loadgens]
            meter.stop()
            reconnect = Histogram()
            for reply in replies:
                reconnect.merge(reply["reconnect_us"])
            done_ns = max(reply["last_ack_ns"] for reply in replies)
            total_s = (done_ns - started_ns) / 1e9
            log(f"storm: all {n} resubscribed after {total_s:.2f}s; checking delivery")
            self.reset()
            publisher.ask({"cmd": "once", "jobs": plan.jobs}, "once", timeout=600)
            delivered = self.wait_delivered(opened["ok"], 60)
        result = {
            "mode": mode,
            "clients": n,
            "opened": opened["ok"],
            "resubscribed_s": total_s,
            "reconnect_ms": reconnect.summary_ms(),
            "retries": sum(reply["retries"] for reply in replies),
            "subscribe_retries": sum(reply["subscribe_retries"] for reply in replies),
            "failures": _sum_maps([reply["failures"] for reply in replies]),
            "gateway_cpu_s": meter.cpu_s["gateway"],
            "gateway_cpu_per_reconnect_us": meter.cpu_s["gateway"] / n * 1e6,
            "delivered_after": delivered,
            "foreign_share": meter.foreign_share(),
        }
        log(
            f"storm ({mode}): {total_s:.2f}s until all resubscribed, p99 client "
            f"{result['reconnect_ms']['p99_ms']:.0f} ms, retries {result['retries']}, "
            f"delivered after {delivered}/{n}"
        )
        return result

    def run(self) -> Json:
        a = self.args
        self.results["machine"] = machine()
        self.results.update(self.about())
        self.results["settings"] = {k: v for k, v in vars(a).items() if k != "func"}
        try:
            self.run_scenarios()
        finally:
            self.stop_clients()
            self.gateway.stop()
            self.redis.stop()
        return self.results


class Sampler:
    """Every 100 ms: how much of the machine programs other than ours used (a share of a core).

    Keyed like the load generator's latency windows (wall clock in 100 ms slots), so a latency
    stall can be matched with what the rest of the machine did at that moment.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.foreign: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        meter = Meter(self.pids).start()
        while not self._stop.wait(0.1):
            meter.stop()
            self.foreign[int(time.time() * 10)] = round(meter.foreign_share(), 2)
            meter.start()


def undisturbed(
    samples: dict[int, list[float]], foreign: dict[int, float], limit: float, lookback: int = 10
) -> Json:
    """Latency over the 100 ms windows in which, and in the second before which, programs other
    than ours used less than ``limit`` of a core: what the gateway does on a quiet machine."""
    if not samples or not foreign:
        return {}
    kept: list[float] = []
    windows = 0
    for slot, values in samples.items():
        # The mean over the window and the second before it: one 100 ms sample is only ten
        # clock ticks per core, too coarse to judge alone.
        recent = [foreign.get(k) for k in range(slot - lookback, slot + 1)]
        known = [share for share in recent if share is not None]
        if known and sum(known) / len(known) < limit:
            kept.extend(values)
            windows += 1
    kept.sort()

    def pick(q: float) -> float | None:
        return kept[min(len(kept) - 1, int(q * len(kept)))] / 1000 if kept else None

    return {
        "foreign_limit": limit,
        "windows_kept": windows,
        "windows_total": len(samples),
        "n": len(kept),
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "p999_ms": pick(0.999),
        "max_ms": kept[-1] / 1000 if kept else None,
    }


def publish_to_send(before: dict[str, float], after: dict[str, float]) -> Json:
    """Share of publishes over each bound of the gateway's publish→send histogram in a window."""
    prefix = 'pgw_publish_to_send_seconds_bucket{le="'
    cumulative = {
        name[len(prefix) : -2]: after[name] - before.get(name, 0.0)
        for name in after
        if name.startswith(prefix)
    }
    total = cumulative.get("+Inf", 0.0)
    if not total:
        return {}
    over = {
        f"over_{float(bound) * 1000:g}ms": round(1 - count / total, 5)
        for bound, count in cumulative.items()
        if bound != "+Inf" and float(bound) >= 0.0025
    }
    return {"publishes": int(total), **over}


def stalls(
    worst_per_100ms: dict[int, float], foreign: dict[int, float], threshold_ms: float = 20.0
) -> Json:
    """100 ms windows whose worst latency exceeded ``threshold_ms``, how far apart they are, and
    the share of a core other programs used in the second before each."""
    if not worst_per_100ms:
        return {}
    first = min(worst_per_100ms)
    slow = sorted(
        (slot, us / 1000) for slot, us in worst_per_100ms.items() if us / 1000 > threshold_ms
    )
    gaps = [round((b - a) / 10, 1) for (a, _), (b, _) in itertools.pairwise(slow)]
    return {
        "threshold_ms": threshold_ms,
        "windows": len(worst_per_100ms),
        "slow_windows": [
            (
                round((slot - first) / 10, 1),
                round(ms, 1),
                max((foreign.get(k, 0.0) for k in range(slot - 10, slot + 1)), default=None),
            )
            for slot, ms in slow
        ][:60],
        "foreign_mean": round(sum(foreign.values()) / len(foreign), 2) if foreign else None,
        "foreign_max": max(foreign.values(), default=None),
        "gaps_s": gaps[:40],
    }


def _sum_maps(maps: Sequence[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for mapping in maps:
        for key, value in mapping.items():
            total[key] = total.get(key, 0) + value
    return total


def _merge_summaries(opened: Sequence[Json]) -> Json:
    worst = max((o["connect_ms"] for o in opened), key=lambda s: s["p99_ms"], default={})
    return dict(worst)


def _after_full_gc(before: Json | None, after: Json | None, ok: int) -> Json:
    """Per connection, the server's RSS and heap between two of its own readings taken after a
    full GC (``Gateway.stats(gc=True)``): live data only, where a server offers such readings."""
    if before is None or after is None:
        return {}
    return {
        "rss_per_connection_after_gc_kib": (after["rss"] - before["rss"]) / max(1, ok) / 1024,
        "heap_used_per_connection_kib": (after["heap_used"] - before["heap_used"])
        / max(1, ok)
        / 1024,
        "before_gc": before,
        "after_gc": after,
    }


def _slope(points: Sequence[tuple[int, int]]) -> float | None:
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def top_frames(raw: Path, limit: int = 25) -> Json:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    if not raw.exists():
        return {}
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_short_frame(f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + count

    def top(counts: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:limit]
        return [(name, round(count / total, 4)) for name, count in ranked]

    return {"samples": total, "self": top(self_counts), "inclusive": top(incl_counts)}


def _short_frame(frame: str) -> str:
    # "send (uvicorn/protocols/websockets/websockets_sansio_impl.py:432)" → keep the file tail.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    where = where.rsplit(":", 1)[0]
    return f"{name} ({where})"


def machine() -> Json:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node.stdout.strip(),
        "redis": redis_version.stdout.split(" ")[2] if redis_version.stdout else "?",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# -- report ------------------------------------------------------------------------------------


class Table:
    """A Markdown table of measures, one row at a time: ``| measure | <header> |``."""

    def __init__(self, header: str) -> None:
        self.lines = [f"| measure | {header} |", "|---|---|"]

    def row(self, name: str, value: str) -> None:
        self.lines.append(f"| {name} | {value} |")

    def latency(self, label: str, lat: Json, shares: str) -> None:
        """A latency run's rows: all windows (``shares`` ends it), then the quiet ones."""
        s = lat["latency"]
        self.row(
            f"{label} ({lat['clients']:,} clients / {lat['jobs']:,} jobs)",
            f"p50 {s['p50_ms']:.2f} / p99 {s['p99_ms']:.2f} / p99.9 {s['p999_ms']:.2f} ms; "
            f"publish {lat['publish_rate']:,.0f}/s of {lat['target_publish_rate']:,.0f}; {shares}",
        )
        if (quiet := lat.get("undisturbed")) and quiet.get("n"):
            self.row(
                f"{label}, quiet windows ({quiet['windows_kept']}/{quiet['windows_total']})",
                f"p50 {quiet['p50_ms']:.2f} / p99 {quiet['p99_ms']:.2f} / p99.9 "
                f"{quiet['p999_ms']:.2f} ms",
            )

    def __str__(self) -> str:
        return "\n".join(self.lines)


def report(results: Json) -> str:
    table = Table("result")
    row = table.row

    if idle := results.get("idle"):
        row(
            "idle connections held",
            f"{idle['acked_after_hold']:,} of {idle['clients']:,} "
            f"(liveness {idle['liveness_delivered']:,}/{idle['clients']:,})",
        )
        row(
            "RSS per idle connection",
            f"{idle['rss_per_connection_kib']:.1f} KiB "
            f"({idle['rss_before_mib']:.0f} → {idle['rss_after_mib']:.0f} MiB)",
        )
        row(
            "connection setup",
            f"{idle['open_per_s']:,.0f}/s, gateway CPU {idle['gateway_cpu_per_connect_us']:.0f} "
            f"µs per connect+subscribe",
        )
        row("idle gateway CPU", f"{idle['idle_gateway_cpu_share']:.1%} of a core")
        row(
            "idle Redis commands",
            f"{idle['idle_redis_commands_per_s']:,.1f}/s "
            f"({idle['idle_redis_commands_per_s_per_job']:.4f}/s per watched job)",
        )
    if tp := results.get("throughput"):
        row(
            "peak deliveries/s (one core)",
            f"{tp['peak_deliveries_per_s']:,.0f} ({tp['clients']:,} clients on {tp['jobs']} jobs)",
        )
        row(
            "gateway CPU per delivery",
            f"{tp['peak_us_per_delivery']:.1f} µs at peak (core 0 incl. softirq "
            f"{tp['peak_core0_us_per_delivery']:.1f} µs); best loaded step "
            f"{tp['min_us_per_delivery_loaded']:.1f} µs",
        )
    for key, label in (
        ("latency_own_store", "latency, own job, store writes"),
        ("latency_own_publish", "latency, own job, plain PUBLISH"),
        ("latency_shared", "latency, shared jobs"),
    ):
        if lat := results.get(key):
            shares = f"gateway {lat['gateway_cpu_share']:.0%}, core 1 {lat['core1_share']:.0%}"
            table.latency(label, lat, shares)
    for mode in ("drop", "restart"):
        if storm := results.get(f"storm_{mode}"):
            row(
                f"reconnect storm ({mode}, {storm['clients']:,} clients)",
                f"{storm['resubscribed_s']:.2f} s until all resubscribed; client p50 "
                f"{storm['reconnect_ms']['p50_ms']:.0f} / p99 {storm['reconnect_ms']['p99_ms']:.0f}"
                f" ms; reconnect retries {storm['retries']}, subscribe retries "
                f"{storm['subscribe_retries']}; delivered after "
                f"{storm['delivered_after']:,}/{storm['clients']:,}",
            )
    return str(table)


# -- command line --------------------------------------------------------------------------------


def add_run_args(parser: argparse.ArgumentParser, scenarios: Sequence[str]) -> None:
    """The options every benchmark built on ``Bench`` starts with."""
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=scenarios,
        default=list(scenarios),
        help="which scenarios to run (all)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--loadgens", type=int, default=4, help="Node load generator processes")


def add_idle_args(g: argparse._ArgumentGroup, clients: int) -> None:
    g.add_argument("--idle-clients", type=int, default=clients)
    g.add_argument("--idle-steps", type=int, default=4, help="RSS read after each of N chunks")
    g.add_argument("--idle-hold-s", type=float, default=25.0)


def add_throughput_args(
    g: argparse._ArgumentGroup,
    *,
    start_help: str,
    factor_help: str,
    max_steps: int,
    max_steps_help: str | None = None,
    fixed_rates: Sequence[float] | None = None,
) -> None:
    """The throughput options; ``fixed_rates`` offers ``--tp-rates`` (``Bench.fixed_rates``)."""
    g.add_argument("--tp-clients", type=int, default=2_000)
    g.add_argument("--tp-jobs", type=int, default=20)
    if fixed_rates is not None:
        g.add_argument(
            "--tp-rates",
            type=float,
            nargs="*",
            default=list(fixed_rates),
            help="fixed publish rates measured first (per s)",
        )
    g.add_argument("--tp-start-rate", type=float, default=100.0, help=start_help)
    g.add_argument("--tp-factor", type=float, default=1.35, help=factor_help)
    g.add_argument("--tp-max-steps", type=int, default=max_steps, help=max_steps_help)
    g.add_argument("--tp-warmup-s", type=float, default=2.0)
    g.add_argument("--tp-step-s", type=float, default=8.0)


def add_latency_sizes(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--lat-clients", type=int, default=1_000, help="each on its own job")
    g.add_argument("--lat-shared-clients", type=int, default=2_000)
    g.add_argument("--lat-shared-jobs", type=int, default=20)
    g.add_argument("--lat-rate", type=float, default=10.0, help="updates/s per job")


def add_gateway_args(parser: argparse.ArgumentParser) -> None:
    """The gateway, its clients, its publisher and the quiet-machine wait."""
    parser.add_argument(
        "--open-concurrency",
        type=int,
        default=64,
        help="handshakes in flight over all load generators (64: the gateway's Redis pool "
        "holds 100 connections and fails subscribes beyond that)",
    )
    parser.add_argument("--snapshot-bytes", type=int, default=300, help="updated snapshot size")
    parser.add_argument("--publisher-inflight", type=int, default=64, help="concurrent writes")
    parser.add_argument(
        "--publisher-mode",
        choices=("store", "publish"),
        default="store",
        help="store: RedisJobStore.apply (the Lua write + PUBLISH); publish: PUBLISH the same "
        "snapshots without the write, to keep core 1 from being the limit",
    )
    parser.add_argument("--gateway-log-level", default="warning")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra GATEWAY_* setting for the gateway process (repeatable)",
    )
    parser.add_argument(
        "--gateway-src",
        default=str(ROOT),
        help="directory holding the gateway package to run (default: this checkout)",
    )
    parser.add_argument("--wait-idle-s", type=float, default=0.0, help="wait for a quiet machine")
    parser.add_argument("--quiet-share", type=float, default=0.10, help="'quiet': others below")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fan-out benchmark of progress-gateway (see docs/performance.md)."
    )
    add_run_args(parser, SCENARIOS)
    add_gateway_args(parser)
    add_idle_args(parser.add_argument_group("idle"), 20_000)
    g = parser.add_argument_group("throughput")
    add_throughput_args(
        g, start_help="publishes/s, first step", factor_help="rate growth per step", max_steps=14
    )
    g.add_argument("--profile", help="py-spy the gateway at the peak rate; files PATH.{txt,svg}")
    g.add_argument("--profile-s", type=int, default=15)
    g = parser.add_argument_group("latency")
    add_latency_sizes(g)
    g.add_argument(
        "--lat-own-modes",
        nargs="+",
        choices=("store", "publish"),
        default=["store", "publish"],
        help="publisher modes for the own-job run (its 10k writes/s can saturate core 1)",
    )
    g.add_argument("--lat-warmup-s", type=float, default=3.0)
    g.add_argument("--lat-s", type=float, default=30.0)
    g = parser.add_argument_group("reconnect storm")
    g.add_argument("--storm-clients", type=int, default=10_000)
    g.add_argument("--storm-mode", nargs="+", choices=("drop", "restart"), default=["drop"])
    g.add_argument("--storm-timeout-s", type=float, default=180.0)
    return parser


def shrink_quick(args: argparse.Namespace, *, idle_clients: int, tp_max_steps: int) -> None:
    """``--quick``: the sizes of the scenarios every ``Bench`` runs, cut down for a smoke run."""
    args.idle_clients = min(args.idle_clients, idle_clients)
    args.idle_hold_s = min(args.idle_hold_s, 3.0)
    args.tp_clients, args.tp_jobs = min(args.tp_clients, 400), min(args.tp_jobs, 20)
    args.tp_step_s = min(args.tp_step_s, 3.0)
    args.tp_max_steps = min(args.tp_max_steps, tp_max_steps)
    args.tp_warmup_s = min(args.tp_warmup_s, 1.0)
    args.lat_clients = min(args.lat_clients, 200)
    args.lat_shared_clients = min(args.lat_shared_clients, 400)
    args.lat_s, args.lat_warmup_s = min(args.lat_s, 5.0), min(args.lat_warmup_s, 1.0)


def apply_quick(args: argparse.Namespace) -> None:
    shrink_quick(args, idle_clients=2_000, tp_max_steps=4)
    args.storm_clients = min(args.storm_clients, 1_000)
    args.profile_s = min(args.profile_s, 5)


def fit_host(args: argparse.Namespace, reserve: int) -> int:
    """Say so if this is not the 2-core layout; raise RLIMIT_NOFILE and fit ``--idle-clients``
    under it, ``reserve`` descriptors kept for the server's own. Returns the limit."""
    if os.cpu_count() != 2:
        log(f"this machine has {os.cpu_count()} cores; the layout assumes 2 (cores 0 and 1)")
    nofile = raise_nofile()
    if args.idle_clients > nofile - reserve:
        log(
            f"idle: {args.idle_clients} connections do not fit RLIMIT_NOFILE {nofile}; "
            f"using {nofile - reserve}"
        )
        args.idle_clients = nofile - reserve
    return nofile


def run_bench(kind: type[Bench], args: argparse.Namespace, prefix: str) -> Json:
    """``kind(args, work).run()`` from core 1, its logs in a temporary directory (their tails
    printed if it fails)."""
    os.sched_setaffinity(0, {LOAD_CORE})
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        log(f"logs in {work}")
        bench = kind(args, work)
        try:
            return bench.run()
        except BaseException:
            for name in (f"{kind.SERVER}.log", "publisher.log", "loadgen0.log"):
                path = work / name
                if path.exists():
                    log(f"--- {name} (tail) ---\n{path.read_text(errors='replace')[-3000:]}")
            raise


def finish(args: argparse.Namespace, results: Json, tables: str) -> int:
    """Print the tables; write every figure to ``--json`` if asked."""
    print(tables)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_publish"]:
        publisher_main(argv[1], int(argv[2]), int(argv[3]), argv[4])
        return 0
    args = build_parser().parse_args(argv)
    if args.quick:
        apply_quick(args)
    sys.path.insert(0, str(ROOT))
    # The gateway needs one descriptor per connection plus its listener, Redis connections,
    # stdio and the interpreter's own files.
    args.nofile = fit_host(args, FD_RESERVE)
    results = run_bench(Bench, args, "pgw-fanout-")
    return finish(args, results, report(results))


if __name__ == "__main__":
    sys.exit(main())
