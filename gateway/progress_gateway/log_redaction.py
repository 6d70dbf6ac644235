"""Keep credentials and forged lines out of logs.

Browsers authenticate WebSockets and ``EventSource`` with ``?token=`` (they cannot set headers),
and uvicorn logs every WebSocket handshake with its query string: a log reader could replay the
token until it expires. The value of every query parameter whose name is ``token`` once
percent-decoded and case-folded (``?token=``, ``?%74oken=``, ``?Token=``) becomes ``[redacted]``.

A request's path is percent-decoded before our lines quote it, so ``/exports/%0d%0a…`` would
write a CR/LF of the client's choosing and start a line that looks like the gateway's own. Every
control character (C0, DEL, C1, and Unicode's line and paragraph separators) is written as an
escape (``\\x0a``, ``\\u2028``) instead.

One filter does both on every handler, so it covers uvicorn's lines and ours alike, before any
handler formats the record. It works on the record's arguments when they are plain values (a
formatter such as uvicorn's access log reads them), else on the formatted message.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

__all__ = ["SafeRecords", "escape_controls", "install", "redact_tokens"]

REDACTED = "[redacted]"
# A query parameter: after ?, & or ;, a name, =, a value up to the next separator or quote.
_PARAMETER = re.compile(r"(?<=[?&;])([^=&;?\s\"']+)=([^&;\s\"']*)")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PLAIN = (str, int, float, type(None))


def _is_token_name(name: str) -> bool:
    # Decoded until stable: a proxy or client may have encoded the name more than once.
    for _ in range(3):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().casefold() == "token"


def _redact_parameter(match: re.Match[str]) -> str:
    name = match.group(1)
    return f"{name}={REDACTED}" if _is_token_name(name) else match.group(0)


def redact_tokens(text: str) -> str:
    """``text`` with the value of every ``token`` query parameter replaced."""
    return _PARAMETER.sub(_redact_parameter, text) if "=" in text else text


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape: one line, as the caller
    meant it."""
    # isprintable() (C speed) is False for every character escaped here: most lines skip the sub.
    return text if text.isprintable() else _CONTROLS.sub(_escape, text)


def _clean(value: object) -> object:
    if isinstance(value, str):
        if "=" in value:
            value = redact_tokens(value)
        if not value.isprintable():
            value = _CONTROLS.sub(_escape, value)
    return value


class SafeRecords(logging.Filter):
    """Redacts tokens and escapes control characters in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(record.msg, str) and (
            not args or (type(args) is tuple and all([isinstance(a, _PLAIN) for a in args]))
        ):
            # A format string ends with a newline when a traceback follows: that one is ours.
            msg = record.msg.rstrip("\n")
            if args:
                # Request data is in the arguments; the format string is the code's own (and
                # redacting a "token=%s" in it would leave an argument without its "%s").
                record.msg = escape_controls(msg)
                record.args = tuple([_clean(arg) for arg in args])
            else:
                record.msg = escape_controls(redact_tokens(msg))
        else:
            # Objects (exceptions, mappings) format as they like: clean the formatted message.
            record.msg = escape_controls(redact_tokens(record.getMessage().rstrip("\n")))
            record.args = None
        return True


def install() -> None:
    """Attach the filter to every handler configured so far (the root logger's and uvicorn's):
    call it after logging and uvicorn are configured."""
    safe = SafeRecords()
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        if not isinstance(logger, logging.Logger):
            continue  # a placeholder for loggers not created yet
        for handler in logger.handlers:
            if not any(isinstance(existing, SafeRecords) for existing in handler.filters):
                handler.addFilter(safe)
