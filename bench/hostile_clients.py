"""Hostile clients that never read (issue 11 finding 6): gateway RSS over time, and who is closed.

An owner opens ``--attackers`` WebSocket connections, each ``{"op":"subscribe","scope":"mine"}``,
and never reads from them: every socket has a 4 KiB receive buffer and the client library stops
reading as soon as one frame waits, so the gateway's sockets fill at once. Meanwhile the same
owner creates ``--create-rate`` jobs a second (each adopted by every ``mine`` watcher) and one of
its jobs is updated ``--hot-rate`` times a second, through the real store path
(``AsyncProgressClient`` → Lua script → PUBLISH). Every ``--sample-s`` the script prints the
gateway's RSS (``VmRSS``), how many connections the gateway closed with 1008, and what the load
achieved. The gateway runs on a private ``redis-server``, with fanout.py's layout and gateway
class (``--gateway-src`` runs another checkout, e.g. the code before the fix):

    .venv/bin/python bench/hostile_clients.py                          # 40 attackers, 20 s
    .venv/bin/python bench/hostile_clients.py --gateway-src /tmp/old   # the same, old code
    .venv/bin/python bench/hostile_clients.py --gateway-env SEND_STALL_S=5

Numbers, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import websockets
from fanout import PREFIX, ROOT, SECRET, Gateway, RedisServer, proc_rss
from websockets.asyncio.client import ClientConnection

from progress_core.store import StoreOptions
from progress_gateway.auth import issue_token
from progress_workers import AsyncProgressClient

OWNER = "mallory"
MIB = 1024 * 1024


async def attacker(port: int, url: str) -> ClientConnection:
    """One connection that reads ``ready``, subscribes to ``scope: mine`` and reads no more."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    connection = await websockets.connect(url, sock=sock, compression=None, max_queue=1)
    await connection.recv()  # ready
    await connection.send('{"op":"subscribe","ref":"mine","scope":"mine"}')
    return connection


async def paced(rate: float, stop: asyncio.Event, step: Callable[[], Awaitable[None]]) -> int:
    """Call ``step()`` about ``rate`` times a second until ``stop``; returns how many ran."""
    done = 0
    started = time.monotonic()
    while not stop.is_set():
        behind = int((time.monotonic() - started) * rate) - done
        if behind <= 0:
            await asyncio.sleep(0.002)
            continue
        for _ in range(min(behind, 64)):
            await step()
            done += 1
    return done


@contextlib.asynccontextmanager
async def load(
    client: AsyncProgressClient, args: argparse.Namespace, counts: dict[str, int]
) -> AsyncIterator[None]:
    """Jobs created at ``--create-rate``/s and one hot job updated at ``--hot-rate``/s."""
    hot = (await client.create_job(owner=OWNER, kind="bench")).id
    await client.start(hot)
    stop = asyncio.Event()

    async def create() -> None:
        await client.create_job(owner=OWNER, kind="bench")
        counts["created"] += 1

    async def update() -> None:
        counts["updates"] += 1
        await client.update(hot, message=f"{counts['updates']:010d} " + "m" * args.message_chars)

    # Several updaters: one awaits each store round trip, which caps it below the target rate.
    share = args.hot_rate / args.updaters
    tasks = [asyncio.create_task(paced(args.create_rate, stop, create))]
    tasks += [asyncio.create_task(paced(share, stop, update)) for _ in range(args.updaters)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def run(args: argparse.Namespace, gateway: Gateway, redis_url: str) -> None:
    token = issue_token(SECRET, OWNER, 3600)
    url = f"{gateway.ws_url}?token={token}"
    attackers = [await attacker(gateway.port, url) for _ in range(args.attackers)]
    counts = {"created": 0, "updates": 0}
    client = AsyncProgressClient.from_url(redis_url, StoreOptions(prefix=PREFIX))
    closes = 'pgw_ws_closes_total{code="1008"}'
    rss: list[float] = []
    closed = 0
    first_close: float | None = None
    print(f"{'t s':>5} {'RSS MiB':>8} {'closed 1008':>11} {'open':>5} {'jobs':>6} {'updates/s':>9}")
    try:
        async with load(client, args, counts):
            started = time.monotonic()
            last_updates, last_t = 0, started
            while (now := time.monotonic()) - started < args.duration:
                await asyncio.sleep(args.sample_s)
                now = time.monotonic()
                metrics = await asyncio.to_thread(gateway.metrics)
                closed = int(metrics.get(closes, 0))
                if closed and first_close is None:
                    first_close = now - started
                rss.append(proc_rss(gateway.pid) / MIB)
                rate = (counts["updates"] - last_updates) / (now - last_t)
                last_updates, last_t = counts["updates"], now
                print(
                    f"{now - started:5.1f} {rss[-1]:8.1f} {closed:11d} "
                    f"{int(metrics.get('pgw_connections', 0)):5d} {counts['created']:6d} "
                    f"{rate:9.0f}",
                    flush=True,
                )
    finally:
        for connection in attackers:
            connection.transport.abort()
        await client.aclose()
    print(
        f"\nRSS MiB: first sample {rss[0]:.1f}, max {max(rss):.1f}, last {rss[-1]:.1f}, "
        f"median {statistics.median(rss):.1f}; attackers closed with 1008: {closed} of "
        f"{args.attackers}"
        + (f", first after {first_close:.1f}s" if first_close is not None else "")
        + f"; jobs created {counts['created']}, hot-job updates {counts['updates']} "
        f"({counts['updates'] / args.duration:.0f}/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=40)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of attack")
    parser.add_argument("--create-rate", type=float, default=78.0, help="jobs created per s")
    parser.add_argument("--hot-rate", type=float, default=3900.0, help="hot-job updates per s")
    parser.add_argument("--updaters", type=int, default=8, help="concurrent update loops")
    parser.add_argument("--message-chars", type=int, default=200)
    parser.add_argument("--sample-s", type=float, default=1.0)
    parser.add_argument("--gateway-src", type=Path, default=ROOT, help="checkout to run")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="GATEWAY_NAME=VALUE for the gateway (repeatable)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgw-hostile-") as directory:
        work = Path(directory)
        redis = RedisServer(work / "redis")
        gateway = Gateway(redis.url, work, "warning", args.gateway_src.resolve())
        for setting in args.gateway_env:
            name, _, value = setting.partition("=")
            gateway.extra_env[f"GATEWAY_{name.upper()}"] = value
        try:
            gateway.start()
            print(
                f"gateway {args.gateway_src} pid {gateway.pid}; {args.attackers} attackers, "
                f"{args.create_rate:.0f} jobs/s, {args.hot_rate:.0f} hot updates/s, "
                f"{args.duration:.0f} s"
            )
            asyncio.run(run(args, gateway, redis.url))
        finally:
            gateway.stop()
            redis.stop()
            log = (work / "gateway.log").read_text(errors="replace")
            lines = [line for line in log.splitlines() if "with 1008" in line or "not read" in line]
            print(f"gateway log: {len(lines)} closes of clients that do not read")


if __name__ == "__main__":
    main()
