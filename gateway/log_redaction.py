"""Keep credentials out of logs.

Browsers authenticate WebSockets and ``EventSource`` with ``?token=`` (they cannot set headers),
and uvicorn logs every WebSocket handshake with its query string: a log reader could replay the
token until it expires. The filter rewrites the value before any handler formats the record.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactTokens", "install"]

REDACTED = "[redacted]"
_TOKEN_VALUE = re.compile(r"(?<=[?&]token=)[^&\s\"']+")
# uvicorn's loggers that write request lines (access: HTTP, error: WebSocket handshakes).
LOGGERS = ("uvicorn.error", "uvicorn.access")


def _redact(value: object) -> object:
    if isinstance(value, str) and "token=" in value:
        return _TOKEN_VALUE.sub(REDACTED, value)
    return value


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) for arg in record.args)
        return True


def install() -> None:
    """Attach the filter to uvicorn's loggers (after uvicorn configured them)."""
    redact = RedactTokens()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactTokens) for existing in logger.filters):
            logger.addFilter(redact)
