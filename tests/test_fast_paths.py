"""The scheduling fast paths behave as the slow ones did (issue #10, item 4).

- ``call_soon`` / ``call_soon_threadsafe`` are raw vectorcall entries (fastcall.rs): arguments,
  the ``context=`` keyword and every argument error as before.
- Handles are pooled (pool.rs): a recycled handle is a new object in every observable way, and
  a handle someone still holds is never recycled.
- A handle's arguments are held without a tuple when there are at most two (call_args.rs):
  ``_args``, the call, the repr, the error report and the collector see them as before.
- ``create_future`` / ``create_task`` import their modules once but still read the class at each
  call, so patching ``asyncio.futures.Future`` works as on the stock loop.
- ``create_task`` is a raw vectorcall entry too (fastcall.rs): ``coro`` with ``name=`` and
  ``context=`` is parsed there, any other call by the full parser; the C ``Task`` is called with
  one kept ``{'loop': self}`` when ``name`` and ``context`` are both ``None``.

The tests run on both loops (the ``loop`` fixture), so the stock loop checks the expectations.
"""

import asyncio
import contextvars
import gc
import sys
import threading
import warnings
import weakref

import pytest

VAR = contextvars.ContextVar("VAR", default="unset")


def _one_turn(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_call_soon_arguments_and_context(loop):
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in ctx")
    loop.call_soon(lambda *a: seen.append(("pos", a, VAR.get())), 1, 2, 3)
    loop.call_soon(lambda: seen.append(("kw", (), VAR.get())), context=ctx)
    loop.call_soon(lambda *a: seen.append(("both", a, VAR.get())), "x", context=ctx)
    loop.call_soon(lambda: seen.append(("none", (), VAR.get())), context=None)
    _one_turn(loop)
    assert seen == [
        ("pos", (1, 2, 3), "unset"),
        ("kw", (), "in ctx"),
        ("both", ("x",), "in ctx"),
        ("none", (), "unset"),
    ]


def test_call_soon_context_keyword_by_value(loop):
    # The keyword name `context` as a string that is not the interned one (built at run time), as
    # the C Task passes its own static string: recognised by value, then by identity; a name
    # spelled differently is still refused.
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in ctx")
    for _ in range(3):
        name = "".join(["con", "text"])
        loop.call_soon(lambda: seen.append(VAR.get()), **{name: ctx})
    with pytest.raises(TypeError, match="unexpected keyword argument 'contexts'"):
        loop.call_soon(print, **{"".join(["con", "texts"]): ctx})
    _one_turn(loop)
    assert seen == ["in ctx"] * 3


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_call_soon_argument_errors(loop, method):
    fn = getattr(loop, method)
    with pytest.raises(TypeError, match="callback"):
        fn()
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        fn(print, bogus=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        fn(print, context=None, bogus=1)
    with pytest.raises(TypeError, match="multiple values for argument 'callback'"):
        fn(print, **{"context": None, "callback": print})
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'callback'"):
        fn(context=None)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        fn(callback=print, bogus=1)
    # Nothing was scheduled by the failed calls.
    assert not [h for h in getattr(loop, "_ready", []) if not h.cancelled()]


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_call_soon_callback_by_keyword(loop, method):
    # `callback` is an ordinary parameter of the stdlib's call_soon(self, callback, *args,
    # context=None): it may be passed by keyword, with or without `context`.
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in ctx")
    fn = getattr(loop, method)
    h1 = fn(callback=lambda: seen.append(("kw", VAR.get())))
    h2 = fn(callback=lambda: seen.append(("kw+ctx", VAR.get())), context=ctx)
    h3 = fn(context=ctx, callback=lambda: seen.append(("ctx+kw", VAR.get())))
    assert [h.cancelled() for h in (h1, h2, h3)] == [False] * 3
    _one_turn(loop)
    assert seen == [("kw", "unset"), ("kw+ctx", "in ctx"), ("ctx+kw", "in ctx")]


def test_call_soon_each_handle_gets_its_own_context_copy(loop):
    seen = []

    def setter(v):
        VAR.set(v)
        seen.append(VAR.get())

    VAR.set("outer")
    try:
        for i in range(3):
            loop.call_soon(setter, i)
        loop.call_soon(lambda: seen.append(VAR.get()))
        _one_turn(loop)
    finally:
        VAR.set("unset")
    assert seen == [0, 1, 2, "outer"]


def test_call_soon_threadsafe_wakes_a_waiting_loop(loop):
    got = []

    def producer():
        for i in range(1000):
            loop.call_soon_threadsafe(got.append, i)
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=producer)
    loop.call_soon(th.start)
    loop.run_forever()
    th.join()
    assert got == list(range(1000))


def test_recycled_handles_are_fresh_and_held_handles_intact(loop):
    kept = [loop.call_soon(print, i) for i in range(5)]
    for h in kept:
        h.cancel()
    # Many handles created and released: the pool recycles their memory.
    for _ in range(5):
        for i in range(3000):
            loop.call_soon(int, i)
        timer = loop.call_later(3600, int)
        timer.cancel()
        _one_turn(loop)
    assert all(h.cancelled() for h in kept)
    fresh = loop.call_soon(str, "a", "b")
    assert not fresh.cancelled()
    assert fresh._args == ("a", "b")
    assert fresh._callback is str
    assert all(h is not fresh for h in kept)
    fresh.cancel()
    t = loop.call_later(10, str)
    assert not t.cancelled() and t.when() > loop.time()
    t.cancel()
    _one_turn(loop)


def test_cycle_through_a_run_handle_is_collected(loop):
    class Owner:
        def cb(self):
            pass

    # Recycle first, so that the handles below come from the pool on ferroloop.
    for i in range(100):
        loop.call_soon(int, i)
        loop.call_later(0, int, i)
    _one_turn(loop)
    _one_turn(loop)

    o = Owner()
    o.handle = loop.call_soon(o.cb)      # o -> handle -> bound method -> o
    o.timer = loop.call_later(0, o.cb)   # the same through a timer
    ref = weakref.ref(o)
    _one_turn(loop)
    _one_turn(loop)
    assert o.handle._callback == o.cb and o.timer._callback == o.cb
    del o
    gc.collect()
    assert ref() is None


POOL_CAPACITY = 262_144  # pool.rs, CAPACITY (checked against the build below)


def test_more_pending_handles_than_the_pool_keeps(loop):
    """More handles pending at once than the handle pool keeps (262144 per type, pool.rs): the
    ones beyond it are allocated and freed normally; every callback runs once, in order, and
    the handles made afterwards (recycled) are fresh."""
    n = POOL_CAPACITY + 4000
    for _ in range(2):                   # the second time, the pool starts full
        got = []
        handles = [loop.call_soon(got.append, i) for i in range(n)]
        timers = [loop.call_later(0, got.append, -1) for _ in range(100)]
        _one_turn(loop)
        _one_turn(loop)
        assert got[:n] == list(range(n)) and got[n:] == [-1] * 100
        assert handles[-1]._args == (n - 1,) and not handles[0].cancelled()
        del handles, timers
    h = loop.call_soon(str, "x")
    assert h._args == ("x",) and h._callback is str and not h.cancelled()
    h.cancel()


def test_ferroloop_a_bursts_pooled_handles_go_back_when_the_loop_waits(ferroloop_mod):
    """The pool keeps what a burst released while the loop is busy, and gives back what is
    above KEEP, TRIM_STEP objects per wait that may block (pool.rs)."""
    from ferroloop import _native

    _, _, capacity, keep, step = _native._handle_pools()
    assert capacity == POOL_CAPACITY and keep < capacity and step > 0
    pooled = lambda: _native._handle_pools()[0]  # noqa: E731
    loop = ferroloop_mod.new_event_loop()
    try:
        n = keep + 5 * step
        for _ in range(n):
            loop.call_soon(int)
        _one_turn(loop)                  # they ran: back in the pool (with what was there)
        full = pooled()
        assert full >= n
        for _ in range(20):              # busy turns (nothing waits): all are kept
            _one_turn(loop)
        assert pooled() >= full - 100

        async def idle(waits):
            for _ in range(waits):
                await asyncio.sleep(0.001)

        loop.run_until_complete(idle(2))  # at least 2 waits that may block: 2 steps released
        after_two = pooled()
        assert after_two <= full + 100 - 2 * step, (full, after_two)
        # The rest, down to KEEP, and no further.
        loop.run_until_complete(idle((after_two - keep) // step + 5))
        assert keep - 100 <= pooled() <= keep + 100, (keep, pooled())
        loop.run_until_complete(idle(10))
        assert keep - 100 <= pooled() <= keep + 100, (keep, pooled())
    finally:
        loop.close()


def test_ferroloop_closing_a_loop_gives_back_what_a_burst_left_in_the_pool(ferroloop_mod):
    """A closed loop makes no more waits that would trim the process's pools: close() itself
    gives back what is above KEEP, of the handles that ran and of those it drops (pool.rs)."""
    from ferroloop import _native

    _, _, _, keep, _ = _native._handle_pools()
    pooled = lambda: _native._handle_pools()[:2]  # noqa: E731
    loop = ferroloop_mod.new_event_loop()
    n = keep + 20_000
    for _ in range(n):
        loop.call_soon(int)
    _one_turn(loop)                      # they ran: back in the pool, above KEEP
    assert pooled()[0] >= n, pooled()
    for _ in range(n):                   # as many timers, dropped pending by close()
        loop.call_later(3600, int)
    for _ in range(n // 2):              # and ready handles (from the pool), dropped too
        loop.call_soon(int)
    loop.close()
    handles, timers = pooled()
    assert keep - 100 <= handles <= keep + 100, (keep, handles)
    assert keep - 100 <= timers <= keep + 100, (keep, timers)
    # The next loop is served from what was kept.
    loop = ferroloop_mod.new_event_loop()
    try:
        for _ in range(1000):
            loop.call_soon(int)
        assert pooled()[0] <= handles - 1000 + 10
    finally:
        loop.close()


def _shown(args, loop):
    """The arguments as the stdlib's callback formatting shows them: 3.13 shows them only in
    debug mode (they may hold secrets)."""
    if sys.version_info >= (3, 13) and not loop.get_debug():
        return ""
    return ", ".join(map(repr, args))


@pytest.mark.parametrize("args", [(), (1,), (1, "two"), (1, "two", None), (None, None, 3, 4)])
def test_handle_args_as_the_stdlibs(loop, args):
    got = []

    def cb(*a):
        got.append(a)

    h = loop.call_soon(cb, *args)
    t = loop.call_soon_threadsafe(cb, *args)
    for handle in (h, t):
        assert handle._args == args and type(handle._args) is tuple
        assert handle._args is handle._args          # one object, read after read
    assert f"cb({_shown(args, loop)})" in repr(h)
    loop.set_debug(True)
    assert f"cb({', '.join(map(repr, args))})" in repr(h)   # every version shows them in debug
    loop.set_debug(False)
    _one_turn(loop)
    assert got == [args, args]
    assert h._args == args                            # kept after the run, as the stdlib's
    h2 = loop.call_soon(cb, *args)
    h2.cancel()
    assert h2._args is None and h2._callback is None  # dropped on cancel
    _one_turn(loop)
    assert got == [args, args]


@pytest.mark.parametrize("nargs", [0, 1, 2, 3])
def test_handle_args_in_error_report_and_bound_methods(loop, nargs):
    reports = []
    loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))

    class Target:
        def meth(self, *a):
            raise ValueError(a)

    args = tuple(range(7, 7 + nargs))
    h = loop.call_soon(Target().meth, *args)
    loop.call_soon(ValueError, *args)                 # a class as the callback: no error
    _one_turn(loop)
    [ctx] = reports
    assert ctx["handle"] is h
    assert ctx["exception"].args == (args,)
    assert ctx["message"].startswith("Exception in callback ")
    assert ctx["message"].endswith(f"Target.meth({_shown(args, loop)})")


def test_create_future_follows_a_patched_future_class(loop, monkeypatch):
    made = []

    class MyFuture(asyncio.Future):
        def __init__(self, *, loop=None):
            made.append(loop)
            super().__init__(loop=loop)

    monkeypatch.setattr(asyncio.futures, "Future", MyFuture)
    fut = loop.create_future()
    assert isinstance(fut, MyFuture) and made == [loop]
    monkeypatch.undo()
    assert type(loop.create_future()) is asyncio.Future


def test_create_future_keyword_is_the_loop_even_after_a_callee_changed_its_arguments(loop,
                                                                                  monkeypatch):
    """Each `create_future()` passes `loop=` the loop itself, whatever the previous call's
    callee did with its keyword arguments (ferroloop reuses one `{'loop': self}`)."""
    seen = []

    def factory(**kwargs):
        seen.append(dict(kwargs))
        kwargs["loop"] = None  # a copy: the next call must not see it
        kwargs["extra"] = 1
        return asyncio.Future(loop=loop)

    monkeypatch.setattr(asyncio.futures, "Future", factory)
    loop.create_future()
    loop.create_future()
    assert seen == [{"loop": loop}, {"loop": loop}]


async def _var_value():
    await asyncio.sleep(0)
    return VAR.get()


def test_create_task_name_and_context_as_the_stdlibs(loop):
    """Every way of passing `coro`, `name` and `context`: the task's loop, name and context."""
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in ctx")
    VAR.set("outer")
    try:
        calls = [
            ({}, None, "outer"),
            ({"name": "n1"}, "n1", "outer"),
            ({"name": None}, None, "outer"),
            ({"name": 42}, "42", "outer"),  # the C Task makes it a str
            ({"context": ctx}, None, "in ctx"),
            ({"context": None}, None, "outer"),
            ({"context": ctx, "name": "n2"}, "n2", "in ctx"),
            ({"name": "n3", "context": ctx}, "n3", "in ctx"),
        ]
        for kwargs, name, value in calls:
            task = loop.create_task(_var_value(), **kwargs)
            assert task.get_loop() is loop and type(task) is asyncio.Task
            if name is None:
                assert task.get_name().startswith("Task-")
            else:
                assert task.get_name() == name
            assert loop.run_until_complete(task) == value, kwargs
        # `coro` by keyword (the full parser), and the names in sequence with directly made
        # tasks: one counter, the C Task's.
        first = loop.create_task(coro=_var_value())
        direct = asyncio.Task(_var_value(), loop=loop)
        last = loop.create_task(_var_value())
        numbers = [int(t.get_name().split("-")[1]) for t in (first, direct, last)]
        assert numbers == [numbers[0], numbers[0] + 1, numbers[0] + 2]
        loop.run_until_complete(asyncio.gather(first, direct, last))
    finally:
        VAR.set("unset")


def test_create_task_argument_errors(loop):
    coro = _var_value()
    for call in (lambda: loop.create_task(),
                 lambda: loop.create_task(coro, 1),
                 lambda: loop.create_task(coro, unknown=1),
                 lambda: loop.create_task(1),
                 lambda: loop.create_task(1, name="x")):
        with pytest.raises(TypeError):
            call()
    coro.close()
    # The same loop still makes tasks and futures afterwards.
    assert loop.run_until_complete(loop.create_task(_var_value())) == "unset"
    assert loop.create_future().get_loop() is loop


def test_create_task_follows_a_patched_task_class(loop, monkeypatch):
    """A replaced `asyncio.tasks.Task` is called as the stdlib calls it: `loop`, `name` and
    `context` by keyword, even when `name` and `context` are `None`."""
    seen = []

    class MyTask(asyncio.Task):
        def __init__(self, coro, **kwargs):
            seen.append(dict(kwargs))
            kwargs["loop"] = None  # its own dict: the next call must not see it
            super().__init__(coro, loop=loop, name=kwargs["name"], context=kwargs["context"])

    monkeypatch.setattr(asyncio.tasks, "Task", MyTask)
    t1 = loop.create_task(_var_value())
    t2 = loop.create_task(_var_value(), name="two")
    assert type(t1) is MyTask and type(t2) is MyTask
    assert seen == [{"loop": loop, "name": None, "context": None},
                    {"loop": loop, "name": "two", "context": None}]
    monkeypatch.undo()
    loop.run_until_complete(asyncio.gather(t1, t2))
    t3 = loop.create_task(_var_value())
    assert type(t3) is asyncio.Task and loop.create_future().get_loop() is loop
    loop.run_until_complete(t3)


def test_a_closed_loop_that_made_tasks_and_futures_is_freed_without_the_collector(loop_factory):
    """Closing the loop drops the `{'loop': self}` that `create_future`/`create_task` keep, so
    the loop goes with its last reference, as the stock loop does, not at the collector's next
    pass (a pytest-asyncio module-scoped loop, say, outliving its module)."""
    gc.collect()
    gc.disable()
    try:
        loop = loop_factory()
        task = loop.create_task(_var_value())
        loop.run_until_complete(task)
        del task
        loop.create_future()
        loop.close()
        ref = weakref.ref(loop)
        del loop
        assert ref() is None
    finally:
        gc.enable()


# --- ferroloop only: the context copies the loop makes are untracked while pending (gc.rs) ---

import ferroloop  # noqa: E402


def test_ferroloop_a_loop_that_made_futures_is_collected_when_unreachable():
    """The `{'loop': self}` that `create_future` keeps is a cycle through the loop: the
    collector sees it (`__traverse__`) and frees an unreachable loop, closed or not."""
    refs = []
    for close in (True, False):
        loop = ferroloop.new_event_loop()
        loop.create_future()
        refs.append(weakref.ref(loop))
        if close:
            loop.close()
        del loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert [r() for r in refs] == [None, None]


def test_own_context_copy_untracked_while_pending_and_tracked_after():
    loop = ferroloop.new_event_loop()
    try:
        h = loop.call_soon(int)
        t = loop.call_later(3600, int)
        assert not gc.is_tracked(h._context)
        assert not gc.is_tracked(t._context)
        given = contextvars.copy_context()
        g = loop.call_soon(int, context=given)
        assert gc.is_tracked(given), "a context passed in is never untracked"
        assert g._context is given
        t.cancel()
        _one_turn(loop)
        assert gc.is_tracked(h._context)
        assert gc.is_tracked(t._context)
    finally:
        loop.close()


def test_cycle_through_a_pending_handles_context_copy_is_collected():
    var = contextvars.ContextVar("cycle")

    class Holder:
        pass

    def abandon():
        lp = ferroloop.new_event_loop()
        holder = Holder()
        holder.loop = lp                 # loop -> handle -> context copy -> holder -> loop
        token = var.set(holder)
        try:
            lp.call_soon(int)
            lp.call_later(3600, int)
        finally:
            var.reset(token)
        return weakref.ref(lp)

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        ref = abandon()
        gc.collect()
    assert ref() is None


def test_context_copy_outliving_its_handle_is_safe():
    """A context the user took from a pending handle outlives the handle and the loop; freeing
    it later must not touch the collector's lists as an untracked object (that crashes)."""
    import warnings

    loop = ferroloop.new_event_loop()
    ctxs = [loop.call_soon(int)._context, loop.call_later(3600, int)._context]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del loop
        gc.collect()
    assert all(gc.is_tracked(c) for c in ctxs)
    del ctxs
    gc.collect()


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_failed_calls_hold_no_memory(loop, method):
    # An argument error of the vectorcall entries releases everything it made (its message, a
    # tuple of the arguments) at once, as the stdlib's call does: nothing left for later.
    import tracemalloc

    fn = getattr(loop, method)
    keep = object()
    calls = [
        lambda: fn(),
        lambda: fn(print, 1, 2, bogus=1),
        lambda: fn(print, keep, context=None, callback=print),
    ]
    refs = sys.getrefcount(keep)
    for call in calls * 100:  # warm-up: caches, interned names
        with pytest.raises(TypeError):
            call()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for call in calls * 1000:
            with pytest.raises(TypeError):
                call()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 3000 * 8, f"{held} bytes held after 3000 failed calls"
    assert sys.getrefcount(keep) == refs
