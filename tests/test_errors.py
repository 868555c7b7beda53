"""Bad inputs and the exception-handler API."""

import asyncio
import gc
import logging
import re
import sys
import traceback

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


def _frame_names(exc):
    return [f.name for f in traceback.extract_tb(exc.__traceback__)]


def test_callback_exception_reaches_the_handler_as_the_exception_being_handled(loop, caplog):
    # The stdlib calls the handler inside Handle._run's `except BaseException as exc:` clause:
    # the exception keeps its traceback (the callback's frames), it is `sys.exc_info()` in the
    # handler, and an error raised by the handler is chained to it.
    seen = []

    def inner():
        raise ValueError("deep")

    def bad_callback():
        inner()

    def handler(lp, ctx):
        exc = ctx["exception"]
        seen.append((sys.exc_info()[1] is exc, _frame_names(exc)))
        raise RuntimeError("handler broke")

    loop.set_exception_handler(handler)
    loop.call_soon(bad_callback)
    loop.call_later(0, bad_callback)
    fut = loop.create_future()
    fut.add_done_callback(lambda f: bad_callback())
    fut.set_result(None)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.run_until_complete(asyncio.sleep(0.01))
    assert len(seen) == 3
    for handled, names in seen:
        assert handled
        # the stdlib's traceback starts at Handle._run, ferroloop's (native) at the callback
        assert names[-2:] == ["bad_callback", "inner"]
    recs = [r for r in caplog.records if r.getMessage().startswith("Unhandled error in exception")]
    assert len(recs) == 3
    for rec in recs:
        exc = rec.exc_info[1]
        assert type(exc) is RuntimeError
        assert type(exc.__context__) is ValueError
        assert _frame_names(exc.__context__)[-1] == "inner"
    assert sys.exc_info() == (None, None, None)


def test_default_handler_logs_the_callbacks_traceback(loop, caplog):
    def inner():
        raise ValueError("deep")

    def bad_callback():
        inner()

    loop.call_soon(bad_callback)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run_briefly(loop)
    (rec,) = [r for r in caplog.records if r.name == "asyncio"]
    assert _frame_names(rec.exc_info[1])[-2:] == ["bad_callback", "inner"]
    text = logging.Formatter().formatException(rec.exc_info)
    assert text.startswith("Traceback (most recent call last):")
    assert 'raise ValueError("deep")' in text


def test_a_transports_fatal_error_reaches_the_handler_as_the_exception_being_handled(loop):
    # _read_ready's `except BaseException as exc: self._fatal_error(exc, ...)`.
    seen = []

    def handler(lp, ctx):
        exc = ctx["exception"]
        seen.append((ctx["message"], sys.exc_info()[1] is exc, _frame_names(exc)[-1:]))

    class Bad(asyncio.Protocol):
        def data_received(self, data):
            raise ZeroDivisionError("in data_received")

    async def main():
        server = await loop.create_server(Bad, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        await reader.read()  # the server's transport closes the connection
        writer.close()
        server.close()
        await server.wait_closed()

    loop.set_exception_handler(handler)
    loop.run_until_complete(main())
    assert seen == [
        ("Fatal error: protocol.data_received() call failed.", True, ["data_received"])
    ]


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
