"""A settlement retried while its first write is still waiting for JetStream waits for that write's outcome."""

from __future__ import annotations

import asyncio

from services.billing.inflight import InFlight


async def test_a_retry_waits_for_the_write_in_flight_then_sees_the_ledger_after_it() -> None:
    inflight = InFlight()
    order: list[str] = []
    release = asyncio.Event()

    async def view() -> None:
        order.append("view")

    async def first_write() -> None:
        await inflight.settle(["r1", "r2"], view)
        with inflight.writing(["r1", "r2"]):
            order.append("write 1 starts")
            await release.wait()
            order.append("write 1 ends")

    async def retry() -> None:
        await inflight.settle(["r2", "r3"], view)  # overlaps the first write on r2
        order.append("retry decides")

    first = asyncio.create_task(first_write())
    await asyncio.sleep(0)
    second = asyncio.create_task(retry())
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["view", "write 1 starts"] and len(inflight) == 2  # the retry is still waiting
    release.set()
    await asyncio.gather(first, second)
    assert order == ["view", "write 1 starts", "write 1 ends", "view", "retry decides"]
    assert len(inflight) == 0


async def test_a_failed_write_frees_its_ids_and_unrelated_ids_never_wait() -> None:
    inflight = InFlight()
    views = 0

    async def view() -> None:
        nonlocal views
        views += 1

    try:
        with inflight.writing(["a"]):
            await asyncio.wait_for(inflight.settle(["b"], view), 1)  # another request: no waiting at all
            raise TimeoutError("no ack")
    except TimeoutError:
        pass
    await asyncio.wait_for(inflight.settle(["a"], view), 1)
    assert views == 2 and len(inflight) == 0


async def test_a_claim_taken_while_the_view_catches_up_is_waited_for_too() -> None:
    inflight = InFlight()
    slow = asyncio.Event()
    release = asyncio.Event()
    views = 0

    async def view() -> None:
        nonlocal views
        views += 1
        if views == 1:
            await slow.wait()

    async def writer() -> None:
        with inflight.writing(["x"]):
            slow.set()  # claims "x" while the other handler's view is still catching up
            await release.wait()

    waiting = asyncio.create_task(inflight.settle(["x"], view))
    await asyncio.sleep(0)
    task = asyncio.create_task(writer())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    release.set()
    await asyncio.gather(waiting, task)
    assert views == 2
