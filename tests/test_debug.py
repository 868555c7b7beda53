"""Debug mode: flag sources, slow callbacks, coroutine origin tracking, thread checks."""

import asyncio
import logging
import re
import socket
import sys
import threading
import time

import pytest

from conftest import FACTORY_SRC, child_env

# asyncio.constants.DEBUG_STACK_DEPTH
DEBUG_STACK_DEPTH = 10


def test_debug_off_by_default(loop_factory, monkeypatch):
    monkeypatch.delenv("PYTHONASYNCIODEBUG", raising=False)
    lp = loop_factory()
    try:
        assert lp.get_debug() is False
    finally:
        lp.close()


def test_set_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_private_debug_attribute_is_the_flag(loop):
    """``loop._debug`` is what the stdlib's private code reads and assigns: it follows
    ``set_debug``, holds the object assigned (what ``get_debug`` answers), and debug mode is its
    truth value."""
    assert loop._debug is False
    loop.set_debug(True)
    assert loop._debug is True
    loop._debug = 0
    assert loop.get_debug() == 0 and type(loop.get_debug()) is int and type(loop._debug) is int
    loop.set_debug(1)
    assert type(loop.get_debug()) is int and loop._debug == 1
    marker = ["on"]
    loop._debug = marker
    assert loop.get_debug() is marker
    # Debug mode follows its truth value: a non-threadsafe call from another thread is refused.
    import threading

    errors = []

    def other_thread():
        try:
            loop.call_soon(lambda: None)
        except RuntimeError as e:
            errors.append(e)

    async def main():
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()

    loop.run_until_complete(main())
    assert len(errors) == 1
    loop._debug = []
    assert loop.get_debug() == [] and not loop.get_debug()
    loop.set_debug(False)
    assert loop._debug is False


def test_private_debug_attribute_can_be_deleted(loop):
    """As on the stock loop: after ``del loop._debug``, reading it (and ``get_debug()``) raises
    ``AttributeError``, and so does a second ``del``; assigning brings it back."""
    del loop._debug
    with pytest.raises(AttributeError, match="_debug"):
        loop._debug
    with pytest.raises(AttributeError, match="_debug"):
        loop.get_debug()
    with pytest.raises(AttributeError, match="_debug"):
        del loop._debug
    loop._debug = False  # the fixture's close() reads it
    assert loop.get_debug() is False


def test_env_var_enables_debug_at_construction(loop_factory, monkeypatch):
    monkeypatch.setenv("PYTHONASYNCIODEBUG", "1")
    lp = loop_factory()
    monkeypatch.delenv("PYTHONASYNCIODEBUG")
    try:
        assert lp.get_debug() is True
    finally:
        lp.close()
    lp = loop_factory()
    try:
        assert lp.get_debug() is False
    finally:
        lp.close()


@pytest.mark.parametrize(
    "pyflags, env, expected",
    [
        (("-X", "dev"), {}, "True"),
        ((), {"PYTHONASYNCIODEBUG": "1"}, "True"),
        ((), {}, "False"),
        # -E makes the interpreter ignore PYTHONASYNCIODEBUG
        (("-E",), {"PYTHONASYNCIODEBUG": "1"}, "False"),
    ],
    ids=["dev-mode", "env", "default", "env-ignored"],
)
def test_debug_flag_in_fresh_interpreter(loop_name, run_py, pyflags, env, expected):
    src = FACTORY_SRC[loop_name] + "lp = loop_factory(); print(lp.get_debug()); lp.close()\n"
    res = run_py(src, pyflags=pyflags, env=child_env(**env))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == expected


def test_slow_callback_duration_default(loop):
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.25
    assert loop.slow_callback_duration == 0.25


def test_slow_callback_warning(loop, caplog):
    def slow_one():
        time.sleep(0.06)

    loop.set_debug(True)
    loop.slow_callback_duration = 0.03
    loop.call_soon(slow_one)
    loop.call_soon(lambda: None)  # fast: not reported
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(loop.stop)
        loop.run_forever()
    recs = [r for r in caplog.records if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert len(recs) == 1, [r.getMessage() for r in recs]
    msg = recs[0].getMessage()
    m = re.fullmatch(r"Executing <Handle .*slow_one\(\).*> took (\d+\.\d{3}) seconds", msg)
    assert m, msg
    assert 0.06 <= float(m.group(1)) < 1.0


def test_slow_timer_and_reader_callbacks_reported(loop, caplog):
    def slow_timer():
        time.sleep(0.03)

    def slow_reader():
        a.recv(10)
        time.sleep(0.03)
        loop.remove_reader(a)

    a, b = socket.socketpair()
    try:
        loop.set_debug(True)
        loop.slow_callback_duration = 0.02
        loop.call_later(0.001, slow_timer)
        loop.add_reader(a, slow_reader)
        b.send(b"x")
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.run_until_complete(asyncio.sleep(0.1))
    finally:
        a.close()
        b.close()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any(re.fullmatch(r"Executing <TimerHandle when=\S+ .*slow_timer\(\).*> took \d+\.\d{3} seconds", m)
               for m in msgs), msgs
    assert any(re.fullmatch(r"Executing <Handle .*slow_reader\(\).*> took \d+\.\d{3} seconds", m)
               for m in msgs), msgs


def test_slow_task_step_warning_names_task(loop, caplog):
    async def slow_coro():
        time.sleep(0.05)

    loop.set_debug(True)
    loop.slow_callback_duration = 0.02
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(slow_coro())
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any(m.startswith("Executing <Task") and "slow_coro()" in m
               and re.search(r"took \d+\.\d{3} seconds$", m) for m in msgs), msgs


def test_no_slow_callback_warning_without_debug(loop, caplog):
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.03)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert [r for r in caplog.records if "Executing" in r.getMessage()] == []


def test_coroutine_origin_tracking(loop):
    assert sys.get_coroutine_origin_tracking_depth() == 0
    seen = []

    async def inner():
        pass

    async def main():
        seen.append(sys.get_coroutine_origin_tracking_depth())
        c = inner()
        seen.append(c.cr_origin is not None)
        await c

    loop.run_until_complete(main())
    assert seen == [0, False]
    assert sys.get_coroutine_origin_tracking_depth() == 0

    seen.clear()
    loop.set_debug(True)
    loop.run_until_complete(main())
    assert seen == [DEBUG_STACK_DEPTH, True]
    assert sys.get_coroutine_origin_tracking_depth() == 0  # restored


def test_origin_tracking_restores_previous_depth(loop):
    sys.set_coroutine_origin_tracking_depth(3)
    try:
        seen = []

        async def main():
            seen.append(sys.get_coroutine_origin_tracking_depth())

        loop.set_debug(True)
        loop.run_until_complete(main())
        assert seen == [DEBUG_STACK_DEPTH]
        assert sys.get_coroutine_origin_tracking_depth() == 3
    finally:
        sys.set_coroutine_origin_tracking_depth(0)


def test_set_debug_while_running_toggles_tracking(loop):
    seen = []

    async def main():
        seen.append(sys.get_coroutine_origin_tracking_depth())
        loop.set_debug(True)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(sys.get_coroutine_origin_tracking_depth())

    loop.run_until_complete(main())
    assert seen == [0, DEBUG_STACK_DEPTH]
    assert sys.get_coroutine_origin_tracking_depth() == 0


def _call_from_other_thread(loop, fn):
    """Run fn() in another thread while `loop` runs; return the exception."""
    errors = []

    def in_thread():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        else:
            errors.append(None)

    def cb():
        th = threading.Thread(target=in_thread)
        th.start()
        th.join()
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    return errors[0]


NON_THREADSAFE_MSG = "Non-thread-safe operation invoked on an event loop other than the current one"


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at", "create_task"])
def test_debug_detects_calls_from_other_thread(loop, method):
    loop.set_debug(True)
    coros = []

    def call():
        if method == "call_soon":
            loop.call_soon(print)
        elif method == "call_later":
            loop.call_later(1, print)
        elif method == "call_at":
            loop.call_at(loop.time() + 1, print)
        else:
            coro = asyncio.sleep(0)
            coros.append(coro)
            loop.create_task(coro)

    err = _call_from_other_thread(loop, call)
    for c in coros:
        c.close()
    assert isinstance(err, RuntimeError)
    assert str(err) == NON_THREADSAFE_MSG


def test_debug_allows_threadsafe_from_other_thread(loop):
    loop.set_debug(True)
    calls = []
    err = _call_from_other_thread(loop, lambda: loop.call_soon_threadsafe(calls.append, 1))
    assert err is None
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [1]


def test_debug_thread_check_only_while_running(loop):
    loop.set_debug(True)
    errors = []

    def other():
        try:
            h = loop.call_soon(print)  # loop not running: no thread check
            h.cancel()
        except RuntimeError as e:
            errors.append(e)

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert errors == []


def test_debug_default_handler_shows_source_traceback(loop, caplog):
    loop.set_debug(True)

    def bad_callback():
        raise ValueError("x")

    loop.call_soon(bad_callback)  # this line is reported
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(loop.stop)
        loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(msgs) == 1
    assert "Object created at (most recent call last):" in msgs[0]
    assert "test_debug_default_handler_shows_source_traceback" in msgs[0]
