"""``/exports`` read API (DESIGN §6). Placeholder until the HTTP API lands."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
