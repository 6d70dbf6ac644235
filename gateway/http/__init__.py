"""HTTP routes of the gateway, one module per concern."""

from __future__ import annotations

from starlette.routing import BaseRoute

from gateway.http import exports, health, openapi


def routes() -> list[BaseRoute]:
    return [*health.routes, *openapi.routes, *exports.routes]
