"""The sans-I/O WebSocket protocol: every rule without a socket or a clock."""

from __future__ import annotations

import json
import uuid

import pytest

from progress_core.codes import CloseCode
from progress_core.errors import Unauthorized
from progress_gateway.auth import Claims
from progress_gateway.protocol import (
    Authenticated,
    Close,
    Limits,
    Send,
    ServerProtocol,
    State,
    UnwatchJobs,
    UnwatchMine,
    WatchJobs,
    WatchMine,
)

JOB = str(uuid.uuid4())
OTHER = str(uuid.uuid4())


def verify(token: str) -> Claims:
    if token == "good":
        return Claims(sub="alice", exp=2_000_000_000)
    raise Unauthorized("token expired" if token == "old" else "signature is invalid")


def ready(limits: Limits | None = None) -> ServerProtocol:
    protocol = ServerProtocol(limits or Limits(), verify)
    assert protocol.authenticate("good") == [Authenticated("alice")]
    return protocol


def sent(actions: list[object]) -> list[dict[str, object]]:
    return [json.loads(action.frame) for action in actions if isinstance(action, Send)]


def test_auth_frame_then_ready() -> None:
    protocol = ServerProtocol(Limits(), verify)
    assert protocol.state is State.AWAITING_AUTH
    assert protocol.receive('{"op":"auth","token":"good"}') == [Authenticated("alice")]
    assert (protocol.state, protocol.owner) == (State.READY, "alice")


@pytest.mark.parametrize("token", ["old", "forged"])
def test_bad_token_closes_4401(token: str) -> None:
    protocol = ServerProtocol(Limits(), verify)
    [action] = protocol.receive(json.dumps({"op": "auth", "token": token}))
    assert isinstance(action, Close)
    assert action.code == CloseCode.UNAUTHORIZED
    assert protocol.state is State.CLOSED
    assert protocol.receive('{"op":"ping"}') == []


def test_auth_frame_without_token_closes_4401() -> None:
    [action] = ServerProtocol(Limits(), verify).receive('{"op":"auth"}')
    assert isinstance(action, Close) and action.code == CloseCode.UNAUTHORIZED


def test_anything_but_auth_before_auth_is_a_bad_frame() -> None:
    protocol = ServerProtocol(Limits(), verify)
    [frame] = sent(protocol.receive('{"op":"ping"}'))
    assert frame["code"] == "bad_request"
    assert protocol.state is State.AWAITING_AUTH


def test_auth_timeout_closes_4408() -> None:
    [action] = ServerProtocol(Limits(), verify).auth_timed_out()
    assert isinstance(action, Close) and action.code == CloseCode.AUTH_TIMEOUT


def test_ping_pong() -> None:
    assert sent(ready().receive('{"op":"ping"}')) == [{"op": "pong"}]


def test_subscribe_by_ids_with_and_without_seq() -> None:
    protocol = ready()
    message = {"op": "subscribe", "ref": "r1", "jobs": [{"id": JOB, "seq": 12}, {"id": OTHER}]}
    assert protocol.receive(json.dumps(message)) == [WatchJobs("r1", [(JOB, 12), (OTHER, None)])]
    assert protocol.subscriptions == {JOB, OTHER}


def test_subscribe_reports_bad_entries_and_keeps_good_ones() -> None:
    protocol = ready()
    jobs = [{"id": "nope"}, {"id": JOB, "seq": -1}, 7, {"id": OTHER, "seq": True}, JOB.upper()]
    actions = protocol.receive(json.dumps({"op": "subscribe", "ref": "r", "jobs": [*jobs, OTHER]}))
    errors = sent(actions)
    assert [error["code"] for error in errors] == ["bad_request"] * 5
    assert all(error["ref"] == "r" for error in errors)
    assert actions[-1] == WatchJobs("r", [(OTHER, None)])


def test_subscribe_with_only_bad_entries_still_acks() -> None:
    frames = sent(ready().receive('{"op":"subscribe","ref":"r","jobs":["x"]}'))
    assert [frame["op"] for frame in frames] == ["error", "ack"]


def test_subscription_limit() -> None:
    protocol = ready(Limits(max_subscriptions=2))
    ids = [str(uuid.uuid4()) for _ in range(3)]
    actions = protocol.receive(json.dumps({"op": "subscribe", "jobs": ids}))
    [error] = sent(actions)
    assert (error["code"], error["job_id"]) == ("too_many_subscriptions", ids[2])
    assert actions[-1] == WatchJobs(None, [(ids[0], None), (ids[1], None)])
    protocol.forget(ids[0])
    assert protocol.receive(json.dumps({"op": "subscribe", "jobs": [ids[2]]})) == [
        WatchJobs(None, [(ids[2], None)])
    ]


def test_scope_mine_and_unsubscribe() -> None:
    protocol = ready()
    assert protocol.receive('{"op":"subscribe","ref":"m","scope":"mine"}') == [WatchMine("m")]
    assert protocol.watching_mine
    assert protocol.receive('{"op":"unsubscribe","ref":"u","scope":"mine"}') == [UnwatchMine("u")]
    assert not protocol.watching_mine
    protocol.receive(json.dumps({"op": "subscribe", "jobs": [JOB]}))
    assert protocol.receive(json.dumps({"op": "unsubscribe", "jobs": [JOB, JOB]})) == [
        UnwatchJobs(None, [JOB])
    ]
    assert protocol.subscriptions == set()


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1,2]",
        '{"op":"dance"}',
        '{"op":"subscribe"}',
        '{"op":"subscribe","jobs":[]}',
        '{"op":"subscribe","scope":"everyone"}',
        '{"op":"unsubscribe","jobs":"x"}',
        '{"op":"ping","ref":7}',
        '{"op":"auth","token":"good"}',
    ],
)
def test_malformed_frames_get_bad_request_and_the_connection_stays(frame: str) -> None:
    protocol = ready()
    [error] = sent(protocol.receive(frame))
    assert (error["op"], error["code"]) == ("error", "bad_request")
    assert protocol.state is State.READY


def test_too_many_bad_frames_close_1008() -> None:
    protocol = ready(Limits(max_bad_frames=3))
    for _ in range(3):
        assert sent(protocol.receive("garbage"))
    [action] = protocol.receive("garbage")
    assert isinstance(action, Close) and action.code == CloseCode.POLICY


def test_frame_over_the_limit_closes_1009() -> None:
    protocol = ready(Limits(max_frame_bytes=1024))
    [action] = protocol.receive("é" * 600)  # 600 characters, 1200 bytes
    assert isinstance(action, Close) and action.code == CloseCode.TOO_LARGE
