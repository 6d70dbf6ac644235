"""The browser client bundle, and the demo page in ``progress-gateway demo``.

Static files reveal no job data, so they need no token; the page reads the token from its own
URL and uses the public client like any application would.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

CLIENT_DIR = Path(__file__).resolve().parents[3] / "client-js"
BUNDLE = CLIENT_DIR / "dist" / "progress-gateway.js"
DEMO_PAGE = CLIENT_DIR / "demo" / "index.html"


def _file(path: Path, media_type: str) -> Response:
    if not path.is_file():
        # Not built (client-js not installed): say how to get it rather than a bare 404.
        raise HTTPException(
            404, f"{path.name} is not built; run `npm ci && npm run build` in client-js/"
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
