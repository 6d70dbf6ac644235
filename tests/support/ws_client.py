"""A real WebSocket client (the ``websockets`` library) that checks the per-job seq guarantee."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

Frame = dict[str, Any]


class WsClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.latest: dict[str, Frame] = {}
        self.frames: list[Frame] = []

    @classmethod
    async def connect(cls, url: str, token: str | None = None, **kwargs: Any) -> WsClient:
        target = f"{url}?token={token}" if token else url
        return cls(await websockets.connect(target, compression=None, **kwargs))

    async def send(self, message: Frame | str) -> None:
        await self.connection.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, timeout: float = 10.0) -> Frame:
        async with asyncio.timeout(timeout):
            frame: Frame = json.loads(await self.connection.recv())
        self.frames.append(frame)
        if frame.get("op") == "update":
            job = frame["job"]
            previous = self.latest.get(job["id"])
            # On one connection a job's seq strictly increases, unless the frame is a reset: the
            # store went back (failover, restore) and the client takes its state as it is.
            assert previous is None or frame.get("reset") or job["seq"] > previous["seq"], (
                previous,
                job,
            )
            self.latest[job["id"]] = job
        return frame

    async def recv_until(self, done: Callable[[Frame], bool], timeout: float = 10.0) -> Frame:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if done(frame):
                    return frame

    async def ready(self) -> Frame:
        return await self.recv_until(lambda frame: frame["op"] == "ready")

    async def subscribe(self, ref: str, jobs: list[Any]) -> list[Frame]:
        """Subscribe and collect every frame up to and including the ack."""
        start = len(self.frames)
        await self.send({"op": "subscribe", "ref": ref, "jobs": jobs})
        await self.recv_until(lambda frame: frame["op"] == "ack" and frame["ref"] == ref)
        return self.frames[start:]

    async def wait_for_job(
        self, job_id: str, done: Callable[[Frame], bool], timeout: float = 10.0
    ) -> Frame:
        if job_id in self.latest and done(self.latest[job_id]):
            return self.latest[job_id]
        await self.recv_until(
            lambda frame: (
                frame["op"] == "update" and frame["job"]["id"] == job_id and done(frame["job"])
            ),
            timeout,
        )
        return self.latest[job_id]

    async def close(self) -> None:
        await self.connection.close()
