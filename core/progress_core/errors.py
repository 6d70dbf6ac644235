"""The one exception tree of progress-gateway.

Every error a caller can act on is a ``GatewayError``; each class carries the wire ``code``, the
HTTP ``status_code`` it maps to and whether retrying the same call can succeed (``retryable``)::

    GatewayError
    ├── BadRequest            400 bad_request        malformed input; nothing was written
    │   └── InvalidJobId      400 bad_request        not a canonical lowercase UUID
    ├── Unauthorized          401 unauthorized       missing, forged or expired token
    ├── Forbidden             403 forbidden          the job exists but belongs to someone else
    ├── JobNotFound           404 not_found          no such job (never used for a store outage)
    ├── RequestTimeout        408 request_timeout    request body not received in time
    ├── Conflict              409 conflict
    │   ├── JobExists         409 job_exists         create with an id that is taken
    │   └── JobFinished       409 job_finished       change to a job in a terminal status
    ├── PayloadTooLarge       413 payload_too_large  result, params or body over its limit
    ├── Unprocessable         422 unprocessable      well-formed but invalid (unknown kind, params)
    ├── TooManyConnections    429 too_many_connections  the owner holds its limit of streams
    ├── TooManySubscriptions  429 too_many_subscriptions  a connection watches its limit of jobs
    ├── ExecutorError         502 executor_error     the executor failed to start or reach the work
    │   └── ExecutorUnavailable 503 executor_unavailable   unreachable for now; retry later
    └── StoreUnavailable      503 store_unavailable  store unreachable or failing; retry later

Lower layers (redis-py, sqlite3) never leak above the store: backends raise
``StoreUnavailable(...) from exc``.
"""

from __future__ import annotations


class GatewayError(Exception):
    code: str = "internal"
    status_code: int = 500
    retryable: bool = False

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.job_id = job_id

    @property
    def public_message(self) -> str:
        """What a client is told (``message`` goes to the log)."""
        return self.message


class BadRequest(GatewayError):
    code = "bad_request"
    status_code = 400


class InvalidJobId(BadRequest):
    pass


class Unauthorized(GatewayError):
    code = "unauthorized"
    status_code = 401


class Forbidden(GatewayError):
    code = "forbidden"
    status_code = 403


class JobNotFound(GatewayError):
    code = "not_found"
    status_code = 404


class Conflict(GatewayError):
    code = "conflict"
    status_code = 409


class JobExists(Conflict):
    code = "job_exists"


class JobFinished(Conflict):
    """The job is in a terminal status; the change was rejected and nothing was written."""

    code = "job_finished"

    def __init__(self, message: str, *, job_id: str | None = None, status: str = "") -> None:
        super().__init__(message, job_id=job_id)
        self.status = status


class RequestTimeout(GatewayError):
    """The client sent the request body too slowly; the connection is closed after the answer."""

    code = "request_timeout"
    status_code = 408


class PayloadTooLarge(GatewayError):
    code = "payload_too_large"
    status_code = 413


class Unprocessable(GatewayError):
    code = "unprocessable"
    status_code = 422


class TooManyConnections(GatewayError):
    """The owner already holds ``GATEWAY_MAX_CONNECTIONS_PER_OWNER`` connections here."""

    code = "too_many_connections"
    status_code = 429
    retryable = True


class TooManySubscriptions(GatewayError):
    """The connection already watches ``GATEWAY_MAX_SUBSCRIPTIONS`` jobs."""

    code = "too_many_subscriptions"
    status_code = 429


class ExecutorError(GatewayError):
    code = "executor_error"
    status_code = 502


class ExecutorUnavailable(ExecutorError):
    code = "executor_unavailable"
    status_code = 503
    retryable = True


class StoreUnavailable(GatewayError):
    code = "store_unavailable"
    status_code = 503
    retryable = True

    @property
    def public_message(self) -> str:
        # The driver's message names hosts and ports: it goes to the log, not to the client.
        return "the job store is unavailable; retry later"
