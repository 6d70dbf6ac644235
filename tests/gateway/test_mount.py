"""The gateway mounted at ``/progress`` in a user's own Starlette and FastAPI apps.

The apps are the ones in ``docs/examples/`` (shown in ``docs/mounting.md``), served by a real
uvicorn on a free port in the test's event loop, so the test can also check that the gateway
starts and stops with the outer app's lifespan and leaves no task behind.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from progress_core.store import StoreOptions
from progress_gateway.app import GatewayApp, create_app
from progress_gateway.settings import Settings
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import SECRET
from tests.support.http import bearer, sse_items
from tests.support.redis_server import RedisServer, free_port
from tests.support.ws_client import WsClient

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = DOCS / "examples"
# The user's own route in each example, and what it answers.
OWN_ROUTES = {
    "starlette": ("/", {"app": "mine", "greeting": "hello"}),
    "fastapi": ("/hello", {"app": "mine"}),
}


def load_example(name: str) -> ModuleType:
    path = EXAMPLES / f"mount_{name}.py"
    spec = importlib.util.spec_from_file_location(f"mount_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mounted_gateway(app: Starlette) -> GatewayApp:
    """The gateway app the user's app mounts at /progress."""
    mounts = [route.app for route in app.routes if isinstance(route, Mount)]
    gateways = [mounted for mounted in mounts if isinstance(mounted, GatewayApp)]
    assert len(gateways) == 1, mounts
    return gateways[0]


@pytest.fixture
def settings(redis_server: RedisServer, store_options: StoreOptions, tmp_path: Path) -> Settings:
    return Settings(
        secret=SECRET,
        redis_url=redis_server.url,
        key_prefix=store_options.prefix,
        sqlite_path=tmp_path / "unused.db",
        resync_s=1,
        demo_page=True,
    )


@pytest.fixture
def worker(redis_server: RedisServer, store_options: StoreOptions) -> Iterator[ProgressClient]:
    with ProgressClient.from_url(redis_server.url, store_options) as client:
        yield client


@asynccontextmanager
async def served(app: ASGIApp, gateway: GatewayApp) -> AsyncIterator[str]:
    """``app`` under uvicorn on a free port; yields ``host:port``.

    On exit, after uvicorn has stopped, the gateway must be stopped too and no task of the
    gateway (hub, broker, reaper, executors) may be left running in the loop.
    """
    assert gateway.gateway is None, "the gateway runs before the app's lifespan started"
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn stopped during startup")
            await asyncio.sleep(0.02)
    assert gateway.gateway is not None, "the app's lifespan did not start the gateway"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task
    assert gateway.gateway is None, "the app's lifespan did not stop the gateway"
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == [], leftover


@pytest.mark.parametrize("example", ["starlette", "fastapi"])
async def test_every_transport_works_under_the_prefix(
    example: str, settings: Settings, worker: ProgressClient
) -> None:
    app = load_example(example).create_app(settings)
    own_path, own_answer = OWN_ROUTES[example]
    async with (
        served(app, mounted_gateway(app)) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        own = await http.get(own_path)
        assert (own.status_code, own.json()) == (200, own_answer)
        assert (await http.get("/progress/readyz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 404  # the gateway is only under it

        job = await asyncio.to_thread(worker.create_job, owner="alice", kind="demo")
        socket = await WsClient.connect(f"ws://{host}/progress/ws", token_for("alice"))
        await socket.ready()
        await socket.subscribe("r1", [{"id": job.id}])
        url = f"/progress/exports/{job.id}"
        async with http.stream(
            "GET", f"{url}/events", params={"token": token_for("alice")}
        ) as stream:
            assert stream.status_code == 200
            events = sse_items(stream)
            first = await anext(events)
            assert (first.event, first.id) == ("update", "1")
            long_poll = asyncio.create_task(
                http.get(
                    url,
                    params={"wait": "20"},
                    headers={**bearer(token_for("alice")), "If-None-Match": '"1"'},
                )
            )

            def work() -> None:
                worker.start(job.id)
                worker.update(job.id, progress=50, message="half")
                worker.succeed(job.id, result={"url": "done"})

            await asyncio.to_thread(work)
            polled = await long_poll
            assert polled.status_code == 200
            assert polled.json()["seq"] > 1
            final = await socket.wait_for_job(job.id, lambda j: j["status"] == "succeeded")
            assert (final["seq"], final["result"]) == (4, {"url": "done"})
            # The stream ends after the terminal snapshot.
            rest = [json.loads(item.data or "") async for item in events if item.comment is None]
            assert rest[-1]["status"] == "succeeded"
        await socket.close()
        own = await http.get(own_path)
        assert (own.status_code, own.json()) == (200, own_answer)


async def test_links_answers_and_documents_carry_the_prefix(settings: Settings) -> None:
    app = load_example("starlette").create_app(settings)
    headers = bearer(token_for("alice"))
    async with (
        served(app, mounted_gateway(app)) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        created = await http.post(
            "/progress/exports",
            headers=headers,
            json={"kind": "demo", "params": {"steps": 1, "step_s": 0}},
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert created.headers["Location"] == f"/progress/exports/{job_id}"

        # The job runs on the local executor of the mounted gateway; wait for its end.
        seq, status = created.json()["seq"], created.json()["status"]
        async with asyncio.timeout(30):
            while status != "succeeded":
                polled = await http.get(
                    created.headers["Location"],
                    params={"wait": "10"},
                    headers={**headers, "If-None-Match": f'"{seq}"'},
                )
                assert polled.status_code in (200, 304), polled.text
                if polled.status_code == 200:
                    seq, status = polled.json()["seq"], polled.json()["status"]
                    assert status not in ("failed", "cancelled"), polled.json()

        document = (await http.get("/progress/openapi.json")).json()
        assert document["servers"] == [{"url": "/progress"}]

        # The demo page and the bundle it loads are served under the prefix, and the page
        # reaches both through relative URLs (no absolute path that would escape the prefix).
        page = await http.get("/progress/")
        assert page.status_code == 200
        assert 'import("./client/progress-gateway.js")' in page.text
        assert 'new URL(".", location.href)' in page.text
        bundle = await http.get("/progress/client/progress-gateway.js")
        # 404 only from the gateway's own route when client-js/dist is not built (no `npm run
        # build` before the Python tests); a path outside the mounted routes gets no such detail.
        assert bundle.status_code == 200 or "is not built" in bundle.json()["detail"]


async def test_the_outer_apps_state_may_hold_a_gateway_of_its_own(
    settings: Settings, worker: ProgressClient
) -> None:
    progress = create_app(settings)

    async def own(request: Request) -> JSONResponse:
        return JSONResponse({"gateway": request.state.gateway})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        async with progress.lifespan():
            yield {"gateway": "the user's own"}

    app = Starlette(
        routes=[Route("/own", own), Mount("/progress", app=progress)], lifespan=lifespan
    )
    job = worker.create_job(owner="alice", kind="demo")
    async with (
        served(app, progress) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        read = await http.get(f"/progress/exports/{job.id}", headers=bearer(token_for("alice")))
        assert (read.status_code, read.json()["id"]) == (200, job.id)
        socket = await WsClient.connect(f"ws://{host}/progress/ws", token_for("alice"))
        await socket.ready()
        frames = await socket.subscribe("r1", [{"id": job.id}])
        assert [frame["op"] for frame in frames] == ["update", "ack"]
        await socket.close()
        assert (await http.get("/own")).json() == {"gateway": "the user's own"}


async def test_a_mounted_gateway_that_was_not_started_says_how_to_start_it(
    settings: Settings,
) -> None:
    progress = create_app(settings)

    async def receive() -> dict[str, object]:
        raise AssertionError("not reached")

    async def send(message: object) -> None:
        raise AssertionError("not reached")

    scope = {"type": "http", "method": "GET", "path": "/healthz", "headers": []}
    with pytest.raises(RuntimeError, match=r"enter `progress.lifespan\(\)`"):
        await progress(scope, receive, send)


async def test_the_gateway_runs_once(settings: Settings) -> None:
    progress = create_app(settings)
    async with progress.lifespan() as running:
        assert progress.gateway is running
        with pytest.raises(RuntimeError, match="already running"):
            async with progress.lifespan():
                pass
    assert progress.gateway is None


@pytest.mark.parametrize("example", ["starlette", "fastapi"])
def test_the_docs_show_each_example_as_the_tests_run_it(example: str) -> None:
    code = (EXAMPLES / f"mount_{example}.py").read_text()
    assert f"```python\n{code}```" in (DOCS / "mounting.md").read_text()
