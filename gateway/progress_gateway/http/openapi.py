"""``GET /openapi.json``: the HTTP API as an OpenAPI 3.1 document, generated from the code.

Paths come from the app's route table: each route's endpoint has an ``Operation`` in
``OPERATIONS`` (summary, parameters, body, answers and the error codes it can answer with), and a
route without one stops the generation. Schemas are generated from the pydantic models
(``schemas.py``, the core's ``Job``); each error answer's status, ``Retry-After`` and ``code``
enum come from ``progress_core.codes``. Like ``/healthz`` it needs no token: it describes the
API, not anyone's jobs.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from progress_core.codes import ERROR_RULES, ErrorCode
from progress_gateway.gateway import Gateway
from progress_gateway.http import exports, health, static
from progress_gateway.http.problems import upgrade_required
from progress_gateway.http.schemas import component_schemas, error_status, ref
from progress_gateway.settings import Settings
from progress_workers.kinds import KINDS

__all__ = ["OPERATIONS", "Answer", "Operation", "openapi_document", "routes"]

Doc = dict[str, Any]

JSON = "application/json"
PROBLEM = "application/problem+json"
SECURITY: list[Doc] = [{"bearer": []}, {"queryToken": []}]
JOB_ERRORS = (
    ErrorCode.BAD_REQUEST,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.FORBIDDEN,
    ErrorCode.NOT_FOUND,
    ErrorCode.STORE_UNAVAILABLE,
)
BODY_ERRORS = (ErrorCode.REQUEST_TIMEOUT, ErrorCode.PAYLOAD_TOO_LARGE)


@dataclass(frozen=True, slots=True)
class Answer:
    """A response that is not a problem: ``schema`` names a component (JSON) or is inline."""

    description: str
    schema: str | Doc | None = None
    media_type: str = JSON
    headers: tuple[str, ...] = ()  # names in HEADERS

    def render(self) -> Doc:
        response: Doc = {"description": self.description}
        if self.headers:
            response["headers"] = dict(_header(name) for name in self.headers)
        if self.schema is not None:
            schema = ref(self.schema) if isinstance(self.schema, str) else self.schema
            response["content"] = {self.media_type: {"schema": schema}}
        return response


@dataclass(frozen=True, slots=True)
class Operation:
    """What the document says about one route: the errors it lists are every ``code`` its
    handler (and the middleware in front of it) can answer with."""

    summary: str
    answers: dict[int, Answer]
    description: str = ""
    secured: bool = False
    parameters: tuple[str, ...] = ()  # names in components.parameters
    body: str | None = None  # a component schema, for a JSON request body
    errors: tuple[ErrorCode, ...] = ()

    def render(self, operation_id: str) -> Doc:
        rendered: Doc = {"operationId": operation_id, "summary": self.summary}
        if self.description:
            rendered["description"] = self.description
        if self.secured:
            rendered["security"] = SECURITY
        if self.parameters:
            rendered["parameters"] = [ref_to("parameters", name) for name in self.parameters]
        if self.body is not None:
            content = {JSON: {"schema": ref(self.body)}}
            rendered["requestBody"] = {"required": True, "content": content}
        responses = {str(status): answer.render() for status, answer in self.answers.items()}
        responses.update(problem_answers(self.errors))
        rendered["responses"] = dict(sorted(responses.items()))
        return rendered


def ref_to(kind: str, name: str) -> Doc:
    return {"$ref": f"#/components/{kind}/{name}"}


# Response headers: component name → (header name, its component).
HEADERS: dict[str, tuple[str, Doc]] = {
    "ETag": ("ETag", {"schema": {"type": "string"}, "description": 'The quoted seq: `"17"`.'}),
    "NoStore": ("Cache-Control", {"schema": {"type": "string", "const": "no-store"}}),
    "NoCache": ("Cache-Control", {"schema": {"type": "string", "const": "no-cache"}}),
    "NoBuffering": ("X-Accel-Buffering", {"schema": {"type": "string", "const": "no"}}),
    "RetryAfter": ("Retry-After", {"schema": {"type": "integer"}, "description": "Seconds."}),
    "Location": (
        "Location",
        {
            "schema": {"type": "string"},
            "description": "`/exports/{id}`, under the prefix the gateway is mounted at.",
        },
    ),
    "WWWAuthenticate": (
        "WWW-Authenticate",
        {"schema": {"type": "string"}, "description": "RFC 6750 §3."},
    ),
    "Upgrade": ("Upgrade", {"schema": {"type": "string", "const": "websocket"}}),
}


def _header(name: str) -> tuple[str, Doc]:
    return HEADERS[name][0], ref_to("headers", name)


def problem_answers(codes: Sequence[ErrorCode]) -> Doc:
    """One problem response per status, its ``code`` narrowed to the codes listed for it."""
    by_status: dict[int, list[ErrorCode]] = {}
    for code in codes:
        by_status.setdefault(error_status(code), []).append(code)
    answers: Doc = {}
    for status, group in sorted(by_status.items()):
        names = [*(["WWWAuthenticate"] if status == 401 else [])]
        names += ["Upgrade"] if status == 426 else []
        names += ["RetryAfter"] if any(ERROR_RULES[code].retryable for code in group) else []
        headers = dict(_header(name) for name in names)
        narrowed = {
            "properties": {
                "status": {"const": status},
                "code": {"enum": [code.value for code in group]},
            }
        }
        answers[str(status)] = {
            "description": "; ".join(f"`{code}`: {ERROR_RULES[code].meaning}" for code in group),
            **({"headers": headers} if headers else {}),
            "content": {PROBLEM: {"schema": {"allOf": [ref("Problem"), narrowed]}}},
        }
    return answers


def _job_operation(
    summary: str,
    description: str,
    answers: dict[int, Answer],
    parameters: tuple[str, ...] = (),
    errors: tuple[ErrorCode, ...] = (),
) -> Operation:
    """An operation on one job: each authenticates, checks the id, then reads it and its owner."""
    return Operation(
        summary,
        answers,
        description,
        secured=True,
        parameters=("JobId", *parameters),
        errors=(*JOB_ERRORS, *errors),
    )


SNAPSHOT_HEADERS = ("ETag", "NoStore")
TEXT = {"type": "string"}

OPERATIONS: dict[object, Operation] = {
    static.bundle: Operation(
        "The browser client as one ES module (no token needed)",
        {200: Answer("JavaScript.", TEXT, "text/javascript")},
        errors=(ErrorCode.NOT_FOUND,),
    ),
    static.demo_page: Operation(
        "The demo page (only in `progress-gateway demo`)",
        {200: Answer("HTML.", TEXT, "text/html")},
        errors=(ErrorCode.NOT_FOUND,),
    ),
    health.healthz: Operation("Liveness: the process runs", {200: Answer("Alive.", "Status")}),
    health.readyz: Operation(
        "Readiness: store reachable, subscriber connected, not draining",
        {
            200: Answer("Ready to serve.", "Status"),
            503: Answer("Not ready; `problems` says why.", "Status", headers=("RetryAfter",)),
        },
    ),
    health.metrics: Operation(
        "Prometheus metrics of this process",
        {200: Answer("Prometheus text exposition format.", TEXT, "text/plain")},
    ),
    upgrade_required: Operation(
        "WebSocket upgrade (protocol: docs/protocol.md)",
        {
            101: Answer("Switching to the WebSocket protocol."),
            403: Answer("Origin not allowed, or the gateway is draining."),
        },
        "JSON text frames with an `op` field. Authenticate with a first frame "
        "`{op: auth, token}`, `?token=` or `Authorization: Bearer`. Closes with 4401 on a bad "
        "token, 4408 on an auth timeout, 4429 over the per-owner limit. A plain HTTP request "
        "(no `Upgrade: websocket`) answers 426; any method but GET answers 405.",
        parameters=("Token",),
        errors=(ErrorCode.UPGRADE_REQUIRED,),
    ),
    exports.create_export: Operation(
        "Create a job and start it on its executor",
        {201: Answer("The new job's snapshot.", "Job", headers=(*SNAPSHOT_HEADERS, "Location"))},
        'Body `{"kind": "…", "params": {…}}`. The job is created, spawned, and its executor call '
        "id stored before the answer, so it can always be found and cancelled. If the spawn "
        "fails the job ends `failed` with `spawn_error` and the answer is 502 (or 503 when the "
        "executor is unreachable).",
        secured=True,
        body="CreateExport",
        errors=(
            ErrorCode.BAD_REQUEST,
            ErrorCode.UNAUTHORIZED,
            *BODY_ERRORS,
            ErrorCode.UNPROCESSABLE,
            ErrorCode.EXECUTOR_ERROR,
            ErrorCode.EXECUTOR_UNAVAILABLE,
            ErrorCode.STORE_UNAVAILABLE,
        ),
    ),
    exports.active_exports: Operation(
        "The caller's jobs: active now, and recently finished",
        {200: Answer("Newest first.", "ActiveExports", headers=("NoStore",))},
        "Non-terminal jobs, and jobs finished within `recent_s`. Stale jobs are checked with "
        "their executors first, so a job that ended while no gateway ran shows its final state.",
        secured=True,
        parameters=("RecentS",),
        errors=(ErrorCode.BAD_REQUEST, ErrorCode.UNAUTHORIZED, ErrorCode.STORE_UNAVAILABLE),
    ),
    exports.read_export: _job_operation(
        "The job's snapshot; conditional and long-poll",
        "`ETag` is the quoted `seq`. With `If-None-Match` naming the current seq the answer is "
        "304. With `wait` the request is held until the seq changes (from `If-None-Match`, or "
        "from the current one without it), then answers 200 with the new snapshot, or 304 when "
        "the wait runs out. A terminal job answers at once.",
        {
            200: Answer("The job's snapshot, as stored.", "Job", headers=SNAPSHOT_HEADERS),
            304: Answer("Not modified: the seq is unchanged.", headers=SNAPSHOT_HEADERS),
        },
        ("IfNoneMatch", "Wait"),
        (ErrorCode.TOO_MANY_CONNECTIONS,),
    ),
    exports.export_events: _job_operation(
        "Server-Sent Events of the job's snapshots",
        "Each event is `id: <seq>`, `event: update` (or `reset`), `data: <snapshot JSON>`. Only "
        "snapshots newer than `Last-Event-ID` are sent; a comment line (`: keep-alive`) is sent "
        "after `GATEWAY_SSE_KEEPALIVE_S` without an update. The stream ends right after the "
        "terminal snapshot, and when the gateway drains (reconnect with `Last-Event-ID`).",
        {
            200: Answer(
                "An event stream.",
                "Event",
                "text/event-stream",
                headers=("NoCache", "NoBuffering"),
            ),
            204: Answer(
                "The job is finished and `Last-Event-ID` is its last seq: nothing more will "
                "come, and an EventSource stops reconnecting."
            ),
        },
        ("LastEventId", "LastEventIdQuery"),
        (ErrorCode.TOO_MANY_CONNECTIONS,),
    ),
    exports.export_history: _job_operation(
        "The job's bounded timeline of changes",
        "Oldest first; bounded by the store's history length.",
        {200: Answer("The timeline.", "History", headers=("NoStore",))},
    ),
    exports.cancel_export: _job_operation(
        "Request cancellation",
        "A queued job becomes `cancelled` at once; a running job gets `cancel_requested: true` "
        "and its executor call is cancelled. Repeating is harmless (200, unchanged). A job that "
        "already succeeded or failed answers 409.",
        {200: Answer("The snapshot after the request.", "Job", headers=SNAPSHOT_HEADERS)},
        errors=(*BODY_ERRORS, ErrorCode.JOB_FINISHED),
    ),
}


async def openapi(request: Request) -> Response:
    # Built once per app: generating takes milliseconds of event loop, and anyone may ask.
    document: Doc | None = getattr(request.app.state, "openapi_document", None)
    if document is None:
        gateway: Gateway = request.state.gateway
        document = openapi_document(gateway.settings, request.app.routes)
        request.app.state.openapi_document = document
    root_path = request.scope.get("root_path", "")
    if root_path:  # mounted under a prefix: the paths are relative to it
        document = {**document, "servers": [{"url": root_path}]}
    return JSONResponse(document)


OPERATIONS[openapi] = Operation(
    "This document", {200: Answer("OpenAPI 3.1 document.", {"type": "object"})}
)


def paths(app_routes: Sequence[BaseRoute]) -> Doc:
    """Every HTTP route of the app, each method once (HEAD is GET without the body)."""
    documented: Doc = {}
    for route in app_routes:
        if isinstance(route, WebSocketRoute):
            continue  # the upgrade is a GET: described on the plain route of the same path
        if not isinstance(route, Route):
            raise TypeError(f"the OpenAPI document cannot describe {route!r}")
        operation = OPERATIONS.get(route.endpoint)
        if operation is None:
            raise LookupError(f"route {route.path} ({route.name}) has no entry in OPERATIONS")
        for method in sorted((route.methods or set()) - {"HEAD"}):
            item = documented.setdefault(route.path, {})
            if method.lower() in item:
                raise ValueError(f"{method} {route.path} is routed twice")
            item[method.lower()] = operation.render(route.name)
    return documented


def _components(settings: Settings) -> Doc:
    runnable = {"local", *(["modal"] if settings.modal_app is not None else [])}
    kinds = [kind for _, kind in sorted(KINDS.items()) if kind.executor in runnable]
    return {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "queryToken": {
                "type": "apiKey",
                "in": "query",
                "name": "token",
                "description": "For clients that cannot set headers (EventSource).",
            },
        },
        "parameters": _parameters(settings),
        "headers": {name: spec for name, (_, spec) in HEADERS.items()},
        "schemas": component_schemas(kinds),
    }


def _parameters(settings: Settings) -> Doc:
    seq = {"type": "string", "pattern": "^[0-9]{1,18}$"}
    return {
        "JobId": {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {
                "type": "string",
                "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
            },
        },
        "Token": {
            "name": "token",
            "in": "query",
            "required": False,
            "schema": TEXT,
            "description": "A JWT, where a header cannot be set.",
        },
        "IfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "schema": TEXT,
            "description": 'ETags the client has, e.g. `"17"`.',
        },
        "Wait": {
            "name": "wait",
            "in": "query",
            "required": False,
            "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": settings.max_wait_s},
            "description": "Long-poll: seconds to hold the request waiting for a change.",
        },
        "LastEventId": {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": seq,
            "description": "The seq the client already has; only newer snapshots are sent.",
        },
        "LastEventIdQuery": {
            "name": "last_event_id",
            "in": "query",
            "required": False,
            "schema": seq,
            "description": "Same as `Last-Event-ID`, for a new EventSource that cannot set "
            "headers; the header wins when both are sent.",
        },
        "RecentS": {
            "name": "recent_s",
            "in": "query",
            "required": False,
            "schema": {
                "type": "number",
                "minimum": 0,
                "maximum": exports.MAX_RECENT_S,
                "default": settings.recent_s,
            },
            "description": "How far back finished jobs count as recent, in seconds.",
        },
    }


def openapi_document(settings: Settings, app_routes: Sequence[BaseRoute]) -> Doc:
    """The document for an app built from ``settings`` with ``app_routes``
    (``progress_gateway.app.openapi_for`` builds it for ``create_app(settings)``)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "progress-gateway",
            "version": importlib.metadata.version("progress-gateway"),
            "description": "Real-time job progress. Errors are `application/problem+json`. Any "
            f"request whose body is over {settings.max_body_bytes} bytes gets 413; an unknown "
            "path 404, a wrong method 405.",
        },
        "paths": paths(app_routes),
        "components": _components(settings),
    }


routes = [Route("/openapi.json", openapi, methods=["GET"])]
