"""``GET /exports/{id}`` (ETag, 304, long-poll), history, active/recent and cancel, against a
real gateway process on both backends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from progress_core.store import StoreOptions, open_store
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import GatewayServer
from tests.support.http import api_client, assert_problem, bearer, eventually_metric, metric


def alice() -> dict[str, str]:
    return bearer(token_for("alice"))


async def test_get_returns_the_stored_snapshot_as_is_with_its_etag(
    gateway: GatewayServer, worker: ProgressClient, store_url: str, store_options: StoreOptions
) -> None:
    job = worker.create_job(owner="alice", kind="demo", params={"clips": 2})
    worker.start(job.id)
    worker.update(job.id, progress=40, stage="encoding", message="clip 1 of 2")
    store = open_store(store_url, store_options)
    try:
        (raw,) = await store.snapshots([job.id])
    finally:
        await store.aclose()
    async with api_client(gateway) as client:
        response = await client.get(f"/exports/{job.id}", headers=alice())
    assert response.status_code == 200
    assert response.text == raw  # the stored JSON text, not a re-encoding
    assert response.headers["content-type"] == "application/json"
    assert response.headers["etag"] == '"3"'
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert (body["id"], body["owner"], body["seq"], body["status"]) == (
        job.id,
        "alice",
        3,
        "running",
    )
    assert (body["progress"], body["stage"], body["params"]) == (40, "encoding", {"clips": 2})


async def test_if_none_match_is_304_while_the_seq_is_unchanged(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    url = f"/exports/{job.id}"
    async with api_client(gateway) as client:
        for tags in ('"1"', 'W/"1"', '"0", "1"', "*"):
            response = await client.get(url, headers={**alice(), "If-None-Match": tags})
            assert response.status_code == 304, tags
            assert response.content == b""
            assert response.headers["etag"] == '"1"'
        response = await client.get(url, headers={**alice(), "If-None-Match": '"7"'})
        assert (response.status_code, response.json()["seq"]) == (200, 1)
        worker.update(job.id, progress=5)
        response = await client.get(url, headers={**alice(), "If-None-Match": '"1"'})
        assert response.status_code == 200
        assert response.headers["etag"] == '"2"'
        assert response.json()["progress"] == 5


async def test_long_poll_answers_as_soon_as_a_worker_changes_the_job(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    url = f"/exports/{job.id}"
    async with api_client(gateway) as client:
        # With If-None-Match: wait for a seq other than the client's.
        poll = asyncio.create_task(
            client.get(url, params={"wait": "30"}, headers={**alice(), "If-None-Match": '"1"'})
        )
        await eventually_metric(client, "pgw_subscriptions", 1)  # the request is waiting
        await asyncio.to_thread(worker.update, job.id, progress=25, message="first")
        response = await poll
        # A 200 with seq 2 (not a 304) proves it answered on the change, not on the timeout.
        assert response.status_code == 200
        assert (response.json()["seq"], response.json()["progress"]) == (2, 25)
        assert response.headers["etag"] == '"2"'
        # Without it: the client's seq is the current one, so wait for the next change.
        poll = asyncio.create_task(client.get(url, params={"wait": "30"}, headers=alice()))
        await eventually_metric(client, "pgw_subscriptions", 1)
        await asyncio.to_thread(worker.update, job.id, progress=50, message="second")
        response = await poll
        assert (response.status_code, response.json()["seq"]) == (200, 3)
        # Every long-poll left the hub when it answered.
        await eventually_metric(client, "pgw_subscriptions", 0)


async def test_long_poll_is_304_when_the_wait_runs_out(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    async with api_client(gateway) as client:
        response = await client.get(
            f"/exports/{job.id}", params={"wait": "1"}, headers={**alice(), "If-None-Match": '"1"'}
        )
        assert response.status_code == 304
        assert response.headers["etag"] == '"1"'
        assert await metric(client, "pgw_subscriptions") == 0


async def test_long_poll_answers_at_once_when_behind_or_finished(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    worker.update(job.id, progress=10)
    url = f"/exports/{job.id}"
    wait = {"wait": "30"}
    # The client timeout (10 s) is far below the wait: only an immediate answer passes.
    async with api_client(gateway) as client:
        response = await client.get(url, params=wait, headers={**alice(), "If-None-Match": '"1"'})
        assert (response.status_code, response.json()["seq"]) == (200, 2)
        worker.succeed(job.id, result={"url": "done"})
        response = await client.get(url, params=wait, headers={**alice(), "If-None-Match": '"3"'})
        assert (response.status_code, response.headers["etag"]) == (304, '"3"')
        response = await client.get(url, params=wait, headers=alice())
        assert (response.status_code, response.json()["status"]) == (200, "succeeded")


async def test_wait_must_be_a_positive_number_within_the_limit(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    async with api_client(gateway) as client:
        for wait in ("0", "-1", "30.5", "abc", "nan", "inf", ""):
            response = await client.get(
                f"/exports/{job.id}", params={"wait": wait}, headers=alice()
            )
            body = assert_problem(response, 400, "bad_request")
            assert "wait" in body["detail"], wait


async def test_history_is_the_timeline_of_changes_oldest_first(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    worker.start(job.id)
    worker.update(job.id, progress=30, stage="download", message="fetching")
    worker.succeed(job.id)
    async with api_client(gateway) as client:
        response = await client.get(f"/exports/{job.id}/history", headers=alice())
    assert response.status_code == 200
    events = response.json()["events"]
    assert [(e["seq"], e["status"], e["progress"]) for e in events] == [
        (1, "queued", 0),
        (2, "running", 0),
        (3, "running", 30),
        (4, "succeeded", 100),
    ]
    assert set(events[2]) == {"seq", "at", "status", "progress", "stage", "message"}
    assert (events[2]["stage"], events[2]["message"]) == ("download", "fetching")
    assert events[0]["at"].endswith("Z")


async def test_active_lists_the_callers_jobs_and_recently_finished_ones(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    queued = worker.create_job(owner="alice", kind="demo")
    running = worker.create_job(owner="alice", kind="demo")
    worker.start(running.id)
    finished = worker.create_job(owner="alice", kind="demo")
    worker.succeed(finished.id)
    worker.create_job(owner="bob", kind="demo")
    async with api_client(gateway) as client:
        response = await client.get("/exports/active", headers=alice())
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert {job["id"] for job in body["active"]} == {queued.id, running.id}
        assert [job["id"] for job in body["recent"]] == [finished.id]
        assert {job["owner"] for job in body["active"] + body["recent"]} == {"alice"}
        response = await client.get("/exports/active", params={"recent_s": "0"}, headers=alice())
        assert (len(response.json()["active"]), response.json()["recent"]) == (2, [])
        bob = await client.get("/exports/active", headers=bearer(token_for("bob")))
        assert [job["owner"] for job in bob.json()["active"]] == ["bob"]
        for bad in ("-1", str(30 * 86400 + 1), "soon", "nan"):
            response = await client.get(
                "/exports/active", params={"recent_s": bad}, headers=alice()
            )
            assert_problem(response, 400, "bad_request")


async def test_cancel_a_queued_job_cancels_it_and_repeating_is_harmless(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    async with api_client(gateway) as client:
        first = await client.post(f"/exports/{job.id}/cancel", headers=alice())
        again = await client.post(f"/exports/{job.id}/cancel", headers=alice())
    assert first.status_code == 200
    body = first.json()
    assert (body["status"], body["seq"], body["error"]["code"]) == ("cancelled", 2, "cancelled")
    assert first.headers["etag"] == '"2"'
    assert again.status_code == 200
    assert again.json()["seq"] == 2  # nothing changed the second time
    assert worker.get(job.id).status == "cancelled"


async def test_cancel_a_running_job_flags_it_for_its_worker(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    worker.start(job.id)
    async with api_client(gateway) as client:
        first = await client.post(f"/exports/{job.id}/cancel", headers=alice())
        again = await client.post(f"/exports/{job.id}/cancel", headers=alice())
    assert first.status_code == 200
    assert (first.json()["status"], first.json()["cancel_requested"]) == ("running", True)
    assert (again.status_code, again.json()["seq"]) == (200, first.json()["seq"])
    seen = worker.get(job.id)
    assert (seen.status, seen.cancel_requested) == ("running", True)


async def test_cancel_a_finished_job_is_409_and_changes_nothing(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    succeeded = worker.create_job(owner="alice", kind="demo")
    worker.succeed(succeeded.id)
    failed = worker.create_job(owner="alice", kind="demo")
    worker.fail(failed.id, code="worker_error", message="boom")
    async with api_client(gateway) as client:
        for job in (succeeded, failed):
            response = await client.post(f"/exports/{job.id}/cancel", headers=alice())
            body = assert_problem(response, 409, "job_finished")
            assert job.id in body["detail"]
    assert (worker.get(succeeded.id).seq, worker.get(succeeded.id).status) == (2, "succeeded")
    assert (worker.get(failed.id).seq, worker.get(failed.id).status) == (2, "failed")


async def test_an_oversized_body_is_413_and_changes_nothing(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    big = json.dumps({"pad": "x" * 300_000}).encode()

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 16_384):
            yield big[start : start + 16_384]

    url = f"/exports/{job.id}/cancel"
    async with api_client(gateway) as client:
        declared = await client.post(url, content=big, headers=alice())
        body = assert_problem(declared, 413, "payload_too_large")
        assert "262144" in body["detail"]
        streamed = await client.post(url, content=chunked(), headers=alice())
        assert "content-length" not in streamed.request.headers
        assert_problem(streamed, 413, "payload_too_large")
    assert (worker.get(job.id).seq, worker.get(job.id).status) == (1, "queued")


async def test_a_client_still_sending_a_refused_body_reads_the_413_not_a_reset(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    # Closing a socket with unread bytes sends a TCP RST, which can destroy the 413 before the
    # client reads it: the gateway drops the rest of a refused body (up to 1 MiB) first.
    job = worker.create_job(owner="alice", kind="demo")
    big = json.dumps({"pad": "x" * 1_000_000}).encode()

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 16_384):
            yield big[start : start + 16_384]

    url = f"/exports/{job.id}/cancel"
    for _ in range(5):
        async with api_client(gateway) as client:
            assert_problem(
                await client.post(url, content=big, headers=alice()), 413, "payload_too_large"
            )
            assert_problem(
                await client.post(url, content=chunked(), headers=alice()), 413, "payload_too_large"
            )
    assert (worker.get(job.id).seq, worker.get(job.id).status) == (1, "queued")
