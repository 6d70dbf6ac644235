"""Build hook: the wheel carries the browser client, so a wheel install serves it on its own.

Everything else about the package is declared in pyproject.toml. Building a (non-editable) wheel
runs ``npm ci`` (when client-js/node_modules is missing) and ``npm run build`` in client-js/, then
copies the bundle and the demo page into ``progress_gateway/static/`` inside the build directory,
never into the source tree. An editable install skips this: it serves the checkout's client-js/.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.errors import ExecError, SetupError

ROOT = Path(__file__).resolve().parent
CLIENT_DIR = ROOT / "client-js"
# Where the files land inside the wheel; progress_gateway/http/static.py looks there first.
STATIC_PARTS = ("progress_gateway", "static")
# client-js/<source> -> progress_gateway/static/<name>
CLIENT_FILES = {
    "dist/progress-gateway.js": "progress-gateway.js",
    "demo/index.html": "index.html",
}
NODE_HINT = (
    "Install Node.js 20 or newer with npm (https://nodejs.org/, or e.g. `apt-get install nodejs "
    "npm`) and build again; or install a published progress-gateway wheel, which already "
    "contains the client."
)


def build_client(client_dir: Path, target: Path) -> list[Path]:
    """Build client-js/ with npm and copy the served files into ``target``; return them.

    Raises ``SetupError`` when Node.js or npm is missing, ``ExecError`` when an npm step fails.
    """
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise SetupError(
            "building the progress-gateway wheel needs Node.js to build the browser client "
            f"(client-js/): {' and '.join(missing)} not found on PATH. {NODE_HINT}"
        )
    if not (client_dir / "package.json").is_file():
        raise SetupError(f"the browser client's sources are missing: no {client_dir}/package.json")
    npm = shutil.which("npm")
    assert npm is not None
    steps = [[npm, "run", "--silent", "build"]]
    if not (client_dir / "node_modules").is_dir():
        steps.insert(0, [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"])
    for command in steps:
        result = subprocess.run(command, cwd=client_dir, check=False)
        if result.returncode != 0:
            raise ExecError(
                f"`{' '.join(command[1:])}` in {client_dir} failed with exit code "
                f"{result.returncode} (its output is above)"
            )
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for source, name in CLIENT_FILES.items():
        built = client_dir / source
        if not built.is_file():
            raise ExecError(f"`npm run build` in {client_dir} did not produce {source}")
        copied.append(Path(shutil.copyfile(built, target / name)))
    return copied


class BuildPyWithClient(build_py):
    """``build_py`` that also builds the browser client into the package (not when editable)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            build_client(CLIENT_DIR, Path(self.build_lib, *STATIC_PARTS))


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithClient})
