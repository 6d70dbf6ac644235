"""Credentials in query strings are redacted and control characters escaped before a log record
is formatted (issue 11 finding 14: ``?%74oken=`` and CR/LF/NUL in a path got through)."""

from __future__ import annotations

import logging

import pytest

from progress_gateway.log_redaction import SafeRecords

HANDSHAKE = '%s - "WebSocket %s" [accepted]'


def cleaned(msg: str, *args: object, name: str = "progress_gateway.http") -> str:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args or None, None)
    assert SafeRecords().filter(record)
    return record.getMessage()


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/ws?token=eyJ.a.b", "/ws?token=[redacted]"),
        ("/exports/j1/events?last_event_id=3&token=eyJ.a.b&x=1",
         "/exports/j1/events?last_event_id=3&token=[redacted]&x=1"),
        ("/ws?mytoken=keep&token=eyJ.a.b", "/ws?mytoken=keep&token=[redacted]"),
        ("/ws?sub=alice", "/ws?sub=alice"),
        # Names the server decodes to "token", and spellings a client may use by mistake.
        ("/ws?%74oken=eyJ.a.b", "/ws?%74oken=[redacted]"),
        ("/ws?%54%4F%4B%45%4E=eyJ.a.b", "/ws?%54%4F%4B%45%4E=[redacted]"),
        ("/ws?Token=eyJ.a.b&x=1", "/ws?Token=[redacted]&x=1"),
        ("/ws?x=1;token=eyJ.a.b", "/ws?x=1;token=[redacted]"),
        ("/ws?%2574oken=eyJ.a.b", "/ws?%2574oken=[redacted]"),
        ("/ws?tok%65n=eyJ.a.b", "/ws?tok%65n=[redacted]"),
    ],
)  # fmt: skip
def test_token_values_are_redacted_in_arguments_and_messages(path: str, logged: str) -> None:
    assert cleaned(HANDSHAKE, "127.0.0.1:5000", path, name="uvicorn.error") == (
        f'127.0.0.1:5000 - "WebSocket {logged}" [accepted]'
    )
    assert cleaned(path, name="uvicorn.access") == logged


def test_control_characters_cannot_start_a_line_of_their_own() -> None:
    path = "/exports/\r\n2026-12-03 ERROR gateway: forged\x00\x1b[2J\u2028\x85"
    line = cleaned("%s %s owner=%s job=%s: %d", "GET", path, None, path, 400)
    assert line == (
        "GET /exports/\\x0d\\x0a2026-12-03 ERROR gateway: forged\\x00\\x1b[2J\\u2028\\x85 "
        "owner=None job=/exports/\\x0d\\x0a2026-12-03 ERROR gateway: forged\\x00\\x1b[2J"
        "\\u2028\\x85: 400"
    )
    # A message built before logging (no arguments), and one with an exception argument.
    assert cleaned("job\r\nforged") == "job\\x0d\\x0aforged"
    assert cleaned("failed: %s", ValueError("bad\nline")) == "failed: bad\\x0aline"


def test_values_keep_their_types_for_formatters_that_read_them() -> None:
    """uvicorn's access formatter unpacks the arguments: they stay a tuple of the same shape."""
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/x?token=abc&y=\n", "1.1", 200), None,
    )  # fmt: skip
    SafeRecords().filter(record)
    assert record.args == ("127.0.0.1:5000", "GET", "/x?token=[redacted]&y=\\x0a", "1.1", 200)


def test_a_traceback_still_follows_its_message_on_the_next_line() -> None:
    """uvicorn ends "Exception in ASGI application\\n" with a newline of its own."""
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        record = logging.LogRecord(
            "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application\n",
            None, (type(exc), exc, exc.__traceback__),
        )  # fmt: skip
    SafeRecords().filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert text.startswith("Exception in ASGI application\nTraceback (most recent call last):")
