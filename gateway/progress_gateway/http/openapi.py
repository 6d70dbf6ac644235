"""``GET /openapi.json``: the HTTP API as an OpenAPI 3.1 document, written by hand.

Hand-written because the routes are plain Starlette functions with nothing to introspect; a test
checks that every route of the app is described here and nothing else is, and the HTTP tests
check each status they see against the responses listed for its route. Like ``/healthz`` it needs
no token: it describes the API, not anyone's jobs.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from progress_workers.kinds import KINDS
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from progress_gateway.gateway import Gateway
from progress_gateway.http.problems import problem_codes
from progress_gateway.settings import Settings

__all__ = ["openapi_document", "routes"]

Doc = dict[str, Any]

PROBLEM = "application/problem+json"
SECURITY: list[Doc] = [{"bearer": []}, {"queryToken": []}]


def _ref(kind: str, name: str) -> Doc:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: Doc, description: str, headers: Doc | None = None) -> Doc:
    response: Doc = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _problems(*statuses: int) -> Doc:
    return {str(status): _ref("responses", f"Problem{status}") for status in statuses}


def _job_operation(summary: str, description: str, ok: Doc, *extra: Doc, **more: Doc) -> Doc:
    """An operation on one job: every one authenticates, checks the id and the owner."""
    return {
        "summary": summary,
        "description": description,
        "security": SECURITY,
        "parameters": [_ref("parameters", "JobId"), *extra],
        "responses": {**ok, **more, **_problems(400, 401, 403, 404, 503)},
    }


def _paths(settings: Settings) -> Doc:
    etag = {"ETag": _ref("headers", "ETag"), "Cache-Control": _ref("headers", "NoStore")}
    snapshot = _json(_ref("schemas", "Job"), "The job's snapshot, as stored.", etag)
    return {
        "/client/progress-gateway.js": {
            "get": {
                "summary": "The browser client as one ES module (no token needed)",
                "responses": {
                    "200": {
                        "description": "JavaScript.",
                        "content": {"text/javascript": {"schema": {"type": "string"}}},
                    },
                    **_problems(404),
                },
            }
        },
        **(
            {
                "/": {
                    "get": {
                        "summary": "The demo page (only in `progress-gateway demo`)",
                        "responses": {
                            "200": {
                                "description": "HTML.",
                                "content": {"text/html": {"schema": {"type": "string"}}},
                            },
                            **_problems(404),
                        },
                    }
                }
            }
            if settings.demo_page
            else {}
        ),
        "/healthz": {
            "get": {
                "summary": "Liveness: the process runs",
                "responses": {"200": _json(_ref("schemas", "Status"), "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: store reachable, subscriber connected, not draining",
                "responses": {
                    "200": _json(_ref("schemas", "Status"), "Ready to serve."),
                    "503": _json(
                        _ref("schemas", "Status"),
                        "Not ready; `problems` says why.",
                        {"Retry-After": _ref("headers", "RetryAfter")},
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this process",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document.")},
            }
        },
        "/ws": {
            "get": {
                "summary": "WebSocket upgrade (protocol: docs/protocol.md)",
                "description": "JSON text frames with an `op` field. Authenticate with a first "
                "frame `{op: auth, token}`, `?token=` or `Authorization: Bearer`. Closes with "
                "4401 on a bad token, 4408 on an auth timeout, 4429 over the per-owner limit. "
                "A plain HTTP request (no `Upgrade: websocket`) answers 426; any method but GET "
                "answers 405.",
                "parameters": [_ref("parameters", "Token")],
                "responses": {
                    "101": {"description": "Switching to the WebSocket protocol."},
                    "403": {"description": "Origin not allowed, or the gateway is draining."},
                    **_problems(426),
                },
            }
        },
        "/exports": {
            "post": {
                "summary": "Create a job and start it on its executor",
                "description": 'Body `{"kind": "…", "params": {…}}`. The job is created, '
                "spawned, and its executor call id stored before the answer, so it can always "
                "be found and cancelled. If the spawn fails the job ends `failed` with "
                "`spawn_error` and the answer is 502 (or 503 when the executor is unreachable).",
                "security": SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("schemas", "CreateExport")}},
                },
                "responses": {
                    "201": _json(
                        _ref("schemas", "Job"),
                        "The new job's snapshot.",
                        {**etag, "Location": _ref("headers", "Location")},
                    ),
                    **_problems(400, 401, 408, 413, 422, 502, 503),
                },
            }
        },
        "/exports/active": {
            "get": {
                "summary": "The caller's jobs: active now, and recently finished",
                "security": SECURITY,
                "parameters": [_ref("parameters", "RecentS")],
                "responses": {
                    "200": _json(
                        _ref("schemas", "ActiveExports"),
                        "Non-terminal jobs, and jobs finished within `recent_s`, newest first.",
                        {"Cache-Control": _ref("headers", "NoStore")},
                    ),
                    **_problems(400, 401, 503),
                },
            }
        },
        "/exports/{id}": {
            "get": _job_operation(
                "The job's snapshot; conditional and long-poll",
                "`ETag` is the quoted `seq`. With `If-None-Match` naming the current seq the "
                "answer is 304. With `wait` the request is held until the seq changes (from "
                "`If-None-Match`, or from the current one without it), then answers 200 with the "
                "new snapshot, or 304 when the wait runs out. A terminal job answers at once.",
                {"200": snapshot},
                _ref("parameters", "IfNoneMatch"),
                _ref("parameters", "Wait"),
                **{"304": {"description": "Not modified: the seq is unchanged.", "headers": etag}},
                **_problems(429),
            )
        },
        "/exports/{id}/events": {
            "get": _job_operation(
                "Server-Sent Events of the job's snapshots",
                "Each event is `id: <seq>`, `event: update`, `data: <snapshot JSON>`. Only "
                "snapshots newer than `Last-Event-ID` are sent; a comment line (`: keep-alive`) "
                f"is sent after {settings.sse_keepalive_s:g} s without an update. The stream "
                "ends right after the terminal snapshot, and when the gateway drains (reconnect "
                "with `Last-Event-ID`).",
                {
                    "200": {
                        "description": "An event stream.",
                        "headers": {
                            "Cache-Control": {"schema": {"type": "string", "const": "no-cache"}},
                            "X-Accel-Buffering": {"schema": {"type": "string", "const": "no"}},
                        },
                        "content": {"text/event-stream": {"schema": _ref("schemas", "Event")}},
                    },
                    "204": {
                        "description": "The job is finished and `Last-Event-ID` is its last "
                        "seq: nothing more will come, and an EventSource stops reconnecting."
                    },
                },
                _ref("parameters", "LastEventId"),
                _ref("parameters", "LastEventIdQuery"),
                **_problems(429),
            )
        },
        "/exports/{id}/history": {
            "get": _job_operation(
                "The job's bounded timeline of changes",
                "Oldest first; bounded by the store's history length.",
                {
                    "200": _json(
                        _ref("schemas", "History"),
                        "The timeline.",
                        {"Cache-Control": _ref("headers", "NoStore")},
                    )
                },
            )
        },
        "/exports/{id}/cancel": {
            "post": _job_operation(
                "Request cancellation",
                "A queued job becomes `cancelled` at once; a running job gets "
                "`cancel_requested: true` for its worker to act on. Repeating is harmless "
                "(200, unchanged). A job that already succeeded or failed answers 409.",
                {"200": _json(_ref("schemas", "Job"), "The snapshot after the request.", etag)},
                **_problems(408, 409, 413),
            )
        },
    }


def _schemas(settings: Settings) -> Doc:
    text_or_null = {"type": ["string", "null"]}
    status = {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]}
    codes = problem_codes()
    return {
        "Job": {
            "type": "object",
            "description": "A job's complete snapshot; `seq` is its version.",
            "required": ["id", "owner", "kind", "status", "progress", "seq", "cancel_requested"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "owner": {"type": "string"},
                "kind": {"type": "string"},
                "status": status,
                "progress": {"type": "number", "minimum": 0, "maximum": 100},
                "stage": text_or_null,
                "message": text_or_null,
                "seq": {"type": "integer", "minimum": 1},
                "attempt": {"type": "integer", "minimum": 0},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "heartbeat_at": {"type": "string", "format": "date-time"},
                "executor": text_or_null,
                "call_id": text_or_null,
                "params": {"type": "object"},
                "result": {"description": "Small JSON set by the worker on success, or null."},
                "error": {"oneOf": [{"type": "null"}, _ref("schemas", "JobError")]},
                "cancel_requested": {"type": "boolean"},
            },
        },
        "CreateExport": _create_export(settings),
        "Event": {
            "type": "object",
            "description": "One event of the stream (keep-alive comments are not events).",
            "required": ["id", "event", "data"],
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9]{1,18}$", "description": "The seq."},
                "event": {"type": "string", "const": "update"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": _ref("schemas", "Job"),
                },
            },
        },
        "JobError": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "HistoryEvent": {
            "type": "object",
            "required": ["seq", "at", "status", "progress", "stage", "message"],
            "properties": {
                "seq": {"type": "integer"},
                "at": {"type": "string", "format": "date-time"},
                "status": status,
                "progress": {"type": "number"},
                "stage": text_or_null,
                "message": text_or_null,
            },
        },
        "History": {
            "type": "object",
            "required": ["events"],
            "properties": {"events": {"type": "array", "items": _ref("schemas", "HistoryEvent")}},
        },
        "ActiveExports": {
            "type": "object",
            "required": ["active", "recent"],
            "properties": {
                "active": {"type": "array", "items": _ref("schemas", "Job")},
                "recent": {"type": "array", "items": _ref("schemas", "Job")},
            },
        },
        "Status": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string"},
                "problems": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details, with a machine-readable `code`.",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": {"type": "string", "const": "about:blank"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "code": {"type": "string", "enum": codes},
            },
        },
    }


def _create_export(settings: Settings) -> Doc:
    """One alternative per kind this gateway can run, with that kind's own params schema: an
    unknown kind or params the kind refuses are outside the document (and answer 422)."""
    runnable = {"local", *(["modal"] if settings.modal_app is not None else [])}
    kinds = [kind for name, kind in sorted(KINDS.items()) if kind.executor in runnable]
    return {
        "oneOf": [
            {
                "type": "object",
                "title": kind.name,
                "required": ["kind"],
                "additionalProperties": False,
                "properties": {
                    "kind": {"type": "string", "const": kind.name},
                    "params": kind.params.model_json_schema(),
                },
            }
            for kind in kinds
        ]
    }


PROBLEM_RESPONSES = {
    400: ("Bad request: the id is not a lowercase UUID, or a parameter is malformed.", {}),
    401: (
        "Missing, malformed, forged or expired token.",
        {"WWW-Authenticate": _ref("headers", "WWWAuthenticate")},
    ),
    403: ("The job exists but belongs to someone else.", {}),
    404: ("No such job.", {}),
    408: ("The request body did not arrive in time; the connection is closed.", {}),
    405: (
        "The path exists but not with this method; `Allow` lists the methods it takes.",
        {"Allow": _ref("headers", "Allow")},
    ),
    409: ("The job already succeeded or failed.", {}),
    413: ("The request body (or its params) is over the limit.", {}),
    422: ("Unknown kind, or params that do not validate against the kind.", {}),
    429: (
        "The owner already holds its limit of connections (WebSocket, SSE and waiting "
        "long-polls together) on this gateway: retry after `Retry-After` seconds.",
        {"Retry-After": _ref("headers", "RetryAfter")},
    ),
    426: (
        "`/ws` takes only WebSocket upgrade requests (`Upgrade: websocket`).",
        {"Upgrade": _ref("headers", "Upgrade")},
    ),
    502: ("The executor could not start the job; the job ended `failed` (`spawn_error`).", {}),
    503: (
        "The store (or, for a create, the executor) is unavailable: retry after `Retry-After` "
        "seconds. A store outage is never reported as 404.",
        {"Retry-After": _ref("headers", "RetryAfter")},
    ),
}


def _components(settings: Settings) -> Doc:
    responses = {
        f"Problem{status}": {
            "description": description,
            **({"headers": headers} if headers else {}),
            "content": {PROBLEM: {"schema": _ref("schemas", "Problem")}},
        }
        for status, (description, headers) in PROBLEM_RESPONSES.items()
    }
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
        "parameters": {
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
                "schema": {"type": "string"},
                "description": "A JWT, where a header cannot be set.",
            },
            "IfNoneMatch": {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": 'ETags the client has, e.g. `"17"`.',
            },
            "Wait": {
                "name": "wait",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": settings.max_wait_s,
                },
                "description": "Long-poll: seconds to hold the request waiting for a change.",
            },
            "LastEventId": {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                "description": "The seq the client already has; only newer snapshots are sent.",
            },
            "LastEventIdQuery": {
                "name": "last_event_id",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
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
                    "maximum": 30 * 86400,
                    "default": settings.recent_s,
                },
                "description": "How far back finished jobs count as recent, in seconds.",
            },
        },
        "headers": {
            "ETag": {"schema": {"type": "string"}, "description": 'The quoted seq: `"17"`.'},
            "NoStore": {"schema": {"type": "string", "const": "no-store"}},
            "RetryAfter": {"schema": {"type": "integer"}, "description": "Seconds."},
            "Location": {"schema": {"type": "string"}, "description": "`/exports/{id}`."},
            "WWWAuthenticate": {"schema": {"type": "string"}, "description": "RFC 6750 §3."},
            "Allow": {"schema": {"type": "string"}, "description": "e.g. `GET, HEAD`."},
            "Upgrade": {"schema": {"type": "string", "const": "websocket"}},
        },
        "responses": responses,
        "schemas": _schemas(settings),
    }


def openapi_document(settings: Settings) -> Doc:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "progress-gateway",
            "version": importlib.metadata.version("progress-gateway"),
            "description": "Real-time job progress. Errors are "
            "`application/problem+json`. Any request whose body is over "
            f"{settings.max_body_bytes} bytes gets 413; an unknown path 404, a wrong method 405.",
        },
        "paths": _paths(settings),
        "components": _components(settings),
    }


async def openapi(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    return JSONResponse(openapi_document(gateway.settings))


routes = [Route("/openapi.json", openapi, methods=["GET"])]
