"""The chaos campaign: real Redis, two gateways behind a fault proxy, jobs, watchers, faults.

One implementation for both uses: ``tests/chaos/test_campaign.py`` runs a short campaign in CI
and asserts on its report; ``bench/chaos_campaign.py`` runs a long one and prints figures.

Layout: a redis-server with AOF (``appendfsync always``) that the campaign SIGKILLs, restarts,
SIGSTOPs and SIGCONTs; a ``FaultProxy`` in front of it; two ``progress-gateway serve`` processes
whose Redis URL is the proxy's; an in-process worker (``AsyncProgressClient``, straight to
Redis) that keeps a few jobs running to a terminal state; per-job and ``scope: mine`` watchers
on each gateway; an HTTP reader. Faults come one at a time in a seeded random order; after each
one ends, the campaign reads the store and times how long every watcher takes to reach it
(convergence). At the end the store's final state is compared with what every watcher holds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import signal
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from progress_core.errors import JobExists, JobFinished, StoreUnavailable
from progress_core.store import StoreOptions
from progress_gateway.auth import issue_token
from progress_workers import AsyncProgressClient
from tests.chaos.fault_proxy import FaultProxy
from tests.chaos.watchers import TERMINAL, Violations, Watcher
from tests.support.gateway_server import SECRET, GatewayServer
from tests.support.redis_server import RedisServer

logger = logging.getLogger("tests.chaos.campaign")

T = TypeVar("T")
FAULT_KINDS = (
    "redis_kill",
    "redis_stop",
    "gateway_kill",
    "gateway_term",
    "proxy_cut",
    "proxy_stall",
    "silent_subscriber",
)
PREFIX = "chaos"
OWNERS = ("alice", "bob")
STORE_RETRY_S = 60.0  # a worker retries one change this long before giving up on the job
POLL_S = 0.05


@dataclass(frozen=True)
class CampaignConfig:
    faults: int = 14
    seed: int = 1
    concurrent_jobs: int = 6
    id_watchers_per_gateway: int = 2
    gap_s: tuple[float, float] = (0.5, 1.5)  # load between faults
    fault_s: tuple[float, float] = (0.5, 2.0)  # how long a stop, cut, stall or silence lasts
    converge_limit_s: float = 20.0  # give up waiting for convergence after this long
    # CI: after a fault that did not converge, inject no more (the verdict is already known
    # and each further stuck fault would cost converge_limit_s); the bench keeps going.
    stop_when_stuck: bool = True
    final_window_s: float = 30.0
    # Gateway settings; None keeps the product's default.
    resync_s: float | None = 1.0
    probe_s: float | None = 1.0
    drain_s: float | None = 1.0


@dataclass
class FaultRecord:
    kind: str
    detail: str
    ended_at: float
    convergence_s: float | None = None  # None: not converged within converge_limit_s
    lagging: list[str] = field(default_factory=list)  # a sample of what was missing then


@dataclass
class JobRecord:
    owner: str
    created_at: float  # when create was called: a `mine` session open then must receive it
    watchers: list[Watcher]


@dataclass
class CampaignReport:
    faults: list[FaultRecord]
    jobs: int
    unfinished_jobs: list[str]
    final_convergence_s: float | None  # after the last job ended; None: not within the window
    lost_terminals: list[str]
    mine_missed: list[str]
    violations: Violations
    http_statuses: Counter[int]
    sessions: int
    duration_s: float
    logs: list[Path]

    def convergence(self) -> list[float]:
        return sorted(f.convergence_s for f in self.faults if f.convergence_s is not None)

    def not_converged(self) -> list[FaultRecord]:
        return [f for f in self.faults if f.convergence_s is None]

    def percentile(self, share: float) -> float:
        values = self.convergence()
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(share * len(values)))]

    def summary(self) -> str:
        values = self.convergence()
        kinds = Counter(f.kind for f in self.faults)
        final = "none" if self.final_convergence_s is None else f"{self.final_convergence_s:.2f} s"
        lines = [
            f"faults {len(self.faults)} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})"
            f" in {self.duration_s:.0f} s; jobs {self.jobs}; WebSocket sessions {self.sessions}",
            f"convergence s: p50 {statistics.median(values) if values else float('nan'):.2f}"
            f" p99 {self.percentile(0.99):.2f} max {max(values, default=float('nan')):.2f};"
            f" not converged within the limit: {len(self.not_converged())}",
            f"lost terminals {len(self.lost_terminals)}; missed mine jobs {len(self.mine_missed)};"
            f" unfinished jobs {len(self.unfinished_jobs)}; final convergence {final}",
            "violations: "
            + ", ".join(f"{name} {len(lines)}" for name, lines in self.violations.items().items()),
            f"HTTP reads: {dict(sorted(self.http_statuses.items()))}",
        ]
        for kind in sorted(kinds):
            times = sorted(
                f.convergence_s for f in self.faults if f.kind == kind and f.convergence_s
            )
            if times:
                lines.append(f"  {kind}: median {statistics.median(times):.2f} max {times[-1]:.2f}")
        return "\n".join(lines)

    def problems(self) -> str:
        """The first few lines of every broken guarantee, for an assertion message."""
        sections = {
            "not converged": [
                f"{f.kind} {f.detail}: {', '.join(f.lagging)}" for f in self.not_converged()
            ],
            "lost terminals": self.lost_terminals,
            "missed mine jobs": self.mine_missed,
            "unfinished jobs": self.unfinished_jobs,
            **self.violations.items(),
        }
        out = [
            f"{name} ({len(lines)}): " + "; ".join(lines[:5])
            for name, lines in sections.items()
            if lines
        ]
        return "\n".join([*out, f"logs: {', '.join(str(p) for p in self.logs)}"])


class Campaign:
    def __init__(self, config: CampaignConfig, directory: Path) -> None:
        self.config = config
        # One generator per concern, so the fault sequence does not depend on timing.
        self.rng = random.Random(config.seed)
        self.job_rng = random.Random(self.rng.getrandbits(64))
        self.http_rng = random.Random(self.rng.getrandbits(64))
        self.redis = RedisServer(directory / "redis", appendonly=True)
        self.proxy: FaultProxy | None = None
        self.gateways: list[GatewayServer] = []
        self.directory = directory
        self.violations = Violations()
        self.watchers: list[Watcher] = []
        self.jobs: dict[str, JobRecord] = {}
        self.final_seqs: dict[str, int] = {}
        self.unfinished: list[str] = []
        self.http_statuses: Counter[int] = Counter()
        self.faults: list[FaultRecord] = []
        self._client: AsyncProgressClient | None = None

    async def run(self) -> CampaignReport:
        began = time.monotonic()
        try:
            await asyncio.to_thread(self._start_servers)
            return await self._run(began)
        finally:
            await asyncio.to_thread(self._stop_servers)

    def _start_servers(self) -> None:
        self.redis.start()
        self.proxy = FaultProxy(self.redis.port)
        self.proxy.start()
        for number in range(2):
            gateway = GatewayServer(
                self.proxy.url,
                self.directory / f"gateway-{number}.log",
                key_prefix=PREFIX,
                **self._settings(),
            )
            gateway.start()
            self.gateways.append(gateway)

    def _settings(self) -> dict[str, str]:
        given = {
            "resync_s": self.config.resync_s,
            "probe_s": self.config.probe_s,
            "drain_s": self.config.drain_s,
        }
        return {name: str(value) for name, value in given.items() if value is not None}

    def _stop_servers(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        if self.proxy is not None:
            self.proxy.close()
        self.redis.stop()

    async def _run(self, began: float) -> CampaignReport:
        self._client = AsyncProgressClient.from_url(self.redis.url, StoreOptions(prefix=PREFIX))
        stop_watchers, stop_jobs = asyncio.Event(), asyncio.Event()
        final_convergence_s: float | None = None
        self._make_watchers()
        schedule = self._schedule()
        watching = [asyncio.create_task(w.run(stop_watchers)) for w in self.watchers]
        reading = asyncio.create_task(self._read_http(stop_watchers))
        driving: asyncio.Task[None] | None = None
        try:
            if not await self._until(self._mine_subscribed, 20.0):
                raise RuntimeError(f"mine watchers did not subscribe: {self.gateways[0].log()}")
            driving = asyncio.create_task(self._drive_jobs(stop_jobs))
            for kind in schedule:
                await asyncio.sleep(self.rng.uniform(*self.config.gap_s))
                await self._fault(kind)
                if self.faults[-1].convergence_s is None and self.config.stop_when_stuck:
                    break
            stop_jobs.set()
            await driving
            # Every job has ended (or is listed unfinished): its final seq cannot change now.
            for job_id in list(self.jobs):
                if job_id not in self.unfinished:
                    await self._store_seq(job_id)
            settled = time.monotonic()
            if await self._until(self._all_converged, self.config.final_window_s):
                final_convergence_s = time.monotonic() - settled
        finally:
            if driving is not None and not driving.done():  # an error cut the campaign short
                driving.cancel()
                await asyncio.gather(driving, return_exceptions=True)
            stop_watchers.set()
            await asyncio.gather(*watching, reading)
            await self._client.aclose()
        return CampaignReport(
            faults=self.faults,
            jobs=len(self.jobs),
            unfinished_jobs=self.unfinished,
            final_convergence_s=final_convergence_s,
            lost_terminals=self._lost_terminals(),
            mine_missed=self._mine_missed(),
            violations=self.violations,
            http_statuses=self.http_statuses,
            sessions=sum(len(w.sessions) for w in self.watchers),
            duration_s=time.monotonic() - began,
            logs=[g.log_path for g in self.gateways],
        )

    def _make_watchers(self) -> None:
        for number, gateway in enumerate(self.gateways):
            for owner in OWNERS:
                self._add_watcher(f"mine-{owner}@g{number}", gateway, owner, mine=True)
            for index in range(self.config.id_watchers_per_gateway):
                owner = OWNERS[index % len(OWNERS)]
                self._add_watcher(f"ids-{index}@g{number}", gateway, owner, mine=False)

    def _add_watcher(self, name: str, gateway: GatewayServer, owner: str, *, mine: bool) -> None:
        token = issue_token(SECRET, owner, ttl_s=3600)
        rng = random.Random(self.rng.getrandbits(64))
        self.watchers.append(
            Watcher(name, gateway, owner, token, mine=mine, violations=self.violations, rng=rng)
        )

    def _id_watchers(self, owner: str, gateway: GatewayServer) -> list[Watcher]:
        return [
            w for w in self.watchers if not w.mine and w.owner == owner and w.gateway is gateway
        ]

    def _schedule(self) -> list[str]:
        """Every kind as often as the count allows, in a seeded random order."""
        kinds = [FAULT_KINDS[n % len(FAULT_KINDS)] for n in range(self.config.faults)]
        self.rng.shuffle(kinds)
        return kinds

    # Faults -----------------------------------------------------------------------------------

    async def _fault(self, kind: str) -> None:
        assert self.proxy is not None
        hold = self.rng.uniform(*self.config.fault_s)
        gateway = self.rng.choice(self.gateways)
        detail = f"{hold:.1f} s"
        logger.info("fault %d: %s", len(self.faults), kind)
        if kind == "redis_kill":
            await asyncio.to_thread(self.redis.kill)
            await asyncio.to_thread(self.redis.start)
            detail = "SIGKILL, restart on the same AOF"
        elif kind == "redis_stop":
            assert self.redis.process is not None
            os.kill(self.redis.process.pid, signal.SIGSTOP)
            await asyncio.sleep(hold)
            os.kill(self.redis.process.pid, signal.SIGCONT)
        elif kind in ("gateway_kill", "gateway_term"):
            if kind == "gateway_kill":
                await asyncio.to_thread(gateway.kill)
            else:
                code = await asyncio.to_thread(gateway.terminate)
                # uvicorn re-raises the signal it drained on, so a clean exit reads -SIGTERM.
                if code not in (0, -signal.SIGTERM):
                    self.violations.unexpected_errors.append(f"SIGTERM: gateway exited {code}")
            await asyncio.to_thread(gateway.start)
            detail = f"gateway port {gateway.port}"
        elif kind in ("proxy_cut", "proxy_stall"):
            self.proxy.cut() if kind == "proxy_cut" else self.proxy.stall()
            await asyncio.sleep(hold)
            self.proxy.heal()
        elif kind == "silent_subscriber":
            silenced = self.proxy.silence()
            await asyncio.sleep(hold)
            detail = f"{silenced} subscriber connections, {hold:.1f} s of load"
        else:
            raise ValueError(f"unknown fault {kind}")
        record = FaultRecord(kind, detail, ended_at=time.monotonic())
        self.faults.append(record)
        targets = await self._targets()
        if await self._until(lambda: self._reached(targets), self.config.converge_limit_s):
            record.convergence_s = time.monotonic() - record.ended_at
        else:
            record.lagging = [
                f"{watcher.name} job {job_id}: has {watcher.seq(job_id)}, store had {seq};"
                f" {len(watcher.sessions)} sessions; {watcher.trace(job_id)[-3:]}"
                for watcher, job_id, seq in targets
                if watcher.seq(job_id) < seq
            ][:5]
        logger.info(
            "fault %s: %s converged in %s s %s", kind, detail, record.convergence_s, record.lagging
        )

    # Jobs -------------------------------------------------------------------------------------

    async def _drive_jobs(self, stop: asyncio.Event) -> None:
        """Keep ``concurrent_jobs`` jobs running until ``stop``; then let the last ones end."""
        slots = asyncio.Semaphore(self.config.concurrent_jobs)
        running: set[asyncio.Task[None]] = set()
        number = 0
        try:
            while not stop.is_set():
                await slots.acquire()
                task = asyncio.create_task(self._job(number, slots))
                running.add(task)
                task.add_done_callback(running.discard)
                number += 1
            await asyncio.gather(*running)
        finally:
            for task in running:  # only when cancelled: then the jobs go with it
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _job(self, number: int, slot: asyncio.Semaphore) -> None:
        assert self._client is not None
        client = self._client
        rng = random.Random(self.job_rng.getrandbits(64))
        owner = OWNERS[number % len(OWNERS)]
        job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        try:
            created_at = time.monotonic()
            await self._store(lambda: client.create_job(owner, "chaos", job_id=job_id), job_id)
            # One id watcher of the owner on each gateway follows the job.
            chosen = [
                rng.choice(candidates)
                for gateway in self.gateways
                if (candidates := self._id_watchers(owner, gateway))
            ]
            self.jobs[job_id] = JobRecord(owner, created_at, chosen)
            for watcher in chosen:
                watcher.follow(job_id)
            await self._store(lambda: client.start(job_id), job_id)
            steps = rng.randint(3, 12)
            for step in range(steps):
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                progress = 100 * (step + 1) / (steps + 1)
                await self._store(
                    functools.partial(client.update, job_id, progress=progress), job_id
                )
            end = rng.choice(("succeed", "fail", "cancel"))
            if end == "succeed":
                await self._store(lambda: client.succeed(job_id, {"steps": steps}), job_id)
            elif end == "fail":
                await self._store(lambda: client.fail(job_id, message="chaos"), job_id)
            else:
                await self._store(lambda: client.cancel(job_id), job_id)
        except (StoreUnavailable, TimeoutError) as exc:
            logger.error("job %s of %s: gave up after %s s: %r", job_id, owner, STORE_RETRY_S, exc)
            self.unfinished.append(job_id)
        finally:
            slot.release()

    async def _store(self, change: Callable[[], Awaitable[T]], job_id: str) -> T | None:
        """One change, retried through outages; a retry that finds it applied is done."""
        deadline = time.monotonic() + STORE_RETRY_S
        retried = False
        while True:
            try:
                async with asyncio.timeout(5):
                    return await change()
            except (JobExists, JobFinished):
                if retried:  # the first attempt was applied but its answer was lost
                    return None
                raise
            except (StoreUnavailable, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise
                logger.debug("job %s: store unavailable, retrying: %r", job_id, exc)
                retried = True
                await asyncio.sleep(0.2)

    # Convergence ------------------------------------------------------------------------------

    async def _targets(self) -> list[tuple[Watcher, str, int]]:
        """(watcher, job, the store's seq now) for every job each watcher must hold."""
        targets = []
        for job_id, job in list(self.jobs.items()):
            seq = await self._store_seq(job_id)
            for watcher in self._expected(job_id, job):
                targets.append((watcher, job_id, seq))
        return targets

    def _expected(self, job_id: str, job: JobRecord) -> list[Watcher]:
        mine = [w for w in self.watchers if w.mine and w.owner == job.owner]
        return [*mine, *job.watchers]

    async def _store_seq(self, job_id: str) -> int:
        assert self._client is not None
        client = self._client
        if job_id in self.final_seqs:
            return self.final_seqs[job_id]
        stored = await self._store(lambda: client.get(job_id), job_id)
        assert stored is not None
        if stored.status.value in TERMINAL:
            self.final_seqs[job_id] = stored.seq
        return stored.seq

    @staticmethod
    def _reached(targets: list[tuple[Watcher, str, int]]) -> bool:
        return all(watcher.seq(job_id) >= seq for watcher, job_id, seq in targets)

    def _mine_subscribed(self) -> bool:
        return all(
            w.sessions and w.sessions[-1].mine_since is not None for w in self.watchers if w.mine
        )

    def _all_converged(self) -> bool:
        return all(
            w.seq(job_id) >= self.final_seqs[job_id]
            for job_id, job in self.jobs.items()
            if job_id in self.final_seqs
            for w in self._expected(job_id, job)
        )

    async def _until(self, condition: Callable[[], bool], within: float) -> bool:
        """Poll ``condition`` until it holds (True) or ``within`` seconds pass (False)."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True

    # Verdicts ---------------------------------------------------------------------------------

    def _lost_terminals(self) -> list[str]:
        lost = []
        for job_id, job in self.jobs.items():
            if job_id not in self.final_seqs:
                continue
            for watcher in self._expected(job_id, job):
                seen = watcher.latest.get(job_id)
                if (
                    seen is None
                    or seen["seq"] != self.final_seqs[job_id]
                    or seen["status"] not in TERMINAL
                ):
                    state = "nothing" if seen is None else f"seq {seen['seq']} {seen['status']}"
                    final = self.final_seqs[job_id]
                    lost.append(f"{watcher.name} job {job_id}: saw {state}, store seq {final}")
        return lost

    def _mine_missed(self) -> list[str]:
        """Jobs created while a `mine` session was subscribed and open for the whole
        convergence limit after, that never reached that session."""
        missed = []
        for watcher in self.watchers:
            if not watcher.mine:
                continue
            for session in watcher.sessions:
                if session.mine_since is None:
                    continue
                for job_id, job in self.jobs.items():
                    if (
                        job.owner == watcher.owner
                        and session.mine_since <= job.created_at
                        and session.open_at(job.created_at + self.config.converge_limit_s)
                        and job_id not in session.seqs
                    ):
                        missed.append(f"{watcher.name} session {session.number} job {job_id}")
        return missed

    # HTTP -------------------------------------------------------------------------------------

    async def _read_http(self, stop: asyncio.Event) -> None:
        """Read random existing jobs over HTTP: 200 or 503 are fine, 404 never is."""
        tokens = {owner: issue_token(SECRET, owner, ttl_s=3600) for owner in OWNERS}
        async with httpx.AsyncClient(timeout=5) as http:
            while not stop.is_set():
                await asyncio.sleep(0.1)
                if not self.jobs:
                    continue
                job_id = self.http_rng.choice(list(self.jobs))
                owner = self.jobs[job_id].owner
                gateway = self.http_rng.choice(self.gateways)
                try:
                    response = await http.get(
                        f"{gateway.url}/exports/{job_id}",
                        headers={"Authorization": f"Bearer {tokens[owner]}"},
                    )
                except httpx.HTTPError as exc:
                    logger.debug("GET %s on %s: %r", job_id, gateway.url, exc)
                    self.http_statuses[0] += 1
                    continue
                self.http_statuses[response.status_code] += 1
                if response.status_code == 404:
                    self.violations.not_found.append(f"GET /exports/{job_id}: {response.text}")
                elif response.status_code not in (200, 503):
                    self.violations.unexpected_errors.append(
                        f"GET /exports/{job_id}: {response.status_code} {response.text[:200]}"
                    )
