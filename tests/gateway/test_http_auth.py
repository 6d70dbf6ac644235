"""Who may call what over HTTP: 401 for every bad token, 403 for someone else's job, 404 for no
job, 400 for a malformed id, on every authenticated route, against a real gateway process."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx

from progress_gateway.auth import issue_token
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import SECRET, GatewayServer
from tests.support.http import api_client, assert_problem, bearer

OTHER_SECRET = "another-secret-" + "y" * 40
JOB_ROUTES = [
    ("GET", "/exports/{id}"),
    ("GET", "/exports/{id}/events"),
    ("GET", "/exports/{id}/history"),
    ("POST", "/exports/{id}/cancel"),
]
ROUTES = [*JOB_ROUTES, ("GET", "/exports/active")]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(payload: dict[str, object]) -> str:
    """An ``alg: none`` token: no signature at all."""
    header = {"alg": "none", "typ": "JWT"}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}."


def bad_tokens(owner: str) -> dict[str, str]:
    later = int(time.time()) + 3600
    return {
        "expired": issue_token(SECRET, owner, 60, now=time.time() - 3600),
        "forged": issue_token(OTHER_SECRET, owner),
        "alg none": unsigned({"sub": owner, "exp": later}),
        "no exp": unsigned({"sub": owner}),
        "garbage": "not-a-jwt",
    }


async def request(
    client: httpx.AsyncClient,
    method: str,
    route: str,
    job_id: str,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """One request; a 200 event stream is closed after its headers."""
    url = route.replace("{id}", job_id)
    async with client.stream(method, url, headers=headers, params=params) as response:
        if response.status_code != 200 or "event-stream" not in response.headers["content-type"]:
            await response.aread()
    return response


async def test_every_route_refuses_a_missing_forged_unsigned_or_expired_token(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    async with api_client(gateway) as client:
        for method, route in ROUTES:
            response = await request(client, method, route, job.id)
            body = assert_problem(response, 401, "unauthorized")
            assert "missing token" in body["detail"]
            assert response.headers["www-authenticate"] == 'Bearer realm="progress-gateway"'
            for name, token in bad_tokens("alice").items():
                for how in ("header", "query"):
                    if how == "header":
                        response = await request(client, method, route, job.id, bearer(token))
                    else:
                        response = await request(
                            client, method, route, job.id, None, {"token": token}
                        )
                    case = f"{method} {route} with a {name} token in the {how}"
                    assert response.status_code == 401, case
                    body = assert_problem(response, 401, "unauthorized")
                    challenge = response.headers["www-authenticate"]
                    assert challenge.startswith('Bearer realm="progress-gateway", '), case
                    assert 'error="invalid_token"' in challenge, case
                    if name == "expired":
                        assert body["detail"] == "token expired", case
            basic = {"Authorization": "Basic YWxpY2U6c2VjcmV0"}
            assert_problem(await request(client, method, route, job.id, basic), 401, "unauthorized")
    # None of those requests cancelled anything.
    assert worker.get(job.id).seq == 1
    assert not worker.get(job.id).cancel_requested


async def test_a_token_in_the_query_works_where_headers_cannot_be_set(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    worker.start(job.id)
    async with api_client(gateway) as client:
        for method, route in ROUTES:
            response = await request(
                client, method, route, job.id, None, {"token": token_for("alice")}
            )
            assert response.status_code == 200, (method, route, response.text)
    assert worker.get(job.id).cancel_requested


async def test_the_owner_is_only_ever_the_tokens_subject(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    mine = worker.create_job(owner="alice", kind="demo")
    theirs = worker.create_job(owner="bob", kind="demo")
    alice = bearer(token_for("alice"))
    async with api_client(gateway) as client:
        # Naming another owner anywhere in the request changes nothing.
        response = await client.get(
            f"/exports/{theirs.id}", params={"owner": "bob", "sub": "bob"}, headers=alice
        )
        assert_problem(response, 403, "forbidden")
        response = await client.get("/exports/active", params={"owner": "bob"}, headers=alice)
        assert [job["id"] for job in response.json()["active"]] == [mine.id]
        # The header wins over the query: one request, one identity.
        response = await client.get(
            f"/exports/{mine.id}", params={"token": token_for("bob")}, headers=alice
        )
        assert response.status_code == 200
        assert response.json()["owner"] == "alice"


async def test_someone_elses_job_is_403_and_no_job_is_404_on_every_job_route(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    theirs = worker.create_job(owner="bob", kind="demo")
    missing = str(uuid.uuid4())
    alice = bearer(token_for("alice"))
    async with api_client(gateway) as client:
        for method, route in JOB_ROUTES:
            response = await request(client, method, route, theirs.id, alice)
            body = assert_problem(response, 403, "forbidden")
            assert theirs.id in body["detail"]
            response = await request(client, method, route, missing, alice)
            body = assert_problem(response, 404, "not_found")
            assert missing in body["detail"]
    untouched = worker.get(theirs.id)
    assert (untouched.seq, untouched.status, untouched.cancel_requested) == (1, "queued", False)


async def test_a_malformed_id_is_400_after_authentication_and_before_the_store(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    malformed = [
        "not-a-uuid",
        job.id.upper(),  # the same job in another spelling is still not its id
        job.id.replace("-", ""),
        f"{{{job.id}}}",
        "1",
        f"{job.id}x",
    ]
    alice = bearer(token_for("alice"))
    async with api_client(gateway) as client:
        for method, route in JOB_ROUTES:
            for bad_id in malformed:
                response = await request(client, method, route, bad_id, alice)
                body = assert_problem(response, 400, "bad_request")
                assert "UUID" in body["detail"], (route, bad_id)
            # Without a token the answer is 401 whatever the id: nothing is revealed first.
            assert_problem(await request(client, method, route, "not-a-uuid"), 401, "unauthorized")
    assert worker.get(job.id).seq == 1
