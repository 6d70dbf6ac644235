"""The installed ``progress-gateway`` console script, run as a user would run it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from progress_core.errors import Unauthorized
from progress_gateway.auth import verify_token

SCRIPT = Path(sys.executable).parent / "progress-gateway"
SECRET = "cli-test-secret-" + "q" * 32


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script with no inherited GATEWAY_* / REDIS_URL configuration."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("GATEWAY_") and name.upper() != "REDIS_URL"
    }
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_usage_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_is_installed() -> None:
    assert SCRIPT.is_file()
    assert os.access(SCRIPT, os.X_OK)


def test_token_uses_gateway_secret() -> None:
    before = int(time.time())
    result = run("token", "--sub", "alice", "--ttl", "120", env={"GATEWAY_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    claims = verify_token(SECRET, token)
    assert claims.sub == "alice"
    assert before + 120 <= claims.exp <= int(time.time()) + 120


def test_secret_flag_overrides_the_environment() -> None:
    flag_secret = "flag-secret-" + "f" * 32
    result = run("token", "--sub", "bob", "--secret", flag_secret, env={"GATEWAY_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert verify_token(flag_secret, token).sub == "bob"
    with pytest.raises(Unauthorized, match="signature"):
        verify_token(SECRET, token)


def test_default_ttl_is_an_hour() -> None:
    before = int(time.time())
    result = run("token", "--sub", "alice", env={"GATEWAY_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    exp = verify_token(SECRET, result.stdout.strip()).exp
    assert before + 3600 <= exp <= int(time.time()) + 3600


def test_missing_secret_exits_2_with_a_hint() -> None:
    assert_usage_error(run("token", "--sub", "alice"), "set GATEWAY_SECRET or pass --secret")


def test_empty_gateway_secret_counts_as_missing() -> None:
    result = run("token", "--sub", "alice", env={"GATEWAY_SECRET": ""})
    assert_usage_error(result, "set GATEWAY_SECRET or pass --secret")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--sub", ""], "owner must be a non-empty string"),
        (["--sub", "has space"], "owner must be"),
        (["--sub", "alice", "--ttl", "0"], "ttl must be a positive number"),
        (["--sub", "alice", "--ttl", "-5"], "ttl must be a positive number"),
        (["--sub", "alice", "--ttl", "soon"], "invalid int value"),
        (["--sub", "alice", "--secret", "short"], "at least 32 bytes"),
        (["--ttl", "60"], "--sub"),
    ],
)
def test_bad_input_exits_2_without_traceback(args: list[str], expected: str) -> None:
    assert_usage_error(run("token", *args, env={"GATEWAY_SECRET": SECRET}), expected)


def test_short_gateway_secret_names_the_variable_without_echoing_it() -> None:
    result = run("token", "--sub", "alice", env={"GATEWAY_SECRET": "private-but-short"})
    assert_usage_error(result, "GATEWAY_SECRET: secret must be at least 32 bytes")
    assert "private-but-short" not in result.stderr


def test_bad_unrelated_setting_is_reported_by_name() -> None:
    result = run("token", "--sub", "alice", env={"GATEWAY_SECRET": SECRET, "GATEWAY_PORT": "0"})
    assert_usage_error(result, "GATEWAY_PORT:")


def test_no_command_exits_2_with_usage() -> None:
    assert_usage_error(run(), "usage: progress-gateway")


def test_module_entry_point_matches_the_script() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "progress_gateway.cli",
            "token",
            "--sub",
            "carol",
            "--secret",
            SECRET,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert verify_token(SECRET, result.stdout.strip()).sub == "carol"


def test_serve_on_a_busy_port_exits_2_with_a_hint(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "serve",
            env={
                "GATEWAY_SECRET": SECRET,
                "GATEWAY_PORT": str(port),
                "GATEWAY_SQLITE_PATH": str(tmp_path / "jobs.db"),
            },
        )
    assert_usage_error(result, f"port {port} on 127.0.0.1 is already in use")
    assert "--port or GATEWAY_PORT" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "jobs.db").exists()  # nothing was started
