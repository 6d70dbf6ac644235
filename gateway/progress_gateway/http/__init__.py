"""HTTP routes of the gateway, one module per concern."""

from __future__ import annotations

from starlette.routing import BaseRoute

from progress_gateway.http import exports, health, openapi
from progress_gateway.http.static import static_routes


def routes(*, demo: bool = False) -> list[BaseRoute]:
    return [*health.routes, *openapi.routes, *exports.routes, *static_routes(demo)]
