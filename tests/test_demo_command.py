"""``progress-gateway demo``: the one command a newcomer runs works on a bare machine."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.redis_server import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]


def test_demo_serves_a_token_and_runs_a_demo_job_on_the_embedded_store(tmp_path: Path) -> None:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environment.pop("REDIS_URL", None)
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [sys.executable, "-m", "progress_gateway.cli", "demo", "--port", str(port)],
        cwd=tmp_path,  # a bare directory: the embedded store file is created here
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def printed_token() -> str | None:
            match = re.search(r"token\s+(\S+\.\S+\.\S+)", (tmp_path / "demo.log").read_text())
            return match.group(1) if match else None

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(lambda: printed_token() and healthy(), 30, "the demo to start")
        token = printed_token()
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(
            f"{base}/exports",
            json={"kind": "demo", "params": {"steps": 3, "step_s": 0}},
            headers=headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]

        def succeeded() -> bool:
            job = httpx.get(f"{base}/exports/{job_id}", headers=headers, timeout=5).json()
            return bool(job["status"] == "succeeded")

        wait_until(succeeded, 30, "the demo job to succeed")
        assert (tmp_path / "progress-gateway-demo.db").exists()
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=30)
        log.close()
