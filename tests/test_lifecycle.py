"""run_forever / run_until_complete / stop / close: states and error messages;
ResourceWarning for unclosed loops; ferroloop.Loop and ferroloop.EventLoopPolicy."""

import asyncio
import gc
import sys
import threading
import warnings

import pytest


def test_is_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)


def test_ferroloop_types(ferroloop_mod):
    loop = ferroloop_mod.new_event_loop()
    try:
        assert isinstance(loop, ferroloop_mod.Loop)
        assert issubclass(ferroloop_mod.Loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_initial_state(loop):
    assert not loop.is_running()
    assert not loop.is_closed()
    assert loop.get_debug() is False


def test_run_until_complete_result_and_state(loop):
    states = []

    async def main():
        states.append((loop.is_running(), asyncio.get_running_loop() is loop,
                       asyncio.get_event_loop() is loop))
        await asyncio.sleep(0)
        return "result"

    assert loop.run_until_complete(main()) == "result"
    assert states == [(True, True, True)]
    assert not loop.is_running()
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


def test_run_until_complete_exception(loop):
    async def main():
        await asyncio.sleep(0)
        raise ValueError("spam")

    with pytest.raises(ValueError, match="spam"):
        loop.run_until_complete(main())
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, 5)
    assert loop.run_until_complete(fut) == 5


def test_run_until_complete_not_awaitable(loop):
    with pytest.raises(TypeError, match="An asyncio.Future, a coroutine or an awaitable is required"):
        loop.run_until_complete(42)


def test_run_until_complete_stopped_early(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError) as ei:
        loop.run_until_complete(fut)
    assert str(ei.value) == "Event loop stopped before Future completed."
    assert not loop.is_running()


def test_run_forever_while_running(loop):
    errors = []

    def cb():
        # run_forever last: CPython 3.13.0's run_forever() resets the running
        # state of the loop when it refuses to run (fixed in later releases)
        for fn in (lambda: loop.run_until_complete(fut), loop.run_forever):
            try:
                fn()
            except RuntimeError as e:
                errors.append((str(e), loop.is_running()))
        loop.stop()

    fut = loop.create_future()
    loop.call_soon(cb)
    loop.run_forever()
    assert errors[0] == ("This event loop is already running", True)
    assert errors[1][0] == "This event loop is already running"
    assert not loop.is_running()


@pytest.mark.parametrize("outer", ["same-kind", "stock"])
def test_run_while_another_loop_runs(loop_factory, outer):
    outer_loop = (loop_factory if outer == "same-kind" else asyncio.new_event_loop)()
    inner = loop_factory()
    errors = []

    def cb():
        try:
            inner.run_until_complete(inner.create_future())
        except RuntimeError as e:
            errors.append(str(e))
        try:  # last: see test_run_forever_while_running
            inner.run_forever()
        except RuntimeError as e:
            errors.append(str(e))
        outer_loop.stop()

    try:
        outer_loop.call_soon(cb)
        outer_loop.run_forever()
    finally:
        outer_loop.close()
        inner.close()
    assert errors == ["Cannot run the event loop while another loop is running"] * 2


def test_run_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.run_forever()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.run_until_complete(coro)
    coro.close()


def test_close_running_loop(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as e:
            errors.append(str(e))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_close_is_idempotent(loop):
    loop.close()
    assert loop.is_closed()
    loop.close()
    assert loop.is_closed()
    assert not loop.is_running()


def test_stop_before_run_runs_one_iteration(loop):
    calls = []

    def first():
        calls.append("first")
        loop.call_soon(calls.append, "second")

    loop.stop()
    loop.call_soon(first)
    loop.run_forever()  # must return after a single iteration
    assert calls == ["first"]
    assert not loop.is_running()
    loop.stop()
    loop.run_forever()
    assert calls == ["first", "second"]


def test_stop_twice_and_stop_idle(loop):
    loop.stop()
    loop.stop()
    loop.run_forever()
    # the stop request was consumed: the next run waits for a new stop()
    calls = []
    loop.call_later(0.02, lambda: (calls.append("stopped"), loop.stop()))
    loop.run_forever()
    assert calls == ["stopped"]


def test_stop_from_callback_finishes_iteration(loop):
    calls = []

    def stopper():
        calls.append("stopper")
        loop.stop()
        loop.stop()
        loop.call_soon(calls.append, "next-iteration")

    loop.call_soon(stopper)
    loop.call_soon(calls.append, "same-iteration")
    loop.run_forever()
    assert calls == ["stopper", "same-iteration"]


def test_stop_on_closed_loop(loop):
    loop.close()
    loop.stop()  # no error, like the stdlib
    assert loop.is_closed()


def test_run_after_keyboard_interrupt(loop):
    def boom():
        raise KeyboardInterrupt

    loop.call_soon(boom)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    assert loop.run_until_complete(asyncio.sleep(0, 3)) == 3


def test_running_loop_and_hooks_restored(loop):
    hooks_before = sys.get_asyncgen_hooks()
    inside = []

    async def main():
        inside.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(main())
    assert inside[0].firstiter is not None and inside[0].finalizer is not None
    assert sys.get_asyncgen_hooks() == hooks_before
    assert asyncio._get_running_loop() is None


def test_run_in_other_thread(loop_factory):
    results = []

    def worker():
        lp = loop_factory()
        try:
            async def main():
                return (threading.get_ident(), asyncio.get_running_loop() is lp)

            results.append(lp.run_until_complete(main()))
        finally:
            lp.close()

    th = threading.Thread(target=worker)
    th.start()
    th.join(10)
    assert results and results[0] == (th.ident, True)


def test_unclosed_loop_resource_warning(loop_factory):
    lp = loop_factory()
    lp.run_until_complete(asyncio.sleep(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del lp
        gc.collect()
    msgs = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert any(m.startswith("unclosed event loop") for m in msgs), msgs
    # the leak check then verifies the loop's resources were released


def test_closed_loop_no_resource_warning(loop_factory):
    lp = loop_factory()
    lp.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del lp
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_closed_loop_rejects_scheduling(loop):
    loop.close()
    for fn in (
        lambda: loop.call_soon(print),
        lambda: loop.call_later(1, print),
        lambda: loop.call_at(loop.time() + 1, print),
        lambda: loop.call_soon_threadsafe(print),
        lambda: loop.run_in_executor(None, print),
    ):
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            fn()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.create_task(coro)
    coro.close()


def test_close_discards_pending_callbacks(loop):
    calls = []
    loop.call_soon(calls.append, 1)
    loop.call_later(0, calls.append, 2)
    loop.close()
    assert calls == []


# -- ferroloop.EventLoopPolicy ---------------------------------------------------


def test_ferroloop_event_loop_policy(ferroloop_mod):
    policy = ferroloop_mod.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    lp = policy.new_event_loop()
    try:
        assert isinstance(lp, ferroloop_mod.Loop)
    finally:
        lp.close()
    asyncio.set_event_loop_policy(policy)
    try:
        lp = asyncio.new_event_loop()
        assert isinstance(lp, ferroloop_mod.Loop)
        lp.close()

        async def main():
            return type(asyncio.get_running_loop())

        assert issubclass(asyncio.run(main()), ferroloop_mod.Loop)
    finally:
        asyncio.set_event_loop_policy(None)
        asyncio.set_event_loop(None)
