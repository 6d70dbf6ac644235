"""Credentials in query strings are rewritten before a log record is formatted."""

from __future__ import annotations

import logging

import pytest

from gateway.log_redaction import RedactTokens


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/ws?token=eyJ.a.b", "/ws?token=[redacted]"),
        ("/exports/j1/events?last_event_id=3&token=eyJ.a.b&x=1",
         "/exports/j1/events?last_event_id=3&token=[redacted]&x=1"),
        ("/ws?mytoken=keep&token=eyJ.a.b", "/ws?mytoken=keep&token=[redacted]"),
        ("/ws?sub=alice", "/ws?sub=alice"),
    ],
)  # fmt: skip
def test_token_values_are_redacted_in_arguments_and_messages(path: str, logged: str) -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", path), None,
    )  # fmt: skip
    assert RedactTokens().filter(record)
    assert record.getMessage() == f'127.0.0.1:5000 - "WebSocket {logged}" [accepted]'
    plain = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, path, None, None)
    RedactTokens().filter(plain)
    assert plain.getMessage() == logged
