"""Middleware: CORS from the explicit allow-list (the WebSocket Origin check uses the same list)."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from gateway.settings import Settings


def middleware(settings: Settings) -> list[Middleware]:
    if not settings.allowed_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "If-None-Match", "Last-Event-ID"],
            expose_headers=["ETag", "Location", "Retry-After"],
            max_age=600,
        )
    ]
