"""An editor resolves the three source roots.

The editable install reaches ``sys.path`` through setuptools' import hook, which static analysers
(pyright, which Pylance runs in VS Code) do not execute; ``[tool.pyright]`` in pyproject.toml
names the roots instead. mypy has its own ``mypy_path`` and runs in the test command.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.packaging.conftest import ROOT, run

PYRIGHT = "pyright@1.1.414"
pytestmark = pytest.mark.timeout(300)

CONSUMER = """\
from progress_core.models import Job
from progress_gateway.app import create_app
from progress_workers import ProgressClient

print(Job, create_app, ProgressClient)
"""


@pytest.fixture(scope="module")
def pyright(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pyright")
    run(["npm", "install", "--no-audit", "--no-fund", "--silent", PYRIGHT], directory)
    return directory / "node_modules" / ".bin" / "pyright"


def test_pyright_resolves_every_layer_with_the_projects_config(
    pyright: Path, tmp_path: Path
) -> None:
    consumer = tmp_path / "consumer.py"
    consumer.write_text(CONSUMER)
    completed = subprocess.run(
        [str(pyright), "--outputjson", "-p", str(ROOT / "pyproject.toml"), str(consumer)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    report = json.loads(completed.stdout)
    unresolved = [
        diagnostic["message"]
        for diagnostic in report["generalDiagnostics"]
        if diagnostic.get("rule") == "reportMissingImports"
    ]
    assert unresolved == []
    assert report["summary"]["filesAnalyzed"] == 1
