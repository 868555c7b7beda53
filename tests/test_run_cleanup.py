"""The end of a run restores every piece of loop state, and blocks on nothing.

anyio's own suite runs its asyncio tests with ``debug=True`` under blockbuster, which raises
``BlockingError`` from any blocking call (a lock acquire, a thread join) made while a loop is
running. Found there: ferroloop joined its debug watchdog at the end of ``run_forever`` while the
loop was still marked running; the error stopped the cleanup halfway and the loop stayed
"running" for good. Both behaviours are the stdlib's, so every test runs on both loops.
"""

import asyncio
import sys
import threading
from asyncio import events

import pytest


class Blocked(Exception):
    pass


@pytest.fixture
def no_blocking_while_running(monkeypatch):
    """Like blockbuster for thread joins: a join while an event loop is running raises."""
    orig = threading.Thread.join

    def join(self, timeout=None):
        if events._get_running_loop() is not None:
            raise Blocked(f"blocking join of {self.name} inside a running loop")
        return orig(self, timeout)

    monkeypatch.setattr(threading.Thread, "join", join)


def _state(loop):
    return (
        loop.is_running(),
        events._get_running_loop(),
        getattr(loop, "_thread_id", None),
        sys.get_asyncgen_hooks(),
        sys.get_coroutine_origin_tracking_depth(),
    )


def test_debug_run_ends_without_blocking(loop, no_blocking_while_running):
    loop.set_debug(True)
    before = _state(loop)

    async def main():
        await asyncio.sleep(0.01)
        return 42

    for _ in range(3):  # the watchdog of each run is stopped without a join
        assert loop.run_until_complete(main()) == 42
        assert _state(loop) == before
    # A new run still works, and a new loop can run in this thread.
    assert loop.run_until_complete(main()) == 42


def test_blockbuster_style_detector_over_many_debug_runs(loop_factory, no_blocking_while_running):
    # What anyio's suite does: one debug loop per test, many tests in a row.
    for _ in range(5):
        lp = loop_factory()
        try:
            lp.set_debug(True)
            lp.run_until_complete(asyncio.sleep(0))
        finally:
            lp.close()
        assert events._get_running_loop() is None


def test_cleanup_restores_state_when_a_step_raises(loop, monkeypatch):
    hooks_before = sys.get_asyncgen_hooks()

    def failing_hooks(*args, **kwargs):
        if args:  # the restore at the end of the run (the setup passes keywords)
            raise Blocked("restoring the asyncgen hooks failed")
        return orig_set(*args, **kwargs)

    orig_set = sys.set_asyncgen_hooks
    monkeypatch.setattr(sys, "set_asyncgen_hooks", failing_hooks)
    with pytest.raises(Blocked):
        loop.run_until_complete(asyncio.sleep(0))
    monkeypatch.undo()
    # Everything else was restored even though one step raised.
    assert not loop.is_running()
    assert events._get_running_loop() is None
    assert loop._thread_id is None
    sys.set_asyncgen_hooks(*hooks_before)
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


def test_ferroloop_cleanup_goes_on_when_diagnostics_stop_raises(ferroloop_mod, monkeypatch):
    from ferroloop import _diagnostics

    loop = ferroloop_mod.new_event_loop()
    try:
        loop.set_debug(True)
        hooks_before = sys.get_asyncgen_hooks()

        stopped = []

        def boom(self):
            stopped.append(self)
            raise Blocked("watchdog stop failed")

        monkeypatch.setattr(_diagnostics.Watchdog, "stop", boom)
        with pytest.raises(Blocked):
            loop.run_until_complete(asyncio.sleep(0))
        monkeypatch.undo()
        stopped[0].stop()  # the real stop, so the thread exits
        assert not loop.is_running()
        assert events._get_running_loop() is None
        assert loop._thread_id is None
        assert sys.get_asyncgen_hooks() == hooks_before
        assert sys.get_coroutine_origin_tracking_depth() == 0
        assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"
    finally:
        loop.close()


def test_ferroloop_watchdog_blocks_signals(ferroloop_mod):
    # The watchdog thread never receives a process signal: Ctrl-C must reach the loop thread.
    import signal

    loop = ferroloop_mod.new_event_loop()
    seen = {}

    async def main():
        await asyncio.sleep(0)
        wd = loop._watchdog
        seen["mask"] = _thread_sigmask(wd._thread.native_id)

    try:
        loop.set_debug(True)
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert signal.SIGINT in seen["mask"] and signal.SIGTERM in seen["mask"]


def _thread_sigmask(tid):
    """The blocked signals of thread ``tid`` (``SigBlk`` in /proc)."""
    import signal

    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("SigBlk:"):
                bits = int(line.split()[1], 16)
                return {signal.Signals(n) for n in range(1, 65) if bits >> (n - 1) & 1
                        and n in signal.Signals._value2member_map_}
    raise AssertionError("no SigBlk line")


def test_no_thread_outlives_a_debug_run(loop_factory):
    # anyio's test_single_thread counts threads after runs: the stdlib starts none.
    before = threading.active_count()
    for _ in range(20):
        lp = loop_factory()
        try:
            lp.set_debug(True)
            lp.run_until_complete(asyncio.sleep(0))
            assert threading.active_count() == before
        finally:
            lp.close()
