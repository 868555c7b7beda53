"""ferroloop.run (mirroring CPython's test_runners, with asyncio.run as the
oracle) and asyncio.Runner(loop_factory=...)."""

import asyncio
import contextvars
import re
import threading

import pytest

from conftest import script_source

STDLIB_NESTED_MSG = "asyncio.run() cannot be called from a running event loop"


@pytest.fixture
def run_impl(loop_name, loop_factory):
    """asyncio.run for the stock half, ferroloop.run for the ferroloop half."""
    if loop_name == "asyncio":
        return asyncio.run
    import ferroloop

    return ferroloop.run


def test_return_value(run_impl):
    async def main():
        await asyncio.sleep(0)
        return 42

    assert run_impl(main()) == 42


def test_exception_propagates(run_impl):
    async def main():
        await asyncio.sleep(0)
        raise ValueError("spam")

    with pytest.raises(ValueError, match="spam"):
        run_impl(main())


@pytest.mark.parametrize("obj", [1, lambda: None, None], ids=["int", "lambda", "None"])
def test_only_coroutines(run_impl, obj):
    with pytest.raises(ValueError, match="a coroutine was expected"):
        run_impl(obj)


def test_runs_on_expected_loop_and_closes_it(run_impl, loop_name):
    seen = []

    async def main():
        seen.append(asyncio.get_running_loop())

    run_impl(main())
    lp = seen[0]
    assert lp.is_closed()
    assert not lp.is_running()
    if loop_name == "ferroloop":
        import ferroloop

        assert isinstance(lp, ferroloop.Loop)


@pytest.mark.parametrize("env", [None, "1"], ids=["no-env", "env"])
def test_debug_flag(run_impl, monkeypatch, env):
    if env is None:
        monkeypatch.delenv("PYTHONASYNCIODEBUG", raising=False)
    else:
        monkeypatch.setenv("PYTHONASYNCIODEBUG", env)

    async def main():
        return asyncio.get_running_loop().get_debug()

    assert run_impl(main(), debug=True) is True
    assert run_impl(main(), debug=False) is False
    assert run_impl(main()) is (env is not None)


def test_nested_run_message(run_impl):
    async def main():
        coro = asyncio.sleep(0)
        try:
            run_impl(coro)
        finally:
            coro.close()

    with pytest.raises(RuntimeError) as ei:
        run_impl(main())
    assert STDLIB_NESTED_MSG in str(ei.value)


def test_ferroloop_nested_run_gives_advice(ferroloop_mod):
    async def main():
        coro = asyncio.sleep(0)
        try:
            ferroloop_mod.run(coro)
        finally:
            coro.close()

    with pytest.raises(RuntimeError) as ei:
        ferroloop_mod.run(main())
    msg = str(ei.value)
    assert STDLIB_NESTED_MSG in msg
    # the advice: await the coroutine, or create a task with asyncio.create_task()
    assert re.search(r"\bawait\b", msg.replace(STDLIB_NESTED_MSG, "")), msg
    assert "asyncio.create_task(" in msg, msg
    # the same from inside a stock loop
    with pytest.raises(RuntimeError) as ei:
        asyncio.run(main())
    assert STDLIB_NESTED_MSG in str(ei.value) and "asyncio.create_task(" in str(ei.value)


def test_leftover_tasks_cancelled(run_impl):
    leftovers = []

    async def leftover():
        await asyncio.sleep(10)

    async def main():
        leftovers.append(asyncio.create_task(leftover()))
        return 123

    assert run_impl(main()) == 123
    assert leftovers[0].done() and leftovers[0].cancelled()


def test_hanging_task_errors_reported(run_impl):
    contexts = []
    lo = []

    async def leftover():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            1 / 0

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        lo.append(asyncio.create_task(leftover()))
        return 1

    assert run_impl(main()) == 1
    assert len(contexts) == 1
    assert contexts[0]["message"] == "unhandled exception during asyncio.run() shutdown"
    assert contexts[0]["task"] is lo[0]
    assert isinstance(contexts[0]["exception"], ZeroDivisionError)


def test_closes_gens_after_hanging_tasks_errors(run_impl):
    spinner = []

    class FancyExit(Exception):
        pass

    async def fidget():
        while True:
            yield 1
            await asyncio.sleep(1)

    async def spin():
        spinner.append(fidget())
        try:
            async for _ in spinner[0]:
                pass
        except asyncio.CancelledError:
            1 / 0

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda lp, ctx: None)
        asyncio.create_task(spin())
        await asyncio.sleep(0)
        raise FancyExit

    with pytest.raises(FancyExit):
        run_impl(main())
    assert spinner[0].ag_frame is None
    assert not spinner[0].ag_running


def test_asyncgens_finalized(run_impl):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            events.append("finalized")

    gens = []

    async def main():
        g = agen()
        gens.append(g)  # kept alive: only shutdown_asyncgens can close it
        await g.__anext__()

    run_impl(main())
    assert events == ["finalized"]


def test_default_executor_shut_down(run_impl):
    async def main():
        return await asyncio.get_running_loop().run_in_executor(None, threading.current_thread)

    thread = run_impl(main())
    assert thread is not threading.current_thread()
    assert not thread.is_alive()  # joined before run() returned


def test_context_is_fresh_copy(run_impl):
    var = contextvars.ContextVar("var", default="unset")
    var.set("outer")

    async def main():
        value = var.get()
        var.set("inner")
        return value

    assert run_impl(main()) == "outer"
    assert var.get() == "outer"


# -- Ctrl-C: cancel the main task, then raise KeyboardInterrupt -----------------

SIGINT_SCRIPT = """
import asyncio, sys
{run_def}
async def main():
    print("ready", flush=True)
    try:
        {wait}
    except asyncio.CancelledError:
        print("cancelled", flush=True)
        {after_cancel}
try:
    run(main())
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(42)
"""

RUN_DEFS = {
    "run": "run = _m.run\n",  # asyncio.run / ferroloop.run
    "runner": (
        "def run(coro):\n"
        "    with asyncio.Runner(loop_factory=loop_factory) as runner:\n"
        "        return runner.run(coro)\n"
    ),
}

SCENARIOS = {
    # main waits in a long sleep: the loop is blocked in its poll
    "waiting": ("await asyncio.sleep(30)", "raise", ("ready",)),
    # main never blocks: the loop never polls with a timeout
    "busy": ("while True: await asyncio.sleep(0)", "raise", ("ready",)),
    # main swallows the cancellation: the second Ctrl-C raises KeyboardInterrupt
    "twice": ("await asyncio.sleep(30)", "await asyncio.sleep(30)", ("ready", "cancelled")),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("how", ["run", "runner"])
def test_ctrl_c_cancels_main_then_raises(loop_name, interrupt_child, how, scenario):
    wait, after_cancel, waits = SCENARIOS[scenario]
    body = SIGINT_SCRIPT.format(run_def=RUN_DEFS[how], wait=wait, after_cancel=after_cancel)
    rc, out, err, elapsed = interrupt_child(script_source(loop_name, body), waits=waits)
    assert out.split() == ["ready", "cancelled", "KeyboardInterrupt"], err
    assert rc == 42, err
    assert elapsed < 2.0


# -- asyncio.Runner with loop_factory ------------------------------------------


def test_runner_uses_factory(loop_factory):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        lp = runner.get_loop()
        assert type(lp) is type(loop_factory_probe(loop_factory))

        async def main():
            return asyncio.get_running_loop()

        assert runner.run(main()) is lp
        assert runner.run(main()) is lp  # several runs, one loop
    assert lp.is_closed()
    coro = main()
    with pytest.raises(RuntimeError, match="Runner is closed"):
        runner.run(coro)
    coro.close()


def loop_factory_probe(factory):
    lp = factory()
    lp.close()
    return lp


@pytest.mark.parametrize("debug", [True, False])
def test_runner_debug(loop_factory, debug):
    async def main():
        return asyncio.get_running_loop().get_debug()

    with asyncio.Runner(debug=debug, loop_factory=loop_factory) as runner:
        assert runner.run(main()) is debug


def test_runner_keeps_context(loop_factory):
    var = contextvars.ContextVar("var", default=0)

    async def bump():
        var.set(var.get() + 1)
        return var.get()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(bump()) == 1
        assert runner.run(bump()) == 2
        ctx = contextvars.Context()
        assert runner.run(bump(), context=ctx) == 1
        assert runner.run(bump()) == 3
    assert var.get() == 0


def test_runner_close_cleans_up(loop_factory):
    leftovers, events = [], []

    async def agen():
        try:
            yield 1
        finally:
            events.append("agen closed")

    gens = []

    async def main():
        leftovers.append(asyncio.create_task(asyncio.sleep(10)))
        gens.append(agen())
        await gens[0].__anext__()
        return await asyncio.get_running_loop().run_in_executor(None, threading.current_thread)

    runner = asyncio.Runner(loop_factory=loop_factory)
    thread = runner.run(main())
    runner.close()
    runner.close()  # idempotent
    assert leftovers[0].cancelled()
    assert events == ["agen closed"]
    assert not thread.is_alive()


def test_runner_nested_run(loop_factory):
    async def main():
        coro = asyncio.sleep(0)
        try:
            with pytest.raises(RuntimeError, match="Runner.run\\(\\) cannot be called from a running event loop"):
                runner.run(coro)
        finally:
            coro.close()
        return "ok"

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(main()) == "ok"
