"""Bad inputs and the exception-handler API."""

import asyncio
import gc
import logging
import re

import pytest


async def a_coroutine_function():
    pass


def run_briefly(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_none_delay_and_when(loop):
    with pytest.raises(TypeError) as ei:
        loop.call_later(None, print)
    assert str(ei.value) == "delay must not be None"
    with pytest.raises(TypeError) as ei:
        loop.call_at(None, print)
    assert str(ei.value) == "when cannot be None"


@pytest.mark.parametrize(
    "method, schedule, name",
    [
        ("call_soon", lambda lp, cb: lp.call_soon(cb), "call_soon"),
        # the stdlib's call_later delegates to call_at, hence the name
        ("call_later", lambda lp, cb: lp.call_later(1, cb), "call_at"),
        ("call_at", lambda lp, cb: lp.call_at(lp.time() + 1, cb), "call_at"),
        ("call_soon_threadsafe", lambda lp, cb: lp.call_soon_threadsafe(cb), "call_soon_threadsafe"),
    ],
)
def test_debug_rejects_coroutines_and_non_callables(loop, method, schedule, name):
    loop.set_debug(True)
    coro = a_coroutine_function()
    for bad in (a_coroutine_function, coro):
        with pytest.raises(TypeError) as ei:
            schedule(loop, bad)
        assert str(ei.value) == f"coroutines cannot be used with {name}()"
    coro.close()
    for bad in (1, "text", None):
        with pytest.raises(TypeError) as ei:
            schedule(loop, bad)
        assert str(ei.value) == f"a callable object was expected by {name}(), got {bad!r}"


def test_non_callable_without_debug_fails_when_called(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    h = loop.call_soon(1)  # accepted: only debug mode checks eagerly
    run_briefly(loop)
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], TypeError)
    assert "'int' object is not callable" in str(contexts[0]["exception"])
    assert contexts[0]["handle"] is h


def test_set_exception_handler_validation(loop):
    assert loop.get_exception_handler() is None
    with pytest.raises(TypeError) as ei:
        loop.set_exception_handler(1)
    assert str(ei.value) == "A callable object or None is expected, got 1"

    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_set_task_factory_validation(loop):
    with pytest.raises(TypeError) as ei:
        loop.set_task_factory(1)
    assert str(ei.value) == "task factory must be a callable or None"


def test_create_task_non_coroutine(loop):
    with pytest.raises(TypeError, match="a coroutine was expected, got 1"):
        loop.create_task(1)


def test_callback_exception_goes_to_handler(loop):
    contexts = []

    def handler(lp, ctx):
        contexts.append((lp, ctx))

    def bad_callback():
        raise ZeroDivisionError("boom")

    loop.set_exception_handler(handler)
    h = loop.call_soon(bad_callback)
    loop.call_later(0, bad_callback)
    calls = []
    loop.call_soon(calls.append, "still runs")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == ["still runs"]
    assert len(contexts) == 2
    lp, ctx = contexts[0]
    assert lp is loop
    assert ctx["message"].startswith("Exception in callback ")
    assert "bad_callback" in ctx["message"]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["handle"] is h
    assert contexts[1][1]["message"].startswith("Exception in callback ")
    assert "bad_callback" in contexts[1][1]["message"]


def test_default_handler_logs_callback_exception(loop, caplog):
    def bad_callback():
        raise ZeroDivisionError("boom")

    loop.call_soon(bad_callback)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run_briefly(loop)
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    assert rec.getMessage().startswith("Exception in callback ")
    assert "bad_callback" in rec.getMessage()
    assert rec.exc_info[0] is ZeroDivisionError


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_propagate(loop, exc):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    calls = []

    def raiser():
        raise exc()

    loop.call_soon(raiser)
    loop.call_soon(calls.append, "after")
    with pytest.raises(exc):
        loop.run_forever()
    assert contexts == []
    assert not loop.is_running()
    assert calls == []  # the rest of the iteration stays queued...
    run_briefly(loop)
    assert calls == ["after"]  # ...and runs on the next run


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_from_task_propagate(loop, exc):
    async def main():
        await asyncio.sleep(0)
        raise exc()

    with pytest.raises(exc):
        loop.run_until_complete(main())
    assert not loop.is_running()


def test_call_exception_handler_custom(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append((lp, ctx)))
    ctx = {"message": "hello", "extra": 1}
    loop.call_exception_handler(ctx)
    assert seen == [(loop, ctx)]


def test_call_exception_handler_default(loop, caplog):
    exc = ValueError("inner")
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "custom message", "exception": exc,
                                     "zeta": 2, "alpha": "a"})
        loop.call_exception_handler({"extra": 1})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 2
    assert recs[0].getMessage() == "custom message\nalpha: 'a'\nzeta: 2"
    assert recs[0].exc_info[1] is exc
    assert recs[1].getMessage() == "Unhandled exception in event loop\nextra: 1"
    assert not recs[1].exc_info


def test_default_exception_handler_direct(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "direct", "key": [1, 2]})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert [r.getMessage() for r in recs] == ["direct\nkey: [1, 2]"]


def test_custom_handler_can_defer_to_default(loop, caplog):
    def handler(lp, ctx):
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "deferred"})
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == ["deferred"]


def test_failing_custom_handler_falls_back_to_default(loop, caplog):
    def handler(lp, ctx):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "original"})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 1
    msg = recs[0].getMessage()
    assert msg.startswith("Unhandled error in exception handler\n")
    assert re.search(r"context: \{'message': 'original'\}", msg)
    assert isinstance(recs[0].exc_info[1], RuntimeError)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_handler_propagates(loop, exc):
    def handler(lp, ctx):
        raise exc()

    loop.set_exception_handler(handler)
    with pytest.raises(exc):
        loop.call_exception_handler({"message": "x"})


def test_unretrieved_task_exception_reported(loop_factory):
    contexts = []
    lp = loop_factory()
    lp.set_exception_handler(lambda l, ctx: contexts.append(ctx))

    async def failing():
        raise ValueError("never retrieved")

    task = lp.create_task(failing())
    lp.run_until_complete(asyncio.sleep(0.01))
    assert task.done()
    del task
    gc.collect()
    lp.close()
    assert len(contexts) == 1
    assert contexts[0]["message"] == "Task exception was never retrieved"
    assert isinstance(contexts[0]["exception"], ValueError)


def test_run_until_complete_future_of_other_loop(loop, loop_factory):
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError) as ei:
            loop.run_until_complete(fut)
        assert str(ei.value) == (
            "The future belongs to a different loop than the one specified as the loop argument")
    finally:
        other.close()


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_watching_a_closed_fd_is_the_stdlib_oserror(loop, method):
    import errno
    import os

    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as info:
        getattr(loop, method)(r, lambda: None)
    assert info.value.errno == errno.EBADF
    assert str(info.value) == f"[Errno {errno.EBADF}] {os.strerror(errno.EBADF)}"
    assert not getattr(loop, method.replace("add", "remove"))(r)
