"""Errors as ``application/problem+json``: the exception tree maps to statuses in one place.

Every error response of the HTTP API goes through here, so each has the same body
(``type``, ``title``, ``status``, ``detail``, ``code``), a log line with the route, owner and job,
``Retry-After`` when retrying can help (store or executor outage) and ``WWW-Authenticate`` on 401.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from progress_core.codes import ERROR_RULES, ErrorCode
from progress_core.errors import GatewayError
from progress_gateway.http.authn import challenge

logger = logging.getLogger("progress_gateway.http")

RETRY_AFTER_S = 2


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem(status: int, detail: str, code: str, headers: dict[str, str] | None = None) -> Response:
    """A problem+json answer; ``code`` is an ``ErrorCode`` whose status is ``status``."""
    rule = ERROR_RULES[ErrorCode(code)]
    if rule.status not in (None, status):
        raise ValueError(f"error code {code} is status {rule.status}, not {status}")
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


def _owner(request: Request) -> str | None:
    owner = getattr(request.state, "owner", None)
    return owner if isinstance(owner, str) else None


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    job_id = exc.job_id or request.path_params.get("id")
    context = (request.method, request.url.path, _owner(request), job_id, exc.code)
    headers: dict[str, str] = {}
    if exc.status_code >= 500:
        logger.error("%s %s owner=%s job=%s: %s: %s", *context, exc.message)
    else:
        logger.info("%s %s owner=%s job=%s: %s: %s", *context, exc.message)
    if exc.retryable:  # an outage (503) or the owner's connection budget (429)
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if exc.status_code == 401:
        given = getattr(request.state, "auth_challenge", None)
        headers["WWW-Authenticate"] = given if isinstance(given, str) else challenge()
    return problem(exc.status_code, exc.public_message, exc.code, headers)


# Codes of answers that no GatewayError raises: routing (404, 405), the body limit before the
# app (413), ``/ws`` without an upgrade (426), anything else Starlette raises, and last resort.
HTTP_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    426: ErrorCode.UPGRADE_REQUIRED,
}
OTHER_HTTP_CODE = ErrorCode.HTTP_ERROR
INTERNAL_CODE = ErrorCode.INTERNAL


def problem_codes() -> list[str]:
    """Every ``code`` a problem body can carry: the exception tree's and the table above."""
    codes = {OTHER_HTTP_CODE, INTERNAL_CODE, *HTTP_CODES.values()}
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        error = pending.pop()
        codes.add(error.code)
        pending.extend(error.__subclasses__())
    return sorted(codes)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, OTHER_HTTP_CODE)
    return problem(exc.status_code, str(exc.detail), code, dict(exc.headers or {}))


async def upgrade_required(request: Request) -> Response:
    """``/ws`` over plain HTTP: say how to reach it (RFC 9110 §15.5.22) rather than 404."""
    detail = "/ws is a WebSocket endpoint: open it with an 'Upgrade: websocket' request"
    headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
    return problem(426, detail, HTTP_CODES[426], headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    """Last resort: still problem+json. Starlette re-raises ``exc`` afterwards, so the server
    logs the traceback; this line only adds the request's context."""
    logger.error(
        "%s %s owner=%s: unhandled %s: %s",
        request.method,
        request.url.path,
        _owner(request),
        type(exc).__name__,
        exc,
    )
    return problem(500, "internal error; the gateway logged the details", INTERNAL_CODE)


def exception_handlers() -> dict[Any, Any]:
    return {GatewayError: gateway_error, HTTPException: http_error, Exception: internal_error}
