"""A FastAPI app of your own with the progress gateway mounted at ``/progress``.

Run it with ``GATEWAY_SECRET=... uvicorn --factory mount_fastapi:create_app`` (the gateway reads
its ``GATEWAY_*`` settings from the environment); ``docs/mounting.md`` explains each step.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from progress_gateway.app import create_app as create_progress_app
from progress_gateway.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    progress = create_progress_app(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with progress.lifespan():
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"app": "mine"}

    app.mount("/progress", progress)
    return app
