"""``npm pack`` ships a built client: packed from a copy with no dist/, installed into a temporary
project, imported from ESM by node and type-checked by ``tsc --noEmit`` in a consumer's file.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.packaging.conftest import ensure_node_modules, run

# npm ci and the build take a while on a loaded machine; each step still has its own timeout.
pytestmark = pytest.mark.timeout(300)

PACKAGE = "@progress-gateway/client"
CONSUMER_MJS = f"""\
import {{ ProgressClient, CloseCode, isTerminal }} from "{PACKAGE}";
import * as bundle from "{PACKAGE}/bundle";

const client = new ProgressClient({{ url: "http://127.0.0.1:9", token: "t", autoConnect: false }});
client.close();
console.log(JSON.stringify({{
  client: client instanceof ProgressClient,
  goingAway: CloseCode.GOING_AWAY,
  terminal: isTerminal({{ status: "succeeded" }}),
  bundle: typeof bundle.ProgressClient,
}}));
"""
CONSUMER_TS = f"""\
import {{ ProgressClient, isTerminal }} from "{PACKAGE}";
import type {{ JobSnapshot, ProgressClientOptions }} from "{PACKAGE}";

const options: ProgressClientOptions = {{
  url: "https://example.test/progress",
  token: async () => "a token",
  autoConnect: false,
}};
const client = new ProgressClient(options);
const stop: () => void = client.watch("job-1", (job: JobSnapshot) => {{
  const done: boolean = isTerminal(job);
  const progress: number = job.progress;
  console.log(done, progress);
}});
stop();
client.close();

// The declarations are real, not `any`: a wrong option type must be an error.
// @ts-expect-error url is a string
new ProgressClient({{ url: 42, token: "a token" }});
"""
TSCONFIG = {
    "compilerOptions": {
        "target": "ES2022",
        "module": "NodeNext",
        "moduleResolution": "NodeNext",
        "lib": ["ES2022", "DOM"],
        "types": [],
        "strict": True,
        "noEmit": True,
        # The package's declarations are checked; TypeScript's own lib files need not be.
        "skipLibCheck": False,
        "skipDefaultLibCheck": True,
    },
    "files": ["consumer.ts"],
}


@pytest.fixture(scope="module")
def client_dir(source_tree: Path) -> Path:
    directory = source_tree / "client-js"
    ensure_node_modules(directory)
    return directory


@pytest.fixture(scope="module")
def tarball(client_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``npm pack`` of a client-js with no dist/, as in a fresh clone: prepack must build it."""
    if (client_dir / "dist").exists():
        shutil.rmtree(client_dir / "dist")
    out = tmp_path_factory.mktemp("pack")
    run(["npm", "pack", "--silent", "--pack-destination", str(out)], client_dir)
    (packed,) = out.glob("*.tgz")
    return packed


@pytest.fixture(scope="module")
def consumer(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project that depends on nothing but the tarball (no runtime dependencies: offline)."""
    project = tmp_path_factory.mktemp("consumer")
    (project / "package.json").write_text(
        json.dumps({"name": "consumer", "private": True, "type": "module"})
    )
    run(
        [
            "npm",
            "install",
            "--offline",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            str(tarball),
        ],
        project,
    )
    return project


def test_the_tarball_holds_the_built_client(tarball: Path) -> None:
    with tarfile.open(tarball) as packed:
        names = set(packed.getnames())
    expected = {"index.js", "index.d.ts", "progress-gateway.js", "client.js", "client.d.ts"}
    assert {f"package/dist/{name}" for name in expected} <= names
    assert "package/package.json" in names


def test_node_imports_the_installed_package_from_esm(consumer: Path) -> None:
    (consumer / "consumer.mjs").write_text(CONSUMER_MJS)
    output = run(["node", "consumer.mjs"], consumer)
    assert json.loads(output) == {
        "client": True,
        "goingAway": 1001,
        "terminal": True,
        "bundle": "function",
    }


def test_a_consumer_type_checks_against_the_installed_declarations(
    consumer: Path, client_dir: Path
) -> None:
    (consumer / "consumer.ts").write_text(CONSUMER_TS)
    (consumer / "tsconfig.json").write_text(json.dumps(TSCONFIG))
    # typescript comes from client-js's dev dependencies; the consumer installs nothing else.
    tsc = client_dir / "node_modules" / "typescript" / "bin" / "tsc"
    run(["node", str(tsc), "--noEmit", "-p", "tsconfig.json"], consumer)
