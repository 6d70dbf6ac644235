"""Redis over TLS (``rediss://``): the subscriber, the store and a whole job, against a real
redis-server serving TLS with a certificate from a throwaway CA."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from progress_core.store import StoreOptions, open_store
from progress_gateway.broker.subscriber import Subscriber
from tests.gateway.conftest import token_for
from tests.support.gateway_server import GatewayServer
from tests.support.http import bearer
from tests.support.redis_server import RedisServer
from tests.support.tls import TlsFiles, make_tls_files
from tests.support.ws_client import WsClient


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("tls-redis"), tls=tls_files)
    server.start()
    yield server
    server.stop()


def publish(server: RedisServer, channel: str, message: str) -> None:
    client = redis.Redis(port=server.port)  # the plain port: only the reader is under test
    try:
        client.publish(channel, message)
    finally:
        client.close()


async def test_the_subscriber_verifies_the_server_and_receives_over_tls(
    tls_redis: RedisServer, tls_files: TlsFiles
) -> None:
    subscriber = await Subscriber.connect(
        tls_redis.tls_url(ssl_ca_certs=str(tls_files.ca_cert)), within_s=5
    )
    try:
        subscriber.subscribe([b"pgw-tls:a"])
        received = await subscriber.read()
        assert received == [[b"subscribe", b"pgw-tls:a", 1]]
        publish(tls_redis, "pgw-tls:a", "over tls")
        received = await subscriber.read()
        assert received == [[b"message", b"pgw-tls:a", b"over tls"]]
    finally:
        subscriber.close()
        await subscriber.wait_closed()


async def test_a_server_certificate_from_an_unknown_ca_is_refused(tls_redis: RedisServer) -> None:
    # No ssl_ca_certs: the system's trust store, which does not hold the test CA.
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await Subscriber.connect(tls_redis.tls_url(), within_s=5)


async def test_verification_can_be_turned_off_explicitly(tls_redis: RedisServer) -> None:
    subscriber = await Subscriber.connect(tls_redis.tls_url(ssl_cert_reqs="none"), within_s=5)
    try:
        subscriber.subscribe([b"pgw-tls:b"])
        assert await subscriber.read() == [[b"subscribe", b"pgw-tls:b", 1]]
    finally:
        subscriber.close()
        await subscriber.wait_closed()


async def test_an_unknown_verification_mode_is_a_clear_error(tls_redis: RedisServer) -> None:
    with pytest.raises(ValueError, match="ssl_cert_reqs must be none, optional or required"):
        await Subscriber.connect(tls_redis.tls_url(ssl_cert_reqs="sometimes"), within_s=5)


async def test_a_job_runs_end_to_end_with_redis_over_tls(
    tls_redis: RedisServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    """Gateway store, its subscriber and the worker process all reach Redis only over TLS."""
    url = tls_redis.tls_url(ssl_ca_certs=str(tls_files.ca_cert))
    prefix = StoreOptions(prefix="tls-e2e").prefix
    gateway = GatewayServer(url, tmp_path / "gateway.log", key_prefix=prefix)
    gateway.start()
    try:
        assert gateway.ready()
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            response = await http.post(
                "/exports",
                json={"kind": "demo", "params": {"steps": 40, "step_s": 0.05}},
                headers=bearer(token_for("alice")),
            )
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        client = await WsClient.connect(gateway.ws_url, token_for("alice"))
        await client.ready()
        await client.subscribe("s", [job_id])
        done = await client.wait_for_job(job_id, lambda job: job["status"] == "succeeded", 30)
        assert done["result"]["steps"] == 40
        seqs = [
            frame["job"]["seq"]
            for frame in client.frames
            if frame["op"] == "update" and frame["job"]["id"] == job_id
        ]
        # More than the snapshot read at subscribe time: updates came through pub/sub over TLS.
        assert len(seqs) > 1 and seqs == sorted(set(seqs)), seqs
        await client.close()
    finally:
        gateway.stop()
    store = open_store(url, StoreOptions(prefix=prefix))
    try:
        stored = await store.get(job_id)
        assert stored.status == "succeeded"
    finally:
        await store.aclose()
