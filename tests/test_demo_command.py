"""``progress-gateway demo``: the one command a newcomer runs works on a bare machine."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from progress_gateway.auth import verify_token
from tests.support.redis_server import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_a_job_on_the_embedded_store_and_leaves_only_ignored_files(
    tmp_path: Path,
) -> None:
    # A bare directory under git with the repository's .gitignore: the store, its secret and
    # its locks are created here, and none of them may show up in `git status`.
    app = tmp_path / "app"
    app.mkdir()
    subprocess.run(["git", "init", "-q", str(app)], check=True)
    (app / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    with Demo(app, free_port(), log_dir=tmp_path) as demo:
        token = demo.printed_token()
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(
            f"{demo.base}/exports",
            json={"kind": "demo", "params": {"steps": 3, "step_s": 0}},
            headers=headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]

        def succeeded() -> bool:
            job = httpx.get(f"{demo.base}/exports/{job_id}", headers=headers, timeout=5).json()
            return bool(job["status"] == "succeeded")

        wait_until(succeeded, 30, "the demo job to succeed")
        assert (app / "progress-gateway-demo.db").exists()
    left = sorted(path.name for path in app.iterdir() if path.name != ".git")
    assert "progress-gateway-demo.db.secret" in left  # something was left: the check can fail
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=app,
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout.splitlines() == ["?? .gitignore"], left


class Demo:
    """One ``progress-gateway demo`` process in ``directory``, stopped with SIGTERM on exit."""

    def __init__(
        self,
        directory: Path,
        port: int,
        env: dict[str, str] | None = None,
        *,
        log_dir: Path | None = None,
    ) -> None:
        self.directory = directory
        self.base = f"http://127.0.0.1:{port}"
        log_dir = log_dir or directory
        self.log_path = log_dir / f"demo-{port}-{len(list(log_dir.glob('demo-*.log')))}.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        environment.pop("REDIS_URL", None)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "progress_gateway.cli", "demo", "--port", str(port)],
                cwd=directory,
                env={**environment, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def printed_token(self) -> str | None:
        match = re.search(r"token\s+(\S+\.\S+\.\S+)", self.log_path.read_text())
        return match.group(1) if match else None

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the demo exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def __enter__(self) -> Demo:
        wait_until(lambda: self.printed_token() and self.healthy(), 30, "the demo to start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)

    def mine(self, token: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{self.base}/exports/active", headers=headers, timeout=5)


def test_a_token_from_an_earlier_run_still_works_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    with Demo(tmp_path, port) as first:
        token = first.printed_token()
        assert token is not None
        assert first.mine(token).status_code == 200
    secret_file = tmp_path / "progress-gateway-demo.db.secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    saved = secret_file.read_text()
    with Demo(tmp_path, port) as second:
        assert second.printed_token() != token  # a new token, signed with the same secret
        assert second.mine(token).status_code == 200
    assert secret_file.read_text() == saved
    # A different secret would have refused it: the check above could fail.
    secret_file.unlink()
    with Demo(tmp_path, port) as third:
        assert third.mine(token).status_code == 401


def test_gateway_secret_wins_over_the_saved_one(tmp_path: Path) -> None:
    secret = "explicit-demo-secret-" + "x" * 32
    with Demo(tmp_path, free_port(), {"GATEWAY_SECRET": secret}) as demo:
        token = demo.printed_token()
        assert token is not None
        assert verify_token(secret, token).sub == "demo"
        assert demo.mine(token).status_code == 200
    assert not (tmp_path / "progress-gateway-demo.db.secret").exists()


def test_a_busy_port_gives_one_line_with_the_way_out(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        result = subprocess.run(
            [sys.executable, "-m", "progress_gateway.cli", "demo", "--port", str(port)],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stdout == ""  # no token banner for a gateway that will not start
    assert result.stderr.splitlines() == [
        f"progress-gateway: error: port {port} on 127.0.0.1 is already in use (another gateway "
        "or demo?): stop it, or choose another port with --port or GATEWAY_PORT"
    ]
