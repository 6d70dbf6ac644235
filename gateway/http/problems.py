"""Errors as ``application/problem+json``: the exception tree maps to statuses in one place."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError, StoreUnavailable

logger = logging.getLogger("gateway.http")

RETRY_AFTER_S = 2


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem(status: int, detail: str, code: str, headers: dict[str, str] | None = None) -> Response:
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
    context = (request.method, request.url.path, _owner(request), exc.job_id, exc.code)
    headers: dict[str, str] = {}
    if isinstance(exc, StoreUnavailable):
        logger.error("%s %s owner=%s job=%s: %s: %s", *context, exc.message)
        headers["Retry-After"] = str(RETRY_AFTER_S)
    elif exc.status_code >= 500:
        logger.error("%s %s owner=%s job=%s: %s: %s", *context, exc.message)
    else:
        logger.info("%s %s owner=%s job=%s: %s: %s", *context, exc.message)
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="progress-gateway"'
    return problem(exc.status_code, exc.message, exc.code, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        exc.status_code, "http_error"
    )
    return problem(exc.status_code, str(exc.detail), code, dict(exc.headers or {}))


def exception_handlers() -> dict[Any, Any]:
    return {GatewayError: gateway_error, HTTPException: http_error}
