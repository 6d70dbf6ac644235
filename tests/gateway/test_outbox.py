"""The per-connection outbox: order, conflation, bounds."""

from __future__ import annotations

from progress_gateway.outbox import Outbox


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


def bounded(max_bytes: int) -> tuple[Outbox[str], list[str]]:
    outbox: Outbox[str] = Outbox(max_bytes=max_bytes, size=len)
    overflows: list[str] = []
    outbox.overflow = lambda: overflows.append("overflow")
    return outbox, overflows


def test_pending_bytes_are_bounded() -> None:
    outbox, overflows = bounded(100)
    for seq in range(1, 11):
        outbox.offer_update(f"job{seq}", seq, "u" * 10)
    assert outbox.pending_bytes() == 100 and not overflows
    assert outbox.offer_update("job11", 1, "u") == -1
    assert overflows == ["overflow"] and outbox.closed and len(outbox) == 0


def test_conflation_replaces_bytes_instead_of_adding() -> None:
    outbox, overflows = bounded(100)
    for seq in range(1, 1001):
        outbox.offer_update("job", seq, "u" * 60)
    assert outbox.pending_bytes() == 60 and not overflows


def test_the_answers_to_one_frame_may_exceed_the_bound_until_the_next_frame() -> None:
    outbox, overflows = bounded(100)
    outbox.begin_answer()
    for _ in range(300):
        outbox.offer_control('{"op":"error"}')
    outbox.offer_update("job", 1, "u" * 10)
    outbox.end_answer()
    outbox.offer_update("other", 1, "u" * 10)  # an update after the answers: not counted
    assert not overflows and len(outbox) == 302
    # The connection answers no further frame while they wait...
    assert outbox.backlogged()
    outbox.take_nowait()  # ...until the writer has taken them
    assert not outbox.backlogged() and outbox.pending_bytes() == 0
    # The next frame's answers are exempt; the earlier ones no longer.
    outbox.offer_control("x" * 90)
    outbox.begin_answer()
    outbox.offer_control("x" * 200)
    outbox.end_answer()
    assert not overflows
    outbox.offer_update("job", 2, "u" * 20)
    assert overflows == ["overflow"]


def test_control_frames_outside_an_answer_are_bounded() -> None:
    outbox, overflows = bounded(100)
    for _ in range(10):
        outbox.offer_control("x" * 10)
    assert not overflows
    outbox.offer_control("x")
    assert overflows == ["overflow"] and outbox.closed


class Sink:
    """Stands for a connection's socket: takes updates while open, refuses them when not."""

    def __init__(self) -> None:
        self.open = True
        self.written: list[str] = []

    def write_now(self, item: str) -> bool:
        if self.open:
            self.written.append(item)
        return self.open


def test_an_update_is_written_at_once_when_nothing_is_pending() -> None:
    outbox: Outbox[str] = Outbox()
    sink = Sink()
    outbox.write_now = sink.write_now
    assert outbox.offer_update("a", 1, "a1") == 0
    assert sink.written == ["a1"]
    assert len(outbox) == 0
    assert outbox.offer_update("a", 1, "a1 again") == -1  # its seq counts as sent
    assert sink.written == ["a1"]


async def test_a_refused_write_queues_the_update_and_starts_the_writer() -> None:
    outbox: Outbox[str] = Outbox()
    sink = Sink()
    sink.open = False
    notified: list[int] = []
    outbox.write_now = sink.write_now
    outbox.notify = lambda: notified.append(len(outbox))
    assert outbox.offer_update("a", 1, "a1") == 0
    assert notified == [1]
    assert outbox.offer_update("a", 2, "a2") == 1  # conflates while the socket pushes back
    assert await outbox.take() == ["a2"]


async def test_nothing_overtakes_what_is_pending() -> None:
    outbox: Outbox[str] = Outbox()
    sink = Sink()
    outbox.write_now = sink.write_now
    outbox.offer_control("ack")
    assert outbox.offer_update("a", 1, "a1") == 0
    assert sink.written == []
    assert await outbox.take() == ["ack", "a1"]


def test_a_closed_outbox_writes_nothing() -> None:
    outbox: Outbox[str] = Outbox()
    sink = Sink()
    outbox.write_now = sink.write_now
    outbox.close()
    assert outbox.offer_update("a", 1, "a1") == -1
    assert sink.written == []
