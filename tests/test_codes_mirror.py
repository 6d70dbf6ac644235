"""One table of codes (``core/progress_core/codes.py``): the exception tree and the problem
answers follow it, and its copies in ``client-js/src/codes.ts`` and ``docs/protocol.md`` are
exactly what ``scripts/gen_codes.py`` generates from it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from progress_core.codes import CLOSE_RULES, ERROR_RULES, CloseCode, ErrorCode
from progress_core.errors import GatewayError
from progress_gateway.http.problems import HTTP_CODES, problem_codes

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "scripts" / "gen_codes.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_codes", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_copies_are_the_generated_ones() -> None:
    check = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_check_fails_when_a_copy_drifts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = generator()
    drifted = tmp_path / "codes.ts"
    text = gen.CODES_TS.read_text("utf-8")
    drifted.write_text(text.replace('  CONFLICT: "conflict", ', '  CONFLICT: "conflicts", '))
    assert drifted.read_text("utf-8") != text
    monkeypatch.setattr(gen, "CODES_TS", drifted)
    monkeypatch.setattr(gen, "ROOT", tmp_path.parent)
    monkeypatch.setattr(sys, "argv", ["gen_codes.py", "--check"])
    assert gen.main() == 1
    assert "codes.ts differs" in capsys.readouterr().out
    assert drifted.read_text("utf-8") != text, "--check must not write"


def test_typescript_names_every_code_with_its_value() -> None:
    whole = (ROOT / "client-js" / "src" / "codes.ts").read_text("utf-8")
    source = whole.split("// generated:codes ")[1].split("// end generated:codes")[0]
    close = dict(re.findall(r"^  ([A-Z_]+): (\d+), //", source, re.MULTILINE))
    errors = dict(re.findall(r'^  ([A-Z_]+): "(\w+)", //', source, re.MULTILINE))
    assert close == {code.name: str(code.value) for code in CloseCode}
    assert errors == {code.name: code.value for code in ErrorCode}
    for code, rule in CLOSE_RULES.items():
        assert f'[CloseCode.{code.name}]: "{rule.reaction}",' in source


def test_the_protocol_reference_lists_every_code() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text("utf-8")
    close = {int(code) for code in re.findall(r"^\| (\d{4}) \|", doc, re.MULTILINE)}
    errors = dict(re.findall(r"^\| `(\w+)` \| (\d{3}|—) \|", doc, re.MULTILINE))
    assert close == {code.value for code in CloseCode}
    assert errors == {
        code.value: "—" if rule.status is None else str(rule.status)
        for code, rule in ERROR_RULES.items()
    }


def _error_classes() -> list[type[GatewayError]]:
    found: list[type[GatewayError]] = []
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        error = pending.pop()
        found.append(error)
        pending.extend(error.__subclasses__())
    return found


def test_each_exception_takes_its_status_and_retry_from_its_code() -> None:
    for error in _error_classes():
        rule = ERROR_RULES[error.code]
        assert (error.status_code, error.retryable) == (rule.status, rule.retryable), error


def test_an_exception_with_a_code_without_status_is_refused() -> None:
    with pytest.raises(TypeError, match="http_error"):

        class Vague(GatewayError):  # pragma: no cover - refused at definition
            code = ErrorCode.HTTP_ERROR


def test_every_code_of_the_table_is_answered_and_every_answer_is_in_the_table() -> None:
    assert set(problem_codes()) == set(ErrorCode)
    for status, code in HTTP_CODES.items():
        assert ERROR_RULES[code].status == status, code
