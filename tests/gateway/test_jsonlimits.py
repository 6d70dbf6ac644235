"""``progress_gateway.jsonlimits.loads``: the bounds themselves, without a server."""

from __future__ import annotations

import pytest

from progress_core.errors import BadRequest
from progress_gateway.jsonlimits import MAX_DEPTH, MAX_NUMBER_CHARS, loads


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, "nested deeper"),
        (nested(10_000), "nested deeper"),
        (nested(MAX_DEPTH + 1), "nested deeper"),
        ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "nested deeper"),
        ("9" * (MAX_NUMBER_CHARS + 1), "longer than"),
        ("-0." + "1" * MAX_NUMBER_CHARS, "longer than"),
        ("1e999", "out of range"),
        ("[NaN]", "NaN is not JSON"),
        ("-Infinity", "-Infinity is not JSON"),
        ('"\\ud800"', "lone surrogate"),
        ('{"\\udfff":1}', "lone surrogate"),
        ("{not json", "not JSON"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_refused(text: str | bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        loads(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("9" * MAX_NUMBER_CHARS, int("9" * MAX_NUMBER_CHARS)),
        ("-1.7976931348623157e+308", -1.7976931348623157e308),
        ('"\\ud83d\\ude00"', "\U0001f600"),  # a surrogate pair is one character
        ('"[[[[' + "[" * 100 + '"', "[" * 104),  # brackets inside a string are text
        (b'{"a":[1,2]}', {"a": [1, 2]}),
    ],
)
def test_accepted(text: str | bytes, value: object) -> None:
    assert loads(text) == value


def test_nesting_up_to_the_limit_is_accepted() -> None:
    value = loads(nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH - 1):
        assert isinstance(value, list)
        (value,) = value
    assert value == []


def test_depth_is_counted_not_brackets() -> None:
    wide = "[" + ",".join(["[]"] * 10_000) + "]"
    assert len(loads(wide)) == 10_000  # type: ignore[arg-type]
