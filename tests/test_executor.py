"""run_in_executor, set_default_executor, shutdown_default_executor."""

import asyncio
import concurrent.futures
import threading
import time

import pytest


def test_run_in_default_executor(loop):
    def work(a, b):
        return a + b, threading.current_thread()

    async def main():
        fut = loop.run_in_executor(None, work, 2, 3)
        assert asyncio.isfuture(fut)
        return await fut

    result, thread = loop.run_until_complete(main())
    assert result == 5
    assert thread is not threading.current_thread()
    assert thread.name.startswith("asyncio_")
    loop.run_until_complete(loop.shutdown_default_executor())
    assert not thread.is_alive()


def test_executor_exception_propagates(loop):
    def fail():
        raise KeyError("from thread")

    async def main():
        return await loop.run_in_executor(None, fail)

    with pytest.raises(KeyError, match="from thread"):
        loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_default_executor())


def test_concurrent_jobs_do_not_block_loop(loop):
    ticks = []

    async def ticker():
        for _ in range(5):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main():
        t = asyncio.ensure_future(ticker())
        jobs = [loop.run_in_executor(None, time.sleep, 0.25) for _ in range(2)]
        results = await asyncio.gather(*jobs)
        done_at = time.monotonic()
        await t
        return results, done_at

    t0 = time.monotonic()
    results, done_at = loop.run_until_complete(main())
    assert results == [None, None]
    assert done_at - t0 < 0.45  # the two jobs ran concurrently
    assert len(ticks) == 5 and ticks[-1] < done_at  # the loop ticked meanwhile
    loop.run_until_complete(loop.shutdown_default_executor())


def test_explicit_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine") as ex:
        name = loop.run_until_complete(
            loop.run_in_executor(ex, lambda: threading.current_thread().name))
    assert name.startswith("mine")


def test_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="default-set")
    loop.set_default_executor(ex)
    name = loop.run_until_complete(
        loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith("default-set")
    loop.run_until_complete(loop.shutdown_default_executor())
    # shutdown_default_executor shut down the executor we supplied
    with pytest.raises(RuntimeError):
        ex.submit(print)


def test_set_default_executor_type_check(loop):
    with concurrent.futures.ProcessPoolExecutor(1) as ex:
        for bad in (ex, None, object()):
            with pytest.raises(TypeError) as ei:
                loop.set_default_executor(bad)
            assert str(ei.value) == "executor must be ThreadPoolExecutor instance"


def test_shutdown_default_executor_waits(loop):
    done = []

    def slow():
        time.sleep(0.1)
        done.append(True)

    async def main():
        loop.run_in_executor(None, slow)
        await asyncio.sleep(0)
        await loop.shutdown_default_executor()
        return list(done)

    assert loop.run_until_complete(main()) == [True]


def test_run_in_executor_after_shutdown(loop):
    loop.run_until_complete(loop.run_in_executor(None, int))
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError) as ei:
        loop.run_in_executor(None, int)
    assert str(ei.value) == "Executor shutdown has been called"
    # an explicit executor is still fine
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        assert loop.run_until_complete(loop.run_in_executor(ex, int, "7")) == 7


def test_shutdown_default_executor_without_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="^Executor shutdown has been called$"):
        loop.run_in_executor(None, int)


def test_close_shuts_down_default_executor(loop):
    thread = loop.run_until_complete(loop.run_in_executor(None, threading.current_thread))
    loop.close()
    thread.join(5)
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.run_in_executor(None, int)


def test_debug_rejects_coroutine_function(loop):
    async def coro_fn():
        pass

    loop.set_debug(True)
    with pytest.raises(TypeError) as ei:
        loop.run_in_executor(None, coro_fn)
    assert str(ei.value) == "coroutines cannot be used with run_in_executor()"
    with pytest.raises(TypeError) as ei:
        loop.run_in_executor(None, 5)
    assert str(ei.value) == "a callable object was expected by run_in_executor(), got 5"


def test_cancel_executor_future(loop):
    started = threading.Event()
    release = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        async def main():
            first = loop.run_in_executor(ex, lambda: (started.set(), release.wait(5)))
            queued = loop.run_in_executor(ex, int)  # waits behind `first`
            await loop.run_in_executor(None, started.wait, 5)
            queued.cancel()
            release.set()
            await first
            with pytest.raises(asyncio.CancelledError):
                await queued

        loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_default_executor())


def test_executor_result_wakes_loop(loop):
    # the result of a thread must wake a loop that has nothing else to do
    async def main():
        t0 = time.monotonic()
        await loop.run_in_executor(None, time.sleep, 0.05)
        return time.monotonic() - t0

    assert loop.run_until_complete(main()) < 1.0
    loop.run_until_complete(loop.shutdown_default_executor())
