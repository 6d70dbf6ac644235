"""The layers import one way: core ← SDK, core ← server, server → SDK; no import cycles.

The core (job model, transitions, errors, store) is what both sides must agree on; the worker SDK
must install and import without the server's dependencies, so a worker image that only reports
progress carries none of them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = {
    "progress_core": ROOT / "core",
    "progress_gateway": ROOT / "gateway",
    "progress_workers": ROOT / "workers",
}
# Which of our top-level packages each one may import.
ALLOWED = {
    "progress_core": {"progress_core"},
    "progress_workers": {"progress_core", "progress_workers"},
    "progress_gateway": {"progress_core", "progress_workers", "progress_gateway"},
}
# Import names of the base install's dependencies (pyproject [project].dependencies), the
# standard library aside; `modal` is imported only by the module deployed to Modal.
BASE_IMPORTS = {"redis", "hiredis", "pydantic", "pydantic_core"}
OPTIONAL_IMPORTS = {"progress_workers.modal_app": {"modal"}}
SERVER_ONLY = [
    "starlette",
    "uvicorn",
    "jwt",
    "pydantic_settings",
    "prometheus_client",
    "websockets",
]


def modules() -> Iterator[tuple[str, Path]]:
    for package, root in SOURCE_ROOTS.items():
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(module: str, path: Path) -> set[str]:
    """Every module this one imports when it runs (at import time or later, in a function);
    imports under ``if TYPE_CHECKING:`` are for the type checker only and do not count."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from package import module` imports the submodule.
            found.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


GRAPH = {module: runtime_imports(module, path) for module, path in modules()}
OURS = set(GRAPH)


def test_every_layer_imports_only_the_layers_below_it() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if target.split(".")[0] in ALLOWED
        and target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    ]
    assert wrong == []


def test_there_is_no_import_cycle() -> None:
    edges = {
        module: {target for target in targets if target in OURS and target != module}
        for module, targets in GRAPH.items()
    }
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    for module in edges:
        edges[module] = {t for t in edges[module] if not module.startswith(f"{t}.")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_core_and_sdk_use_only_the_base_installs_dependencies() -> None:
    stdlib = sys.stdlib_module_names
    extra = {
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if not module.startswith("progress_gateway")
        for target in targets
        if (top := target.split(".")[0]) not in stdlib
        and top not in ALLOWED
        and top not in BASE_IMPORTS
        and top not in OPTIONAL_IMPORTS.get(module, set())
        and top != "__future__"
    }
    assert extra == set()


def test_the_base_dependencies_are_what_the_sdk_imports() -> None:
    # The declared base install and the check above must describe the same thing.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {
        requirement.split(">")[0].split("=")[0].split("<")[0].split(";")[0].strip().lower()
        for requirement in project["dependencies"]
    }
    assert names == {"redis", "hiredis", "pydantic"}
    server = " ".join(project["optional-dependencies"]["server"]).lower()
    for distribution in ["starlette", "uvicorn", "pyjwt", "pydantic-settings", "prometheus-client"]:
        assert distribution in server


@pytest.mark.parametrize(
    "statement",
    [
        "import progress_workers",
        "from progress_workers import ProgressClient, tracked",
        "import progress_workers.runner, progress_workers.local_runner, progress_workers.kinds",
        "import progress_core.store.redis, progress_core.store.sqlite, progress_core.config",
    ],
)
def test_the_sdk_loads_nothing_of_the_server(statement: str) -> None:
    forbidden = [*SERVER_ONLY, "progress_gateway"]
    script = (
        f"import sys; {statement}; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert completed.stdout.strip() == "[]"


def test_the_server_without_its_extra_says_how_to_install_it() -> None:
    # Block a server dependency as if the base install were all there is.
    script = (
        "import sys\n"
        "sys.modules['uvicorn'] = None  # what the import system does for an absent module\n"
        "import progress_workers\n"
        "from progress_gateway.cli import main\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode != 0
    assert "pip install 'progress-gateway[server]'" in completed.stderr
    assert "missing: uvicorn" in completed.stderr
