"""``loads()``: the one JSON decoder for everything a client sends (HTTP bodies, WebSocket frames).

``json.loads`` alone trusts its input too much: 10,000 nested brackets raise ``RecursionError``
and an integer over 4,300 digits ``ValueError`` from deep inside the scanner, which surfaced as
500s and as WebSocket connections dropped without a close frame. It also accepts ``NaN`` and
``Infinity`` (not JSON) and lone surrogate escapes (not Unicode), which later fail to encode.
Here each of those is ``BadRequest`` with a message a client can act on, so every caller maps
it the same way: 400 over HTTP, an ``error`` frame over WebSocket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import cast

from progress_core.errors import BadRequest

__all__ = ["MAX_DEPTH", "MAX_NUMBER_CHARS", "loads"]

# Deeper than any message of the protocol or any sane job params; far below the interpreter's
# recursion limit, so nothing downstream (pydantic, the encoder, Lua cjson) recurses deeply.
MAX_DEPTH = 32
# Enough for any int64 or float64 literal (e.g. "-1.7976931348623157e+308" is 24 characters).
MAX_NUMBER_CHARS = 40

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _number(text: str) -> None:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadRequest(f"a number is longer than {MAX_NUMBER_CHARS} characters")


def _integer(text: str) -> int:
    _number(text)
    return int(text)


def _float(text: str) -> float:
    _number(text)
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadRequest(f"number {text!r} is out of range")
    return value


def _constant(name: str) -> None:
    raise BadRequest(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_int=_integer, parse_float=_float, parse_constant=_constant)


def loads(data: str | bytes) -> object:
    """Decode one JSON document from a client; ``BadRequest`` if it is not one we accept.

    Bytes must be UTF-8. Nesting is limited to ``MAX_DEPTH`` and number literals to
    ``MAX_NUMBER_CHARS`` characters; ``NaN``, ``Infinity``, out-of-range floats and lone
    surrogates are refused.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"not JSON: {exc.msg} at position {exc.pos}") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    # A document with fewer brackets than the limit cannot be nested deeper than it.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(text) is not None:
        _check_encodable(value)
    return value


def _depth(value: object) -> int:
    """Nesting depth of a decoded document, level by level (no recursion)."""
    depth = 0
    level: list[object] = [value] if isinstance(value, dict | list) else []
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return depth
        children: list[object] = []
        for container in level:
            items: Iterable[object] = (
                container.values() if isinstance(container, dict) else cast(list[object], container)
            )
            children.extend(item for item in items if isinstance(item, dict | list))
        level = children
    return depth


def _check_encodable(value: object) -> None:
    """A surrogate escape decodes to a valid character only as part of a pair."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("JSON has a lone surrogate escape (not a Unicode character)") from None
