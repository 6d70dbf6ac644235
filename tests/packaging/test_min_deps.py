"""scripts/test-min-deps: the constraints it installs are the minimums pyproject.toml declares.

The script itself (a venv with the lowest allowed versions and a subset of the suite) runs as a
step of scripts/test; here only its reading of pyproject.toml is checked, on the real file and on
made-up ones.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

from tests.packaging.conftest import ROOT

SCRIPT = ROOT / "scripts" / "test-min-deps"


def constraints(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "scripts" / "test-min-deps"), "--constraints"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def project_with(tmp_path: Path, dependencies: list[str], server: list[str]) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(SCRIPT, tmp_path / "scripts" / "test-min-deps")
    listed = ", ".join(f"{requirement!r}" for requirement in dependencies)
    served = ", ".join(f"{requirement!r}" for requirement in server)
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "x"\ndependencies = [{listed}]\n'
        f'[project.optional-dependencies]\nserver = [{served}]\ntest = ["pytest>=8"]\n'
    )
    return tmp_path


def test_every_base_and_server_requirement_is_pinned_to_its_minimum() -> None:
    result = constraints(ROOT)
    assert result.returncode == 0, result.stderr
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["server"]
    lines = result.stdout.splitlines()
    assert len(lines) == len(declared)
    assert "uvicorn==0.52.1" in lines


def test_extras_are_dropped_markers_kept_upper_bounds_ignored(tmp_path: Path) -> None:
    root = project_with(
        tmp_path,
        ["redis >= 8.0.1", "pydantic>=2.11,<3"],
        ["PyJWT[crypto]>=2.10", "uvloop>=0.19; sys_platform != 'win32'"],
    )
    result = constraints(root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "redis==8.0.1",
        "pydantic==2.11",
        "PyJWT==2.10",
        "uvloop==0.19 ; sys_platform != 'win32'",
    ]


def test_a_requirement_without_a_minimum_is_refused(tmp_path: Path) -> None:
    root = project_with(tmp_path, ["redis>=8.0.1"], ["starlette"])
    result = constraints(root)
    assert result.returncode != 0
    assert "'starlette' declares no minimum version (>=)" in result.stderr
