"""Every code block of README.md, client-js/README.md and docs/*.md runs, as written.

A snippet a reader copies must work, so each fenced block is executed or checked by its info
string (the word after the opening fence):

- ``python`` runs in the project's interpreter; ``bash`` / ``sh`` runs in ``bash -euo pipefail``
  from the repository root with ``.venv/bin`` on ``PATH``; ``js`` / ``mjs`` runs in Node as an
  ES module that can import ``@progress-gateway/client``, ``ws`` and ``eventsource``.
- ``json`` must parse.
- ``text`` and ``console`` are output, diagrams and samples: shown, not run.
- Anything else (a bare fence, ``html``, a config fragment, shell that deploys somewhere, a command
  that runs for minutes) must be preceded by ``<!-- not run: <reason> -->`` (blank lines between
  are allowed). The reason is required, and :data:`MAX_NOT_RUN` keeps such blocks rare.

Every snippet sees the same world: a private redis-server and a gateway serving on it (local
executor, demo kinds). The environment names them: ``GATEWAY_REDIS_URL`` (so
``ProgressClient.from_env()`` finds the store), ``GATEWAY_SECRET``, and ``TOKEN`` / ``PGW_TOKEN``
holding a token for ``alice``. The documented address ``127.0.0.1:8000`` is the one substitution
made in a snippet's text: it becomes the test gateway's address.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from tests.support.gateway_server import SECRET, GatewayServer
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
CLIENT_JS = ROOT / "client-js"
DOCUMENTED_ADDRESS = "127.0.0.1:8000"
# Blocks marked "not run" across every page; raise it only with a reason a reviewer accepts.
MAX_NOT_RUN = 16

RUN = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "js": "js", "mjs": "js"}
CHECK = {"json"}
SHOWN = {"text", "console"}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int
    info: str
    code: str
    not_run: str | None  # the reason given in the marker, "" when it gave none

    @property
    def lang(self) -> str:
        return self.info.split()[0].lower() if self.info.strip() else ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def parse(page: str, text: str) -> list[Snippet]:
    """The fenced blocks of one Markdown page, with the not-run marker before each, if any."""
    lines = text.splitlines()
    found: list[Snippet] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None or ("`" in opening["info"] and opening["fence"][0] == "`"):
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            stripped = lines[end].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
            end += 1
        else:
            raise AssertionError(f"{page}:{index + 1}: fence never closed")
        found.append(
            Snippet(
                page,
                index + 1,
                opening["info"].strip(),
                "\n".join(body) + "\n",
                marker(lines, index),
            )
        )
        index = end + 1
    return found


def marker(lines: list[str], fence_index: int) -> str | None:
    before = fence_index - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    match = NOT_RUN.match(lines[before]) if before >= 0 else None
    return match["reason"].strip() if match else None


def pages() -> list[Path]:
    return [ROOT / "README.md", CLIENT_JS / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def all_snippets() -> list[Snippet]:
    return [s for page in pages() for s in parse(str(page.relative_to(ROOT)), page.read_text())]


SNIPPETS = all_snippets()
RUNNABLE = [s for s in SNIPPETS if s.not_run is None and (s.lang in RUN or s.lang in CHECK)]


# -- the world every snippet sees -------------------------------------------------------------


@dataclass(frozen=True)
class World:
    gateway: GatewayServer
    env: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("snippets")
    redis = RedisServer(directory / "redis")
    redis.start()
    try:
        with GatewayServer(redis.url, directory / "gateway.log") as gateway:
            token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, SECRET, "HS256")
            env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
            env.pop("REDIS_URL", None)
            env |= {
                "GATEWAY_REDIS_URL": redis.url,
                "GATEWAY_SECRET": SECRET,
                "TOKEN": token,
                "PGW_TOKEN": token,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            }
            yield World(gateway, env)
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``@progress-gateway/client`` built from this checkout's sources into a private directory.

    Built with the package's own esbuild, so the working tree's ``dist/`` is neither needed nor
    touched (another build may be running there).
    """
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise AssertionError("js snippets need Node >= 20 and npm on PATH")
    if not (CLIENT_JS / "node_modules" / "esbuild").is_dir():
        npm(["ci", "--no-audit", "--no-fund"])
    package = tmp_path_factory.mktemp("client-package")
    shutil.copy(CLIENT_JS / "package.json", package / "package.json")
    esbuild = CLIENT_JS / "node_modules" / ".bin" / "esbuild"
    command = [str(esbuild), "src/index.ts", "--bundle", "--format=esm", "--platform=neutral"]
    command += [
        "--target=es2022",
        f"--outfile={package / 'dist' / 'index.js'}",
        "--log-level=warning",
    ]
    built = subprocess.run(command, cwd=CLIENT_JS, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, f"esbuild of client-js failed:\n{built.stderr}"
    return package


def npm(args: list[str]) -> None:
    done = subprocess.run(
        ["npm", *args], cwd=CLIENT_JS, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"npm {' '.join(args)} in client-js failed:\n{done.stderr}"


def node_project(directory: Path, client: Path) -> Path:
    """A project whose node_modules holds the client and the Node transports it needs."""
    modules = directory / "node_modules"
    (modules / "@progress-gateway").mkdir(parents=True)
    (modules / "@progress-gateway" / "client").symlink_to(client)
    for name in ("ws", "eventsource"):
        (modules / name).symlink_to(CLIENT_JS / "node_modules" / name)
    return directory


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("snippet", RUNNABLE, ids=lambda s: f"{s.where}-{s.lang}")
def test_snippet_runs_as_written(
    snippet: Snippet, world: World, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if snippet.lang in CHECK:
        json.loads(snippet.code)
        return
    code = snippet.code.replace(DOCUMENTED_ADDRESS, f"127.0.0.1:{world.gateway.port}")
    kind = RUN[snippet.lang]
    if kind == "python":
        script = tmp_path / "snippet.py"
        command, cwd = [sys.executable, str(script)], tmp_path
    elif kind == "bash":
        script = tmp_path / "snippet.sh"
        command, cwd = ["bash", "-euo", "pipefail", str(script)], ROOT
    else:
        client = request.getfixturevalue("client_package")  # built only when a js block runs
        project = node_project(tmp_path / "project", client)
        script = project / "snippet.mjs"
        command, cwd = ["node", str(script)], project
    script.write_text(code)
    done = subprocess.run(
        command, cwd=cwd, env=world.env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, (
        f"{snippet.where} ({snippet.lang}) exited {done.returncode}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )


def test_every_block_runs_or_says_why_not() -> None:
    unknown = [
        f"{s.where}: ```{s.info}"
        for s in SNIPPETS
        if s.not_run is None and s.lang not in RUN and s.lang not in CHECK and s.lang not in SHOWN
    ]
    assert unknown == [], (
        "blocks that are neither run nor output: use ```text for output and diagrams, or put "
        "<!-- not run: reason --> before the block"
    )
    assert [s.where for s in SNIPPETS if s.not_run == ""] == [], "a not-run marker needs a reason"


def test_not_run_blocks_stay_rare() -> None:
    not_run = [s for s in SNIPPETS if s.not_run is not None]
    ran = [s for s in SNIPPETS if s.not_run is None and s.lang in RUN]
    assert len(ran) >= 5  # the pages were found and parsed
    assert len(not_run) <= MAX_NOT_RUN, "\n".join(f"{s.where}: {s.not_run}" for s in not_run)


def test_parse_reads_fences_markers_and_indentation() -> None:
    page = "\n".join(
        [
            "```python",
            "print(1)",
            "```",
            "<!-- not run: deploys to Modal -->",
            "",
            "~~~bash extra words",
            "modal deploy app.py",
            "~~~",
            "- a list item:",
            "",
            "  ```js",
            "  console.log(2);",
            "  ```",
            "inline ```code``` is not a fence",
            "````",
            "```nested```",
            "````",
        ]
    )
    python, deploy, js, bare = parse("page.md", page)
    assert (python.lang, python.code, python.not_run, python.line) == (
        "python",
        "print(1)\n",
        None,
        1,
    )
    assert (deploy.lang, deploy.info, deploy.not_run) == (
        "bash",
        "bash extra words",
        "deploys to Modal",
    )
    assert (js.lang, js.code, js.not_run) == ("js", "console.log(2);\n", None)
    assert (bare.lang, bare.code) == ("", "```nested```\n")
    with pytest.raises(AssertionError, match="never closed"):
        parse("page.md", "```python\nprint(1)\n")


def test_quick_start_is_two_commands() -> None:
    """A newcomer's path stays ./scripts/demo to see it and ./scripts/test to check it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    first = parse("README.md", section)[0]
    commands = [line.split("#")[0].strip() for line in first.code.splitlines()]
    assert [c for c in commands if c] == ["./scripts/demo", "./scripts/test"]
