"""WebSocket close codes and error codes, with the client's reaction beside each.

``client-js/src/codes.ts`` mirrors this table; a test compares the two.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000  # client asked to close: do not reconnect
    GOING_AWAY = 1001  # server shutting down: reconnect at once, with jitter
    POLICY = 1008  # too many bad frames or a client that does not read: reconnect with backoff
    TOO_LARGE = 1009  # a frame over the size limit: fix the client, reconnect with backoff
    INTERNAL_ERROR = 1011  # the server failed this connection (logged): reconnect with backoff
    UNAUTHORIZED = 4401  # missing, invalid or expired token: get a fresh token, then reconnect
    AUTH_TIMEOUT = 4408  # no auth frame in time: reconnect with backoff
    TOO_MANY_CONNECTIONS = 4429  # per-owner connection limit: back off longer


class ErrorCode:
    """``code`` of an ``{"op": "error"}`` frame and of problem+json bodies."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    JOB_FINISHED = "job_finished"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    STORE_UNAVAILABLE = "store_unavailable"
