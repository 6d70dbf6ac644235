"""The gateway server: ``pip install 'progress-gateway[server]'``.

The base install is the worker SDK only. Fail on the first import with the command that fixes it,
rather than deep inside whichever module first imports a server dependency.
"""

try:
    import jwt  # noqa: F401
    import prometheus_client  # noqa: F401
    import pydantic_settings  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"the progress-gateway server needs its extra: pip install 'progress-gateway[server]' "
        f"(missing: {exc.name})",
        name=exc.name,
    ) from exc
