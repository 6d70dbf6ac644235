"""The browser client bundle, and the demo page in ``progress-gateway demo``.

Static files reveal no job data, so they need no token; the page reads the token from its own
URL and uses the public client like any application would.

A wheel carries both files in ``progress_gateway/static/`` (setup.py builds them in); an editable
install has no copy there and serves the checkout's ``client-js/`` instead.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

PACKAGE_STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
CLIENT_DIR = Path(__file__).resolve().parents[3] / "client-js"
# (the wheel's copy, the checkout's file): the first that exists is served.
BUNDLE = (PACKAGE_STATIC_DIR / "progress-gateway.js", CLIENT_DIR / "dist" / "progress-gateway.js")
DEMO_PAGE = (PACKAGE_STATIC_DIR / "index.html", CLIENT_DIR / "demo" / "index.html")


def _file(candidates: tuple[Path, Path], media_type: str) -> Response:
    path = next((path for path in candidates if path.is_file()), None)
    if path is None:
        # Not built (a checkout without `npm run build`): say how to get it, not a bare 404.
        raise HTTPException(
            404,
            f"{candidates[0].name} is not built; run `npm ci && npm run build` in client-js/ "
            "(a wheel install contains it)",
        )
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


async def bundle(request: Request) -> Response:
    return _file(BUNDLE, "text/javascript")


async def demo_page(request: Request) -> Response:
    return _file(DEMO_PAGE, "text/html; charset=utf-8")


def static_routes(demo: bool) -> list[BaseRoute]:
    routes: list[BaseRoute] = [Route("/client/progress-gateway.js", bundle, methods=["GET"])]
    if demo:
        routes.append(Route("/", demo_page, methods=["GET"]))
    return routes
