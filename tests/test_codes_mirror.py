"""``client-js/src/codes.ts`` mirrors ``core/progress_core/codes.py``: same names, same values."""

from __future__ import annotations

import re
from pathlib import Path

from progress_core.codes import CloseCode, ErrorCode

CODES_TS = Path(__file__).resolve().parents[1] / "client-js" / "src" / "codes.ts"
_ENTRY = re.compile(r'^\s+([A-Z_]+):\s*("?)([\w]+)\2,', re.MULTILINE)


def typescript_table(name: str) -> dict[str, str]:
    source = CODES_TS.read_text(encoding="utf-8")
    match = re.search(rf"export const {name} = \{{(.*?)\}} as const;", source, re.DOTALL)
    assert match is not None, f"no `export const {name} = {{…}} as const;` in {CODES_TS}"
    return {entry[0]: entry[2] for entry in _ENTRY.findall(match.group(1))}


def test_close_codes_match() -> None:
    expected = {code.name: str(code.value) for code in CloseCode}
    assert typescript_table("CloseCode") == expected


def test_error_codes_match() -> None:
    expected = {
        name: value
        for name, value in vars(ErrorCode).items()
        if name.isupper() and isinstance(value, str)
    }
    assert expected, "progress_core.codes.ErrorCode has no codes"
    assert typescript_table("ErrorCode") == expected
