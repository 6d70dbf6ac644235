"""A Starlette app of your own with the progress gateway mounted at ``/progress``.

Run it with ``GATEWAY_SECRET=... uvicorn --factory mount_starlette:create_app`` (the gateway reads
its ``GATEWAY_*`` settings from the environment); ``docs/mounting.md`` explains each step.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from progress_gateway.app import create_app as create_progress_app
from progress_gateway.settings import Settings


async def home(request: Request) -> JSONResponse:
    return JSONResponse({"app": "mine", "greeting": request.state.greeting})


def create_app(settings: Settings | None = None) -> Starlette:
    progress = create_progress_app(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        # Your own startup here; the gateway runs while the block runs.
        async with progress.lifespan():
            yield {"greeting": "hello"}  # your own lifespan state, as without the gateway
        # Your own shutdown here; the gateway has already stopped.

    return Starlette(
        routes=[Route("/", home), Mount("/progress", app=progress)],
        lifespan=lifespan,
    )
