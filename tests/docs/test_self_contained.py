"""The repository stands alone: no tracked file cites a design file or directory outside it.

The design lives in docs/design.md; a pointer to a file a clone does not have is a dead end for
every reader of the code, the ``--help`` texts and the OpenAPI document.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Built so that this file does not match itself.
OUTSIDE = re.compile(r"\b" + "DES" + "IGN" + r"\b|\.\./" + r"shared\b")


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def outside_citations(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{shown(path)}:{number}: {line.strip()}")
    return found


def test_no_file_cites_a_design_outside_the_repository() -> None:
    paths = tracked_files()
    assert len(paths) > 100  # git answered with the real tree
    assert outside_citations(paths) == []


def test_the_check_finds_a_citation(tmp_path: Path) -> None:
    cited = tmp_path / "cites.py"
    cited.write_text("# see " + "DES" + "IGN" + ".md §5\n# beyond " + "DES" + "IGN" + " and why\n")
    shared = tmp_path / "shared.md"
    shared.write_text("[notes](" + "../" + "shared/notes.md)\n")
    clean = tmp_path / "clean.py"
    clean.write_text("# see docs/design.md §5, the design of the hub, shared/ and ../other\n")
    assert len(outside_citations([cited, shared, clean])) == 3
