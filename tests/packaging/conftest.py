"""A copy of the working tree, committed to a throwaway Git repository, for the packaging tests.

Builds (``pip wheel``, ``npm pack``) run in the copy, never in the checkout: they must work from a
fresh clone (no client-js/node_modules, no dist/), and they must not touch files other tests use.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(command: list[str], cwd: Path, timeout: float = 300) -> str:
    """Run ``command``; on failure show its whole output, which says what went wrong."""
    result = subprocess.run(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}"
    return result.stdout


def git(cwd: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=packaging", "-c", "user.email=packaging@test", *args], cwd)


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's files as a clone would have them (tracked and new, not ignored ones)."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT)
    copy = tmp_path_factory.mktemp("source") / "progress-gateway"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git(copy, "init", "-q")
    git(copy, "add", "--all")
    git(copy, "commit", "-q", "-m", "snapshot of the working tree")
    return copy


def ensure_node_modules(client_dir: Path) -> None:
    """The builds need the client's dev dependencies (tsc, esbuild): a copy of the checkout's
    ``node_modules`` when it was installed from the same lock file (seconds), else ``npm ci``."""
    if (client_dir / "node_modules").is_dir():
        return
    installed = ROOT / "client-js" / "node_modules"
    lock = "package-lock.json"
    if (
        installed.is_dir()
        and (installed / ".package-lock.json").is_file()
        and (ROOT / "client-js" / lock).read_bytes() == (client_dir / lock).read_bytes()
    ):
        shutil.copytree(installed, client_dir / "node_modules", symlinks=True)
        return
    run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], client_dir)
