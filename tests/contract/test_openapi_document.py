"""The OpenAPI document is generated from the app: its operations are the app's routes, its
schemas the pydantic models', its error answers the code table's (no server needed here; the
conformance of the running gateway is ``tests/security/test_openapi_conformance.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from progress_core.codes import ERROR_RULES, ErrorCode
from progress_core.models import Job
from progress_gateway.app import create_app, openapi_for
from progress_gateway.http.openapi import OPERATIONS, openapi_document
from progress_gateway.http.problems import problem_codes
from progress_gateway.http.schemas import REF
from progress_gateway.settings import Settings
from tests.support.gateway_server import SECRET

PROBLEM = "application/problem+json"


def settings(**more: Any) -> Settings:
    return Settings(secret=SECRET, **more)


def app_operations(routes: list[BaseRoute]) -> list[tuple[str, str]]:
    """(path, method) of every HTTP route; the WebSocket's upgrade is the GET on ``/ws``."""
    served: list[tuple[str, str]] = []
    for route in routes:
        if isinstance(route, Route):
            served += [(route.path, m.lower()) for m in sorted(route.methods or ()) if m != "HEAD"]
        else:
            assert isinstance(route, WebSocketRoute), route
    return served


def documented(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(path, method) for path, item in document["paths"].items() for method in item]


@pytest.mark.parametrize("demo", [False, True])
def test_every_route_of_the_app_is_documented_exactly_once(demo: bool) -> None:
    routes = create_app(settings(demo_page=demo)).routes
    document = openapi_document(settings(demo_page=demo), routes)
    assert sorted(documented(document)) == sorted(app_operations(routes))
    assert len(set(documented(document))) == len(documented(document))
    assert (
        ("/", "get") in documented(document) if demo else ("/", "get") not in documented(document)
    )
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_a_route_without_an_operation_stops_the_generation() -> None:
    async def undocumented(request: Request) -> Response:
        raise AssertionError("never called")

    routes = [*create_app(settings()).routes, Route("/extra", undocumented)]
    with pytest.raises(LookupError, match="/extra"):
        openapi_document(settings(), routes)
    assert undocumented not in OPERATIONS


def test_the_same_method_routed_twice_stops_the_generation() -> None:
    routes = create_app(settings()).routes
    with pytest.raises(ValueError, match="routed twice"):
        openapi_document(settings(), [*routes, routes[0]])


def test_every_code_a_handler_can_answer_with_is_in_the_enum() -> None:
    document = openapi_for(settings(demo_page=True))
    problem = document["components"]["schemas"]["Problem"]
    assert problem["properties"]["code"]["enum"] == [code.value for code in ErrorCode]
    assert set(problem_codes()) <= set(problem["properties"]["code"]["enum"])


def problem_answers(document: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if PROBLEM in response.get("content", {}):
                    found.append((path, method, status, response))
    return found


def test_each_error_answer_carries_the_codes_of_its_status() -> None:
    answers = problem_answers(openapi_for(settings(demo_page=True)))
    assert len(answers) > 30
    for path, method, status, response in answers:
        schema = response["content"][PROBLEM]["schema"]
        assert schema["allOf"][0] == {"$ref": REF.format(model="Problem")}
        narrowed = schema["allOf"][1]["properties"]
        assert narrowed["status"] == {"const": int(status)}, (path, method)
        codes = [ErrorCode(code) for code in narrowed["code"]["enum"]]
        assert codes and all(ERROR_RULES[code].status == int(status) for code in codes)
        retry = any(ERROR_RULES[code].retryable for code in codes)
        assert ("Retry-After" in response.get("headers", {})) == retry, (path, method, status)


def test_job_routes_answer_the_job_errors_and_the_watching_ones_the_budget() -> None:
    paths = openapi_for(settings())["paths"]
    job_statuses = {"400", "401", "403", "404", "503"}
    for path in ("/exports/{id}", "/exports/{id}/events", "/exports/{id}/history"):
        assert job_statuses <= set(paths[path]["get"]["responses"]), path
    assert "429" in paths["/exports/{id}"]["get"]["responses"]
    assert "429" in paths["/exports/{id}/events"]["get"]["responses"]
    cancel = paths["/exports/{id}/cancel"]["post"]["responses"]
    conflict = cancel["409"]["content"][PROBLEM]["schema"]["allOf"][1]
    assert conflict["properties"]["code"]["enum"] == ["job_finished"]
    create = paths["/exports"]["post"]["responses"]
    unavailable = create["503"]["content"][PROBLEM]["schema"]["allOf"][1]["properties"]["code"]
    assert set(unavailable["enum"]) == {"executor_unavailable", "store_unavailable"}


def test_schemas_are_the_models_own() -> None:
    schemas = openapi_for(settings())["components"]["schemas"]
    job = Job.model_json_schema(ref_template=REF)
    definitions = job.pop("$defs")
    assert schemas["Job"] == job
    for name, schema in definitions.items():
        assert schemas[name] == schema, name
    assert schemas["Job"]["required"] == list(Job.model_fields)


def test_the_create_body_offers_the_kinds_this_gateway_runs() -> None:
    local = openapi_for(settings())["components"]["schemas"]["CreateExport"]
    assert set(local["discriminator"]["mapping"]) == {"demo"}
    with_modal = openapi_for(settings(modal_app="progress-demo"))
    mapping = with_modal["components"]["schemas"]["CreateExport"]["discriminator"]["mapping"]
    assert set(mapping) == {"demo", "demo_modal"}
