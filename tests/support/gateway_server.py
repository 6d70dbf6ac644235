"""A real ``progress-gateway serve`` process on a free port, for end-to-end tests."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.redis_server import free_port, wait_until

SECRET = "test-secret-" + "s" * 40
ROOT = Path(__file__).resolve().parents[2]


class GatewayServer:
    """Starts, SIGKILLs, SIGTERMs and restarts one gateway process (same port each time)."""

    def __init__(self, store_url: str, log_path: Path, **settings: str) -> None:
        self.port = free_port()
        self.store_url = store_url
        self.log_path = log_path
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.pop("REDIS_URL", None)
        env["GATEWAY_SECRET"] = SECRET
        env["GATEWAY_PORT"] = str(self.port)
        if self.store_url.startswith("sqlite:///"):
            env["GATEWAY_SQLITE_PATH"] = self.store_url.removeprefix("sqlite:///")
        else:
            env["GATEWAY_REDIS_URL"] = self.store_url
        # Beside the log, not in /tmp: a killed gateway cannot remove its slots directory.
        store_digest = hashlib.sha256(self.store_url.encode()).hexdigest()[:12]
        env["GATEWAY_LOCAL_SLOTS_DIR"] = str(self.log_path.parent / f"slots-{store_digest}")
        for name, value in self.settings.items():
            env[f"GATEWAY_{name.upper()}"] = value
        return env

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "progress_gateway.cli", "serve", "--log-level", "info"],
            env=self.environment(),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self.healthy, 20.0, f"gateway on port {self.port} (log: {self.log_path})")

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.process.returncode}: {self.log()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def __enter__(self) -> GatewayServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def embedded_gateway(directory: Path, **settings: str) -> Iterator[GatewayServer]:
    """A started gateway on its own SQLite file in ``directory``, stopped on exit."""
    with GatewayServer(
        f"sqlite:///{directory / 'jobs.db'}", directory / "gateway.log", **settings
    ) as server:
        yield server
