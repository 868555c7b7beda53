"""Asynchronous generator hooks and shutdown_asyncgens."""

import asyncio
import gc
import sys
import warnings


def test_shutdown_asyncgens_finalizes(loop):
    events = []

    async def agen():
        try:
            for i in range(10):
                yield i
                await asyncio.sleep(0)
        finally:
            await asyncio.sleep(0)  # finalisation may await
            events.append("finalized")

    g = agen()

    async def main():
        assert await g.__anext__() == 0
        assert await g.__anext__() == 1

    loop.run_until_complete(main())
    assert events == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert events == ["finalized"]
    assert g.ag_frame is None


def test_shutdown_asyncgens_nothing_to_do(loop):
    assert loop.run_until_complete(loop.shutdown_asyncgens()) is None


def test_hooks_installed_only_while_running(loop):
    before = sys.get_asyncgen_hooks()
    seen = []

    async def main():
        seen.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(main())
    hooks = seen[0]
    assert callable(hooks.firstiter) and callable(hooks.finalizer)
    assert hooks != before
    assert sys.get_asyncgen_hooks() == before


def test_garbage_collected_agen_is_closed_by_loop(loop):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append(("finally", asyncio.get_running_loop() is loop))

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        del g
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    # finalizer hook scheduled aclose() on the loop
    assert events == [("finally", True)]


def test_exhausted_agen_not_tracked(loop):
    async def agen():
        yield 1

    async def main():
        return [x async for x in agen()]

    assert loop.run_until_complete(main()) == [1]
    loop.run_until_complete(loop.shutdown_asyncgens())


def test_error_during_shutdown_reported(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def agen():
        try:
            yield 1
        finally:
            raise ZeroDivisionError("in finally")

    g = agen()

    async def start():  # first iteration inside the loop: the hook sees it
        return await g.__anext__()

    loop.run_until_complete(start())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["message"].startswith("an error occurred during closing of asynchronous generator")
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["asyncgen"] is g


def test_agen_started_after_shutdown_warns(loop):
    loop.run_until_complete(loop.shutdown_asyncgens())

    async def agen():
        yield 1

    g = agen()

    async def start():
        return await g.__anext__()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert loop.run_until_complete(start()) == 1
    msgs = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(msgs) == 1
    assert msgs[0].endswith("was scheduled after loop.shutdown_asyncgens() call")
    loop.run_until_complete(g.aclose())


def test_several_agens_closed_concurrently(loop):
    closed = []

    async def agen(k):
        try:
            yield k
        finally:
            await asyncio.sleep(0.01)
            closed.append(k)

    gens = [agen(k) for k in range(5)]

    async def main():
        for g in gens:
            await g.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert sorted(closed) == [0, 1, 2, 3, 4]
