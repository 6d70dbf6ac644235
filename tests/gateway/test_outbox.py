"""The per-connection outbox: order, conflation, bounds."""

from __future__ import annotations

import pytest

from gateway.outbox import Outbox, OutboxOverflow


async def test_updates_conflate_in_place_and_keep_order() -> None:
    outbox: Outbox[str] = Outbox()
    assert outbox.offer_update("a", 1, "a1") == 0
    outbox.offer_control("ack")
    assert outbox.offer_update("b", 1, "b1") == 0
    assert outbox.offer_update("a", 2, "a2") == 1  # replaces a1, keeps its place
    assert await outbox.take() == ["a2", "ack", "b1"]
    assert len(outbox) == 0


async def test_never_a_seq_the_client_already_has() -> None:
    outbox: Outbox[str] = Outbox()
    outbox.set_known_seq("a", 5)
    assert outbox.offer_update("a", 5, "a5") == -1
    assert outbox.offer_update("a", 4, "a4") == -1
    assert outbox.offer_update("a", 6, "a6") == 0
    assert await outbox.take() == ["a6"]
    assert outbox.offer_update("a", 6, "again") == -1


async def test_untrack_keeps_the_pending_terminal_frame_and_its_seq() -> None:
    outbox: Outbox[str] = Outbox()
    outbox.track("a")
    outbox.offer_update("a", 9, "terminal")
    outbox.untrack("a")
    assert not outbox.watches("a")
    assert outbox.offer_update("a", 9, "terminal again") == -1
    assert await outbox.take() == ["terminal"]


async def test_forget_drops_everything_about_a_job() -> None:
    outbox: Outbox[str] = Outbox()
    outbox.track("a")
    outbox.offer_update("a", 3, "a3")
    outbox.forget("a")
    outbox.offer_control("ack")
    assert await outbox.take() == ["ack"]
    assert outbox.offer_update("a", 1, "a1") == 0


def test_memory_is_bounded_by_jobs_not_updates() -> None:
    outbox: Outbox[str] = Outbox()
    for seq in range(1, 10_001):
        outbox.offer_update("a", seq, f"a{seq}")
        outbox.offer_update("b", seq, f"b{seq}")
    assert len(outbox) == 2


def test_control_frames_are_bounded() -> None:
    outbox: Outbox[str] = Outbox(max_controls=3)
    for _ in range(3):
        outbox.offer_control("pong")
    with pytest.raises(OutboxOverflow):
        outbox.offer_control("pong")
