"""The readiness hint: ferroloop skips a turn's zero-timeout wait only when it would find nothing.

A turn with callbacks ready polls with a zero timeout before it runs them. When fds are watched
but idle, ferroloop learns from a one-shot io_uring poll on its epoll fd that nothing became
ready, and skips the syscall (``ferroloop_core::ready_hint``). The order of callbacks must stay
the stock loop's: a reader made ready by a callback runs at the same turn on both loops, and a
write from another thread is seen by the first turn that starts after it returned.
"""

import asyncio
import os
import socket
import threading

import pytest

from conftest import child_env

SPIN = 400


def _spin_and_write(loop, writes_at):
    """Runs SPIN turns of a self-rescheduling callback with one idle reader watched, and writes
    to the reader's socket from a callback at the turns in `writes_at`. Returns the log."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    # A second watched fd that stays idle all along (a listening socket, say).
    c, d = socket.socketpair()
    log = []
    done = loop.create_future()

    def on_read():
        log.append(("read", a.recv(16)))

    def spin(i):
        log.append(("spin", i))
        if i in writes_at:
            b.send(b"x%d" % i)
        if i < SPIN:
            loop.call_soon(spin, i + 1)
        else:
            done.set_result(None)

    async def main():
        loop.add_reader(a.fileno(), on_read)
        loop.add_reader(c.fileno(), lambda: log.append("idle fd fired"))
        loop.call_soon(spin, 0)
        await done
        loop.remove_reader(a.fileno())
        loop.remove_reader(c.fileno())

    try:
        loop.run_until_complete(main())
    finally:
        for s in (a, b, c, d):
            s.close()
    return log


def test_a_reader_made_ready_by_a_callback_runs_at_the_stock_loops_turn(loop):
    # Writes after long quiet stretches (the hint armed and skipping), after short ones, and
    # on consecutive turns.
    writes_at = {5, 150, 151, 152, 155, 300, 399}
    log = _spin_and_write(loop, writes_at)
    reference = _spin_and_write(asyncio.new_event_loop(), writes_at)
    assert log == reference
    # The reader ran in the turn right after each write: after the next spin, before the one
    # after it.
    for i in sorted(writes_at - {151, 152}):
        at = log.index(("spin", i))
        assert log[at + 1] == ("spin", i + 1), log[at:at + 4]
        assert log[at + 2][0] == "read", log[at:at + 4]


def test_ferroloop_skips_the_waits_of_a_quiet_stretch():
    import ferroloop

    loop = ferroloop.new_event_loop()
    try:
        _spin_and_write(loop, {100})
        skipped, missed = loop._wait_hint_stats()
        assert loop.stats()["waits_skipped"] == skipped
    finally:
        loop.close()
    assert missed == 0
    if skipped == 0:
        # Only where io_uring is refused (a seccomp filter, kernel.io_uring_disabled, a kernel
        # before 5.19): say so, rather than pass silently.
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            assert f.read().strip() != "0", "io_uring is enabled, yet no wait was skipped"
    else:
        # About SPIN turns, less the first ones (before it arms), the safety net's real waits
        # and the turns around the write.
        assert skipped > SPIN * 0.8, skipped
    # The counters outlive the poller: a closed loop reports what it skipped.
    assert loop._wait_hint_stats() == (skipped, missed)
    assert loop.stats()["waits_skipped"] == skipped


def test_a_write_from_another_thread_is_seen_by_the_next_turn(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    written = threading.Event()
    state = {"turn": 0, "seen_written_at": None, "read_at": None}
    done = loop.create_future()

    def on_read():
        state["read_at"] = state["turn"]
        a.recv(16)
        if not done.done():
            done.set_result(None)

    def spin():
        state["turn"] += 1
        if state["seen_written_at"] is None and written.is_set():
            state["seen_written_at"] = state["turn"]
        if not done.done():
            loop.call_soon(spin)

    def writer():
        b.send(b"y")
        written.set()

    async def main():
        loop.add_reader(a.fileno(), on_read)
        loop.call_soon(spin)
        for _ in range(200):
            await asyncio.sleep(0)
        t = threading.Thread(target=writer)
        t.start()
        await asyncio.wait_for(done, 10)
        t.join()
        loop.remove_reader(a.fileno())

    try:
        for _ in range(5):
            state.update(turn=0, seen_written_at=None, read_at=None)
            written.clear()
            done = loop.create_future()
            loop.run_until_complete(main())
            assert state["read_at"] is not None
            if state["seen_written_at"] is not None:
                # The turn after the one that saw the write done polls, so its reader runs
                # then, alongside that turn's spin.
                assert state["read_at"] <= state["seen_written_at"] + 1, state
    finally:
        a.close()
        b.close()


def _in_thread(fn, *args):
    result = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the calling thread
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _io_uring_refused():
    with open("/proc/sys/kernel/io_uring_disabled") as f:
        return f.read().strip() != "0"


def test_a_loop_run_by_other_threads_after_arming_keeps_the_order_and_its_hint(loop, loop_name):
    # The armed poll's task work belongs to the thread that armed it. Each run below ends with
    # 100 quiet turns, so it leaves a poll armed for the next run, which happens on another
    # thread: the main thread (asleep in join() meanwhile), then a thread that exits after its
    # run (its poll is cancelled with it), the main thread again, a new thread. Every run must
    # give the stock loop's order, and on ferroloop every run must skip the waits of its quiet
    # stretches: a ring serves only the thread that made it.
    writes_at = {5, 150, 151, 300}
    stock = asyncio.new_event_loop()
    try:
        reference = _spin_and_write(stock, writes_at)
    finally:
        stock.close()
    stats = loop._wait_hint_stats if loop_name == "ferroloop" else None
    runs = []
    for where in ("main", "thread", "thread", "main", "thread", "main"):
        before = stats()[0] if stats else 0
        if where == "main":
            log = _spin_and_write(loop, writes_at)
        else:
            log = _in_thread(_spin_and_write, loop, writes_at)
        assert log == reference, where
        runs.append(stats()[0] - before if stats else None)
    if stats:
        assert stats()[1] == 0, stats()  # no miss
        if not _io_uring_refused():
            assert all(n > SPIN * 0.8 for n in runs), runs


def _out(res):
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout.strip().splitlines()[-1]


def test_ferroloop_hint_is_off_with_the_environment_variable(run_py):
    out = run_py(
        """
        import asyncio, socket, ferroloop
        loop = ferroloop.new_event_loop()
        a, b = socket.socketpair()
        async def main():
            loop.add_reader(a.fileno(), lambda: None)
            for _ in range(300):
                await asyncio.sleep(0)
            loop.remove_reader(a.fileno())
        loop.run_until_complete(main())
        print(loop._wait_hint_stats())
        loop.close()
        """,
        env=child_env(FERROLOOP_IO_URING="0"),
    )
    assert _out(out) == "(0, 0)"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_ferroloop_a_forked_child_polls_for_real_and_the_parent_keeps_its_hint(run_py):
    out = run_py(
        """
        import asyncio, os, socket, ferroloop
        loop = ferroloop.new_event_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        got = []

        async def spin_then_write(n):
            for i in range(n):
                await asyncio.sleep(0)
            b.send(b"z")
            for i in range(3):
                await asyncio.sleep(0)

        loop.add_reader(a.fileno(), lambda: got.append(a.recv(8)))
        loop.run_until_complete(spin_then_write(200))
        assert got == [b"z"], got
        before = loop._wait_hint_stats()
        assert before[0] > 0, before  # armed and skipping before the fork
        pid = os.fork()
        if pid == 0:
            # The child runs the inherited loop: no skipped wait (it never reads the parent's
            # ring), and the reader still runs one turn after the write.
            code = 0
            try:
                got.clear()
                loop.run_until_complete(spin_then_write(200))
                if got != [b"z"] or loop._wait_hint_stats() != before:
                    code = 3
                # A new loop in the child makes its own ring.
                fresh = ferroloop.new_event_loop()
                c, d = socket.socketpair()
                fresh.add_reader(c.fileno(), lambda: None)
                async def quiet():
                    for _ in range(200):
                        await asyncio.sleep(0)
                fresh.run_until_complete(quiet())
                if fresh._wait_hint_stats()[0] == 0:
                    code = 4
                fresh.remove_reader(c.fileno())
                fresh.close()
            except BaseException:
                code = 5
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        got.clear()
        loop.run_until_complete(spin_then_write(200))
        after = loop._wait_hint_stats()
        print(os.waitstatus_to_exitcode(status), got, after[0] > before[0], after[1])
        loop.remove_reader(a.fileno())
        loop.close()
        """
    )
    assert _out(out) == "0 [b'z'] True 0"
