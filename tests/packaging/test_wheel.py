"""The wheel stands alone: built once from a clean copy, installed into a fresh venv, used from an
application directory that has its own ``workers`` and ``gateway`` packages.

Nothing here imports the checkout's packages: every check runs the venv's interpreter or its
``progress-gateway`` command, so what is tested is what ``pip install`` gives a user.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.packaging.conftest import git, run
from tests.support.redis_server import free_port, wait_until

# Builds and installs take a while on a loaded machine; each step still has its own timeout.
pytestmark = pytest.mark.timeout(300)

OUR_TOP_LEVEL = {"progress_core", "progress_gateway", "progress_workers"}
SOURCE_ROOTS = {
    "core": "progress_core",
    "gateway": "progress_gateway",
    "workers": "progress_workers",
}
STATIC = "progress_gateway/static"

# The application's own packages, named like ours used to be. Its ``workers.local_runner`` fails
# loudly: if anything of ours still ran ``python -m workers.local_runner``, jobs would not succeed.
APP_FILES = {
    "workers/__init__.py": 'NAME = "the app\'s workers"\n',
    "workers/local_runner.py": 'raise SystemExit("the app\'s workers.local_runner ran")\n',
    "gateway/__init__.py": 'NAME = "the app\'s gateway"\n',
    "use_sdk.py": """\
import json
import sys

import gateway
import progress_workers
import workers
from progress_workers import ProgressClient

with ProgressClient.from_url(sys.argv[1]) as client:
    created = client.create_job(owner="alice", kind="demo", params={"steps": 2})
    stored = client.get(created.id)
print(json.dumps({
    "workers": workers.NAME,
    "gateway": gateway.NAME,
    "sdk": progress_workers.__file__,
    "job": stored.model_dump(mode="json"),
}))
""",
}


def clean_environment() -> dict[str, str]:
    """No store settings, and nothing that would put the checkout on the venv's path."""
    dropped = ("GATEWAY_", "REDIS_URL", "PYTHON", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


@pytest.fixture(scope="module")
def wheel(source_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel`` of the clean copy: this is where setup.py runs npm and adds the client."""
    out = tmp_path_factory.mktemp("wheel")
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source_tree)],
        source_tree,
    )
    (built,) = out.glob("progress_gateway-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and its server extra, from PyPI through pip's cache."""
    directory = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(directory)], directory)
    run(
        [str(directory / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[server]"],
        directory,
    )
    return directory


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("app")
    for name, text in APP_FILES.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


@pytest.fixture(scope="module")
def demo(venv: Path, app_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``progress-gateway demo`` run from the app's directory; yields its URL and auth headers."""
    port = free_port()
    log_path = app_dir / "demo.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "progress-gateway"), "demo", "--port", str(port)],
            cwd=app_dir,
            env=clean_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"

        def printed_token() -> str | None:
            match = re.search(r"token\s+(\S+\.\S+\.\S+)", log_path.read_text())
            return match.group(1) if match else None

        def healthy() -> bool:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200

        try:
            try:
                wait_until(lambda: printed_token() and healthy(), 30, "the demo to start")
            except TimeoutError as exc:
                raise AssertionError(f"{exc}; its output:\n{log_path.read_text()}") from exc
            yield base, {"Authorization": f"Bearer {printed_token()}"}
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_the_wheel_holds_our_three_packages_whole_and_nothing_else(
    wheel: Path, source_tree: Path
) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    top_level = {name.split("/")[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == OUR_TOP_LEVEL
    # Every module and Lua script of the source roots is in the wheel: the explicit package list
    # in pyproject.toml has not drifted from the directories.
    expected = {
        f"{package}/{path.relative_to(source_tree / root / package).as_posix()}"
        for root, package in SOURCE_ROOTS.items()
        for path in (source_tree / root / package).rglob("*")
        if path.suffix in {".py", ".lua"}
    }
    assert expected, "no sources found in the copy"
    assert expected - names == set()
    assert {f"{STATIC}/progress-gateway.js", f"{STATIC}/index.html"} <= names


def test_building_leaves_the_source_tree_clean(wheel: Path, source_tree: Path) -> None:
    # build/, *.egg-info, client-js/node_modules and client-js/dist are all ignored.
    assert git(source_tree, "status", "--porcelain", "--untracked-files=all") == ""


def test_the_sdk_works_beside_an_app_with_its_own_workers_and_gateway(
    venv: Path, app_dir: Path
) -> None:
    store = f"sqlite:///{app_dir / 'sdk.db'}"
    output = run([str(venv / "bin" / "python"), "use_sdk.py", store], app_dir)
    report = json.loads(output)
    assert report["workers"] == "the app's workers"
    assert report["gateway"] == "the app's gateway"
    assert Path(report["sdk"]).is_relative_to(venv)
    assert report["job"]["owner"] == "alice"
    assert report["job"]["status"] == "queued"


def test_the_demo_from_the_app_directory_runs_a_job_to_succeeded(
    demo: tuple[str, dict[str, str]],
) -> None:
    base, headers = demo
    created = httpx.post(
        f"{base}/exports",
        json={"kind": "demo", "params": {"steps": 3, "step_s": 0}},
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    seen: list[str] = []

    def finished() -> bool:
        job = httpx.get(f"{base}/exports/{job_id}", headers=headers, timeout=5).json()
        seen.append(job["status"])
        return job["status"] in {"succeeded", "failed", "cancelled"}

    wait_until(finished, 30, "the demo job to finish")
    assert seen[-1] == "succeeded", httpx.get(f"{base}/exports/{job_id}", headers=headers).text


def test_the_demo_page_and_the_bundle_come_from_the_wheel(
    demo: tuple[str, dict[str, str]], wheel: Path
) -> None:
    base, _ = demo
    packaged = zipfile.ZipFile(wheel)
    page = httpx.get(f"{base}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.content == packaged.read(f"{STATIC}/index.html")
    bundle = httpx.get(f"{base}/client/progress-gateway.js", timeout=10)
    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert bundle.content == packaged.read(f"{STATIC}/progress-gateway.js")
    assert b"ProgressClient" in bundle.content


def test_building_without_node_says_what_is_missing(source_tree: Path, tmp_path: Path) -> None:
    no_tools = tmp_path / "empty-bin"
    no_tools.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(source_tree)],
        env={**clean_environment(), "PATH": str(no_tools)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert "node and npm not found on PATH" in result.stdout
    assert "Install Node.js 20 or newer" in result.stdout
    assert not list(tmp_path.glob("*.whl"))
