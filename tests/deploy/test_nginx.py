"""The shipped nginx config (deploy/nginx/progress-gateway.conf) in front of two real gateway
replicas on one Redis, through a real nginx over TLS: WebSocket, SSE and long-poll clients, the
Origin check, the access log. Only ports, certificate and log paths are substituted, and each
substitution must hit exactly one line, so an edit to the shipped file is what runs here."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from progress_core.store import StoreOptions
from progress_gateway.settings import Settings
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import ROOT, GatewayServer
from tests.support.http import sse_items
from tests.support.redis_server import RedisServer, free_port, wait_until
from tests.support.tls import make_tls_files
from tests.support.ws_client import WsClient

CONFIG = ROOT / "deploy" / "nginx" / "progress-gateway.conf"
ALLOWED_ORIGIN = "https://app.example"

MAIN_CONFIG = """\
{user}
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log notice;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    include {run}/progress-gateway.conf;
}}
"""


def nginx_binary() -> str:
    """``/usr/sbin/nginx``; absent outside CI the test is skipped, in CI it must be there."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed; scripts/test installs it with apt-get")
        pytest.skip("nginx is not installed (scripts/test installs it with apt-get)")
    return binary


def render(config: str, replacements: dict[str, str]) -> str:
    """``config`` with each key replaced on exactly one non-comment line."""
    lines = config.splitlines(keepends=True)
    for old, new in replacements.items():
        hits = [
            i for i, line in enumerate(lines) if old in line and not line.lstrip().startswith("#")
        ]
        assert len(hits) == 1, f"{old!r} is on {len(hits)} lines of {CONFIG.name}, expected 1"
        lines[hits[0]] = lines[hits[0]].replace(old, new)
    return "".join(lines)


def locations(config: str) -> dict[str, str]:
    """Each ``location`` block's body by its match expression, comments removed."""
    text = re.sub(r"#[^\n]*", "", config)
    return {
        match["where"].strip(): match["body"]
        for match in re.finditer(r"location\s+(?P<where>[^{]+)\{(?P<body>[^}]*)\}", text)
    }


def seconds(body: str, directive: str) -> float:
    match = re.search(rf"\b{directive}\s+(\d+)s;", body)
    assert match is not None, f"no {directive} in {body!r}"
    return float(match[1])


@dataclass
class Proxy:
    """A running nginx: its TLS and plain ports, the CA that trusts it, its files."""

    https_port: int
    http_port: int
    ssl_context: ssl.SSLContext
    run: Path
    replicas: list[GatewayServer]
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}/ws"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self.ssl_context, timeout=30)

    def access_log(self) -> str:
        path = self.run / "access.log"
        return path.read_text() if path.exists() else ""

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx exited: {(self.run / 'error.log').read_text()[-2000:]}")
        response = httpx.get(f"{self.url}/healthz", verify=self.ssl_context, timeout=1.0)
        return response.status_code == 200


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"d{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def replicas(
    redis_server: RedisServer, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[GatewayServer]]:
    directory = tmp_path_factory.mktemp("replicas")
    servers = [
        GatewayServer(
            redis_server.url,
            directory / f"gateway{n}.log",
            key_prefix=prefix,
            allowed_origins=ALLOWED_ORIGIN,
        )
        for n in (1, 2)
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def proxy(
    replicas: list[GatewayServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    binary = nginx_binary()
    run = tmp_path_factory.mktemp("nginx")
    tls = make_tls_files(run / "tls")
    https_port, http_port = free_port(), free_port()
    site = render(
        CONFIG.read_text(),
        {
            "listen 80;": f"listen 127.0.0.1:{http_port};",
            "listen 443 ": f"listen 127.0.0.1:{https_port} ",
            "server 127.0.0.1:8001 ": f"server 127.0.0.1:{replicas[0].port} ",
            "server 127.0.0.1:8002 ": f"server 127.0.0.1:{replicas[1].port} ",
            "/etc/ssl/progress-gateway/fullchain.pem": str(tls.server_cert),
            "/etc/ssl/progress-gateway/privkey.pem": str(tls.server_key),
            "/var/log/nginx/progress-gateway.access.log": str(run / "access.log"),
        },
    )
    (run / "progress-gateway.conf").write_text(site)
    # As root, nginx would switch its worker to "nobody", which cannot read the test's files.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    (run / "nginx.conf").write_text(MAIN_CONFIG.format(user=user, run=run))
    args = [binary, "-e", str(run / "error.log"), "-p", str(run), "-c", str(run / "nginx.conf")]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [*args, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    context = ssl.create_default_context(cafile=tls.ca_cert)
    running = Proxy(https_port, http_port, context, run, replicas, process)
    try:
        wait_until(running.answers, 15.0, f"nginx on port {https_port}")
        yield running
    finally:
        process.send_signal(signal.SIGTERM)  # fast shutdown: open tunnels are not waited for
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, prefix: str) -> Iterator[ProgressClient]:
    with ProgressClient.from_url(redis_server.url, StoreOptions(prefix=prefix)) as client:
        yield client


def test_timeouts_outlast_the_gateway_intervals_they_proxy() -> None:
    """Each read timeout must be longer than the gateway's silence on that route, or nginx
    cuts (504 or a closed stream) what the gateway still serves."""
    config = CONFIG.read_text()
    blocks = locations(config)
    fields = Settings.model_fields
    assert seconds(blocks["/"], "proxy_read_timeout") > fields["max_wait_s"].default
    assert seconds(blocks["= /ws"], "proxy_read_timeout") > fields["ws_heartbeat_s"].default
    sse = blocks["~ ^/exports/[^/]+/events$"]
    assert seconds(sse, "proxy_read_timeout") > fields["sse_keepalive_s"].default
    assert re.search(r"\bproxy_buffering off;", sse)
    limit = re.search(r"\bclient_max_body_size (\d+)k;", config)
    assert limit is not None
    assert int(limit[1]) * 1024 >= fields["max_body_bytes"].default


async def test_websocket_subscriber_gets_live_updates_through_nginx(
    proxy: Proxy, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    # A page served by the gateway behind nginx: same origin only if nginx forwards the Host
    # with its port.
    client = await WsClient.connect(
        proxy.ws_url, token_for("alice"), ssl=proxy.ssl_context, origin=Origin(proxy.url)
    )
    await client.ready()
    frames = await client.subscribe("r1", [{"id": job.id}])
    assert [frame["op"] for frame in frames] == ["update", "ack"]

    def work() -> None:
        worker.start(job.id)
        for step in range(1, 11):
            worker.update(job.id, progress=step * 9.0, message=f"step {step}")
        worker.succeed(job.id, result={"url": "done"})

    await asyncio.to_thread(work)
    final = await client.wait_for_job(job.id, lambda j: j["status"] == "succeeded")
    assert (final["seq"], final["result"]) == (13, {"url": "done"})
    await client.close()


async def test_origin_check_still_applies_through_nginx(proxy: Proxy) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(
            proxy.ws_url, ssl=proxy.ssl_context, origin=Origin("https://evil.example")
        )
    assert refused.value.response.status_code == 403
    # nginx passes Origin as is: the allow-list still names the page's real origin.
    listed = await WsClient.connect(
        proxy.ws_url, token_for("alice"), ssl=proxy.ssl_context, origin=Origin(ALLOWED_ORIGIN)
    )
    await listed.ready()
    await listed.close()


async def test_sse_events_arrive_while_the_stream_is_open(
    proxy: Proxy, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    async with (
        proxy.client() as client,
        client.stream(
            "GET", f"/exports/{job.id}/events", params={"token": token_for("alice")}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        # Passed on for proxies further out (nginx hides X-Accel-* headers by default).
        assert response.headers["x-accel-buffering"] == "no"
        events = (item async for item in sse_items(response) if item.comment is None)
        async with asyncio.timeout(10):
            first = await anext(events)
        assert first.id == "1"
        # Written after the stream opened, and not terminal: the gateway keeps the stream open,
        # so this event can only arrive now if nginx does not buffer it.
        await asyncio.to_thread(worker.start, job.id)
        async with asyncio.timeout(10):
            second = await anext(events)
        assert (second.id, second.event) == ("2", "update")
        assert '"status":"running"' in (second.data or "").replace(" ", "")
        assert not response.is_closed


async def long_polls_waiting(replicas: list[GatewayServer]) -> float:
    """Long-polls held by the replicas, read from each replica's own /metrics."""
    total = 0.0
    async with httpx.AsyncClient(timeout=5) as client:
        for replica in replicas:
            text = (await client.get(f"{replica.url}/metrics")).text
            match = re.search(
                r'^pgw_owner_connections\{transport="long_poll"\} (\S+)$', text, re.MULTILINE
            )
            total += float(match[1]) if match else 0.0
    return total


async def test_long_poll_waits_through_nginx_and_returns_on_change(
    proxy: Proxy, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    async with proxy.client() as client:
        headers = {"Authorization": f"Bearer {token_for('alice')}"}
        poll = asyncio.create_task(client.get(f"/exports/{job.id}?wait=25", headers=headers))
        async with asyncio.timeout(10):
            while await long_polls_waiting(proxy.replicas) < 1:
                assert not poll.done(), poll.result()
                await asyncio.sleep(0.05)
        assert not poll.done()
        await asyncio.to_thread(worker.start, job.id)
        async with asyncio.timeout(10):
            answer = await poll
    assert answer.status_code == 200
    assert (answer.json()["seq"], answer.json()["status"]) == (2, "running")


async def test_access_log_has_no_tokens_and_both_replicas_serve(proxy: Proxy) -> None:
    token = token_for("alice")
    client = await WsClient.connect(
        proxy.ws_url, token, ssl=proxy.ssl_context, origin=Origin(proxy.url)
    )
    await client.ready()
    await client.close()
    async with proxy.client() as http:
        for _ in range(4):
            assert (await http.get("/healthz", params={"token": token})).status_code == 200
    # nginx writes a WebSocket's line when the tunnel closes.
    wait_until(lambda: '"GET /ws ' in proxy.access_log(), 10.0, "the /ws line in the access log")
    log = proxy.access_log()
    assert '"GET /healthz ' in log
    assert token not in log
    assert "token=" not in log
    for replica in proxy.replicas:
        assert f"127.0.0.1:{replica.port}" in log, f"replica {replica.port} served nothing"


async def test_plain_http_redirects_and_metrics_stay_inside(proxy: Proxy) -> None:
    async with httpx.AsyncClient(timeout=10) as plain:
        moved = await plain.get(f"http://127.0.0.1:{proxy.http_port}/exports/x?wait=1")
    assert moved.status_code == 301
    assert moved.headers["location"] == "https://127.0.0.1/exports/x?wait=1"
    async with proxy.client() as client:
        assert (await client.get("/metrics")).status_code == 403
