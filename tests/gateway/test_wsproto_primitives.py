"""The lean queue and flag that replace uvicorn's per-connection asyncio.Queue and Event."""

from __future__ import annotations

import asyncio

import pytest

from progress_gateway.wsproto import ReceiveQueue, WritableFlag


async def test_queue_hands_items_over_in_order_and_wakes_the_reader() -> None:
    queue = ReceiveQueue()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert await reader == "a"
    assert queue.qsize() == 1
    assert await queue.get() == "b"
    assert queue.empty()


async def test_a_cancelled_read_loses_nothing() -> None:
    queue = ReceiveQueue()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await queue.get()
    queue.put_nowait("kept")
    assert await queue.get() == "kept"


async def test_a_second_concurrent_reader_is_refused() -> None:
    queue = ReceiveQueue()
    first = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one task at a time"):
        await queue.get()
    queue.put_nowait("x")
    assert await first == "x"


async def test_flag_blocks_waiters_while_cleared_and_releases_all_on_set() -> None:
    flag = WritableFlag()
    assert flag.is_set()
    await flag.wait()  # set: returns at once
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters)
    flag.set()
    await asyncio.gather(*waiters)


async def test_a_cancelled_waiter_does_not_linger() -> None:
    flag = WritableFlag()
    flag.clear()
    waiter = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert flag._waiters == []
    flag.set()
    assert flag.is_set()
