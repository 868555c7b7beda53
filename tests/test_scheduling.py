"""call_soon / call_soon_threadsafe, handles, contexts, futures and tasks.

Timers (call_later / call_at) and the clock are in test_timers.py."""

import asyncio
import contextvars
import gc
import sys
import threading
import time
import weakref

import pytest

var = contextvars.ContextVar("var", default="default")


def run_briefly(loop):
    """Run the loop until the callbacks scheduled so far (and one more
    iteration) have run."""
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_call_soon_fifo_and_args(loop):
    calls = []
    for i in range(10):
        loop.call_soon(calls.append, i)
    loop.call_soon(lambda *a: calls.append(a), 1, "two", None)
    run_briefly(loop)
    assert calls == list(range(10)) + [(1, "two", None)]


def test_call_soon_from_callback_runs_next_iteration(loop):
    calls = []

    def first():
        calls.append("first")
        loop.call_soon(calls.append, "nested")

    loop.call_soon(first)
    loop.call_soon(calls.append, "second")
    loop.stop()  # only one iteration
    loop.run_forever()
    assert calls == ["first", "second"]
    run_briefly(loop)
    assert calls == ["first", "second", "nested"]


def test_handle_cancel(loop):
    calls = []
    h = loop.call_soon(calls.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    h.cancel()  # idempotent
    loop.call_soon(calls.append, 2)
    run_briefly(loop)
    assert calls == [2]


def test_handle_cancel_after_run_is_harmless(loop):
    calls = []
    h = loop.call_soon(calls.append, 1)
    t = loop.call_later(0, calls.append, 2)
    loop.run_until_complete(asyncio.sleep(0.01))
    h.cancel()
    t.cancel()
    assert calls == [1, 2]


def test_handle_repr(loop):
    def some_callback(*args):
        pass

    h = loop.call_soon(some_callback, 1)
    r = repr(h)
    assert r.startswith("<Handle ") and r.endswith(">")
    assert "some_callback(" in r  # (3.13 stopped showing the arguments)
    h.cancel()
    assert repr(h) == "<Handle cancelled>"

    t = loop.call_at(loop.time() + 100, some_callback, 2)
    r = repr(t)
    assert r.startswith("<TimerHandle when=") and "some_callback(" in r
    t.cancel()
    assert repr(t).startswith("<TimerHandle cancelled when=")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Handle.get_context() is new in Python 3.12")
def test_handle_get_context(loop):
    ctx = contextvars.copy_context()
    assert loop.call_soon(print, context=ctx).get_context() is ctx
    assert loop.call_later(1, print, context=ctx).get_context() is ctx
    assert loop.call_soon_threadsafe(print, context=ctx).get_context() is ctx
    assert isinstance(loop.call_soon(print).get_context(), contextvars.Context)


def test_callback_runs_in_copy_of_current_context(loop):
    seen = {}
    token = var.set("at-schedule")
    try:
        loop.call_soon(lambda: seen.setdefault("soon", var.get()))
        loop.call_later(0, lambda: seen.setdefault("later", var.get()))
        loop.call_soon_threadsafe(lambda: seen.setdefault("threadsafe", var.get()))
    finally:
        var.reset(token)
    # each callback gets its own copy: a set() in one is invisible elsewhere
    loop.call_soon(lambda: var.set("changed-in-callback"))
    loop.call_soon(lambda: seen.setdefault("after-set", var.get()))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert seen == {
        "soon": "at-schedule",
        "later": "at-schedule",
        "threadsafe": "at-schedule",
        "after-set": "default",
    }
    assert var.get() == "default"


def test_a_context_that_is_not_a_context_gets_its_run_method_called(loop):
    # The stdlib's Handle._run calls `self._context.run(callback, *args)`, so any object with a
    # `run` method serves as a context, and one without fails at run time, reported to the
    # exception handler with the AttributeError that lookup raises.
    calls, errors = [], []

    class Ctx:
        def run(self, fn, *args):
            calls.append(("run", fn.__name__, args))
            return fn(*args)

    def cb(*args):
        calls.append(("cb", args))

    loop.set_exception_handler(lambda lp, c: errors.append(c))
    loop.call_soon(cb, context=Ctx())
    loop.call_soon(cb, 1, 2, context=Ctx())
    loop.call_later(0, cb, 3, context=Ctx())
    loop.call_at(loop.time(), cb, 4, context=Ctx())
    loop.call_soon_threadsafe(cb, 5, context=Ctx())
    bad = loop.call_soon(cb, 6, context=42)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert sorted(calls[0::2]) == sorted(
        [("run", "cb", ()), ("run", "cb", (1, 2)), ("run", "cb", (3,)), ("run", "cb", (4,)),
         ("run", "cb", (5,))]
    )
    assert all(c == ("cb", r[2]) for r, c in zip(calls[0::2], calls[1::2]))
    assert len(errors) == 1
    assert errors[0]["handle"] is bad
    assert errors[0]["message"].startswith("Exception in callback ")
    exc = errors[0]["exception"]
    assert type(exc) is AttributeError
    assert str(exc) == "'int' object has no attribute 'run'"
    loop.set_exception_handler(None)


def test_explicit_context_is_shared_not_copied(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    seen = []

    def record(tag):
        seen.append((tag, var.get()))
        var.set(f"set-by-{tag}")

    loop.call_soon(record, "soon", context=ctx)
    loop.call_later(0, record, "later", context=ctx)
    loop.call_at(loop.time(), record, "at", context=ctx)
    loop.call_soon_threadsafe(record, "threadsafe", context=ctx)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert sorted(tag for tag, _ in seen) == ["at", "later", "soon", "threadsafe"]
    assert seen[0][1] == "in-ctx"
    for (prev_tag, _), (_, value) in zip(seen, seen[1:]):
        assert value == f"set-by-{prev_tag}"
    assert ctx[var] == f"set-by-{seen[-1][0]}"
    assert var.get() == "default"


def test_call_soon_threadsafe_wakes_idle_loop(loop):
    woke = []

    def other_thread():
        time.sleep(0.05)
        loop.call_soon_threadsafe(lambda: (woke.append(time.monotonic()), loop.stop()))

    guard = loop.call_later(10, loop.stop)
    th = threading.Thread(target=other_thread)
    t0 = time.monotonic()
    th.start()
    loop.run_forever()
    th.join()
    guard.cancel()
    assert woke, "call_soon_threadsafe callback did not run"
    assert woke[0] - t0 < 1.0


def test_call_soon_threadsafe_many_threads(loop):
    calls = []
    n_threads, per_thread = 4, 200

    def producer(k):
        for i in range(per_thread):
            loop.call_soon_threadsafe(calls.append, (k, i))

    async def main():
        threads = [threading.Thread(target=producer, args=(k,)) for k in range(n_threads)]
        for th in threads:
            th.start()
        while len(calls) < n_threads * per_thread:
            await asyncio.sleep(0.005)
        for th in threads:
            th.join()

    loop.run_until_complete(asyncio.wait_for(main(), 10))
    assert len(calls) == n_threads * per_thread
    for k in range(n_threads):  # per-producer FIFO
        assert [i for kk, i in calls if kk == k] == list(range(per_thread))


def test_call_soon_threadsafe_returns_handle(loop):
    calls = []
    h = loop.call_soon_threadsafe(calls.append, 1)
    h.cancel()
    assert h.cancelled()
    run_briefly(loop)
    assert calls == []


def test_create_future_and_task(loop):
    fut = loop.create_future()
    assert asyncio.isfuture(fut)
    assert fut.get_loop() is loop
    assert not fut.done()

    async def coro():
        return await fut

    task = loop.create_task(coro(), name="my-task")
    assert task.get_name() == "my-task"
    assert task.get_loop() is loop
    loop.call_soon(fut.set_result, 17)
    assert loop.run_until_complete(task) == 17


def test_create_task_with_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "task-ctx")

    async def coro():
        return var.get()

    assert loop.run_until_complete(loop.create_task(coro(), context=ctx)) == "task-ctx"
    assert loop.run_until_complete(loop.create_task(coro())) == "default"


def test_task_factory(loop):
    seen = []

    def factory(lp, coro, **kwargs):
        seen.append((lp, kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def coro():
        return asyncio.current_task().get_name()

    assert loop.run_until_complete(loop.create_task(coro(), name="named")) == "named"
    ctx = contextvars.copy_context()
    loop.run_until_complete(loop.create_task(coro(), context=ctx))
    assert seen[0] == (loop, {})
    assert seen[-1] == (loop, {"context": ctx})
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


def test_handles_can_be_weakly_referenced(loop):
    # asyncio.Handle has __weakref__ in its __slots__: code keeps handles in a WeakSet.
    soon = loop.call_soon(lambda: None)
    timer = loop.call_later(3600, lambda: None)
    refs = [weakref.ref(soon), weakref.ref(timer)]
    alive = weakref.WeakSet([soon, timer])
    assert [r() for r in refs] == [soon, timer] and len(alive) == 2
    timer.cancel()
    del soon, timer
    run_briefly(loop)
    gc.collect()
    assert [r() for r in refs] == [None, None] and len(alive) == 0
    # A handle made afterwards (ferroloop recycles handle objects) is not reachable through them.
    fresh = [loop.call_soon(lambda: None) for _ in range(10)]
    assert [r() for r in refs] == [None, None] and len(alive) == 0
    assert all(weakref.ref(h)() is h for h in fresh)
