"""The one exception tree of progress-gateway.

Every error a caller can act on is a ``GatewayError``; each class carries the wire ``code``, the
HTTP ``status_code`` it maps to and whether retrying the same call can succeed (``retryable``),
the last two read from the code's row in ``progress_core.codes.ERROR_RULES``::

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

from progress_core.codes import ERROR_RULES, ErrorCode


class GatewayError(Exception):
    # ``status_code`` and ``retryable`` come from the code's row in ``ERROR_RULES``.
    code: ErrorCode = ErrorCode.INTERNAL
    status_code: int = 500
    retryable: bool = False

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        rule = ERROR_RULES[cls.code]
        if rule.status is None:
            raise TypeError(f"{cls.__name__}: error code {cls.code!r} has no HTTP status")
        cls.status_code = rule.status
        cls.retryable = rule.retryable

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.job_id = job_id

    @property
    def public_message(self) -> str:
        """What a client is told (``message`` goes to the log)."""
        return self.message


class BadRequest(GatewayError):
    code = ErrorCode.BAD_REQUEST


class InvalidJobId(BadRequest):
    pass


class Unauthorized(GatewayError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(GatewayError):
    code = ErrorCode.FORBIDDEN


class JobNotFound(GatewayError):
    code = ErrorCode.NOT_FOUND


class Conflict(GatewayError):
    code = ErrorCode.CONFLICT


class JobExists(Conflict):
    code = ErrorCode.JOB_EXISTS


class JobFinished(Conflict):
    """The job is in a terminal status; the change was rejected and nothing was written."""

    code = ErrorCode.JOB_FINISHED

    def __init__(self, message: str, *, job_id: str | None = None, status: str = "") -> None:
        super().__init__(message, job_id=job_id)
        self.status = status


class RequestTimeout(GatewayError):
    """The client sent the request body too slowly; the connection is closed after the answer."""

    code = ErrorCode.REQUEST_TIMEOUT


class PayloadTooLarge(GatewayError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class Unprocessable(GatewayError):
    code = ErrorCode.UNPROCESSABLE


class TooManyConnections(GatewayError):
    """The owner already holds ``GATEWAY_MAX_CONNECTIONS_PER_OWNER`` connections here."""

    code = ErrorCode.TOO_MANY_CONNECTIONS


class TooManySubscriptions(GatewayError):
    """The connection already watches ``GATEWAY_MAX_SUBSCRIPTIONS`` jobs."""

    code = ErrorCode.TOO_MANY_SUBSCRIPTIONS


class ExecutorError(GatewayError):
    code = ErrorCode.EXECUTOR_ERROR


class ExecutorUnavailable(ExecutorError):
    code = ErrorCode.EXECUTOR_UNAVAILABLE


class StoreUnavailable(GatewayError):
    code = ErrorCode.STORE_UNAVAILABLE

    @property
    def public_message(self) -> str:
        # The driver's message names hosts and ports: it goes to the log, not to the client.
        return "the job store is unavailable; retry later"
