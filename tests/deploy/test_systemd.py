"""The shipped systemd unit (deploy/systemd/progress-gateway.service) and its environment file:
the limits the docs promise, a stop timeout that covers the drain, names the gateway knows, and
``systemd-analyze verify`` / ``security`` on the unit where systemd is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from progress_gateway.settings import Settings
from tests.support.gateway_server import ROOT

UNIT = ROOT / "deploy" / "systemd" / "progress-gateway.service"
ENV_FILE = ROOT / "deploy" / "systemd" / "progress-gateway.env"
SHIPPED_BINARY = "/opt/progress-gateway/bin/progress-gateway"
# One process holds 20,000 idle connections (docs/performance.md), plus ~100 of its own files.
PROMISED_CONNECTIONS = 20_000


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """Every ``Key=value`` by section; a key may repeat (systemd appends or resets)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service() -> dict[str, list[str]]:
    return unit_settings(UNIT.read_text())["Service"]


def environment_file() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"not a NAME=value line: {line!r}"
            values[name] = value
    return values


def test_open_file_limit_fits_the_promised_connections() -> None:
    (limit,) = service()["LimitNOFILE"]
    assert int(limit) >= PROMISED_CONNECTIONS + 100
    # docs/operations.md tells operators the same number.
    assert f"LimitNOFILE={limit}" in (ROOT / "docs" / "operations.md").read_text()


def test_stop_timeout_covers_the_drain_and_the_graceful_shutdown() -> None:
    unit = service()
    (timeout,) = unit["TimeoutStopSec"]
    match = re.fullmatch(r"(\d+)s?", timeout)
    assert match is not None, timeout
    drain_s = float(environment_file()["GATEWAY_DRAIN_S"])
    assert drain_s == Settings.model_fields["drain_s"].default
    # The drain, then uvicorn's graceful shutdown of up to drain_s + 5 (server.py).
    assert int(match[1]) >= 2 * drain_s + 5
    assert unit["KillSignal"] == ["SIGTERM"]
    # Local job processes must outlive a restart: only the gateway is signalled.
    assert unit["KillMode"] == ["process"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["User"] == ["progress-gateway"]


def test_exec_start_is_the_serve_command() -> None:
    (command,) = service()["ExecStart"]
    binary, *args = command.split()
    assert binary == SHIPPED_BINARY
    assert args == ["serve"]
    installed = Path(sys.executable).parent / "progress-gateway"
    result = subprocess.run(
        [str(installed), *args, "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_environment_file_names_only_real_settings() -> None:
    names = set(environment_file())
    known = {f"GATEWAY_{field.upper()}" for field in Settings.model_fields}
    # FORWARDED_ALLOW_IPS is uvicorn's own: whom it trusts for X-Forwarded-*.
    assert names - known == {"FORWARDED_ALLOW_IPS"}
    values = environment_file()
    assert values["GATEWAY_SECRET"] == "", "ship no usable secret"
    settings = Settings.model_validate(
        {
            name.removeprefix("GATEWAY_").lower(): value
            for name, value in values.items()
            if name in known and value
        }
    )
    assert settings.port == 8001  # the first replica of deploy/nginx/progress-gateway.conf
    assert (
        "server 127.0.0.1:8001 "
        in (ROOT / "deploy" / "nginx" / "progress-gateway.conf").read_text()
    )


def systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed")
    return binary


def rendered_unit(directory: Path) -> Path:
    """The unit with ExecStart pointing at this venv's binary (verify checks it exists)."""
    text = UNIT.read_text()
    assert text.count(SHIPPED_BINARY) == 1
    installed = Path(sys.executable).parent / "progress-gateway"
    path = directory / UNIT.name
    path.write_text(text.replace(SHIPPED_BINARY, str(installed)))
    return path


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    binary = systemd_analyze()
    result = subprocess.run(
        [binary, "verify", "--man=no", str(rendered_unit(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify exits 0 on an unknown key or an unparsable value and only says so on stderr.
    assert (result.returncode, result.stderr.strip()) == (0, "")


def test_hardening_keeps_exposure_low(tmp_path: Path) -> None:
    binary = systemd_analyze()
    usage = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True)
    if "--offline" not in usage.stdout:
        pytest.skip("this systemd-analyze cannot rate a unit file offline (systemd < 250)")
    result = subprocess.run(
        [binary, "security", "--offline=true", "--no-pager", str(rendered_unit(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout[-2000:] + result.stderr
    # 0 is fully locked down, 10 unprotected; the shipped unit scores 1.7 with systemd 252.
    assert float(match[1]) <= 2.5
