"""Production mode: the blocked-loop watchdog without debug mode (python/ferroloop/_production.py).

ferroloop-only: the stock loop has no such mode.
"""

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import child_env


class Records(logging.Handler):
    """Every record of the ``ferroloop`` logger, with the monotonic time it was emitted."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.items = []

    def emit(self, record):
        self.items.append((time.monotonic(), record.getMessage()))

    def messages(self, start=""):
        return [m for _, m in self.items if m.startswith(start)]


@pytest.fixture
def records():
    log = logging.getLogger("ferroloop")
    handler = Records()
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


BLOCKED = "the event loop has been blocked"
ENDED = "the event loop was blocked"


def _watchdog_threads():
    return [t for t in threading.enumerate() if t.name == "ferroloop-watchdog" and t.is_alive()]


def test_ferroloop_watchdog_reports_blocked_task_while_blocked(ferroloop_mod, records):
    ended = {}

    async def blocker():
        time.sleep(0.6)  # the blocking line
        ended["at"] = time.monotonic()

    async def main():
        await asyncio.sleep(0.05)
        await asyncio.create_task(blocker(), name="blocker")
        await asyncio.sleep(0.1)  # the loop moves again: the end of the stall is reported

    loop = ferroloop_mod.new_event_loop()
    try:
        assert loop.get_watchdog() is None
        loop.set_watchdog(0.2)
        assert loop.get_watchdog() == 0.2
        assert not loop.get_debug()
        loop.run_until_complete(main())
    finally:
        loop.close()
    reports = [(t, m) for t, m in records.items if m.startswith(BLOCKED)]
    assert len(reports) == 1, records.items
    at, msg = reports[0]
    assert at < ended["at"], "reported after the stall, not while it went on"
    lines = msg.splitlines()
    assert "(threshold 0.2 s) by Task 'blocker' (coroutine " in lines[0]
    assert "blocker()" in lines[0]
    secs = float(lines[0].split("blocked for ")[1].split(" s")[0])
    assert 0.2 <= secs < 0.6
    assert lines[1].startswith(f"  blocking line: {__file__}:")
    assert lines[1].endswith("in blocker: time.sleep(0.6)  # the blocking line")
    assert "loop thread stack (most recent call last):" in msg
    ends = records.messages(ENDED)
    assert len(ends) == 1, records.items
    assert "by Task 'blocker'" in ends[0] and "time.sleep(0.6)" in ends[0]
    secs = float(ends[0].split("at least ")[1].split(" s")[0])
    assert 0.3 <= secs <= 0.7


def test_ferroloop_watchdog_names_a_busy_loop_and_a_plain_callback(ferroloop_mod, records):
    def spin(seconds):
        t = time.monotonic()
        while time.monotonic() - t < seconds:  # busy, holding the GIL
            pass

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_soon(lambda: (spin(0.45), done.set_result(None)))
        await done

    loop = ferroloop_mod.new_event_loop()
    loop.set_watchdog(0.15, report_interval=0)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    reports = records.messages(BLOCKED)
    assert len(reports) == 1, records.items
    assert "by a callback" in reports[0]
    assert "in spin: while time.monotonic() - t < seconds:" in reports[0]


def test_ferroloop_watchdog_rate_limits_with_a_count(ferroloop_mod, records):
    async def stall():
        time.sleep(0.35)

    async def main():
        await asyncio.create_task(stall(), name="first")
        await asyncio.sleep(0.05)
        await asyncio.create_task(stall(), name="second")  # within the interval: counted only
        await asyncio.sleep(0.05)
        await asyncio.create_task(stall(), name="third")  # counted only
        await asyncio.sleep(1.4)  # past the interval
        await asyncio.create_task(stall(), name="fourth")
        await asyncio.sleep(0.05)

    loop = ferroloop_mod.new_event_loop()
    loop.set_watchdog(0.1, report_interval=1.5)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    reports = records.messages(BLOCKED)
    assert len(reports) == 2, records.items
    assert "Task 'first'" in reports[0] and "not reported" not in reports[0]
    assert "Task 'fourth'" in reports[1]
    assert "(2 earlier stall(s) not reported: at most one report per 1.5 s)" in reports[1]
    ends = records.messages(ENDED)  # only the reported stalls' ends
    assert len(ends) == 2 and "'first'" in ends[0] and "'fourth'" in ends[1], ends


def test_ferroloop_watchdog_quiet_when_not_blocked(ferroloop_mod, records):
    async def tick():
        await asyncio.sleep(0)

    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.5)  # idle in the poll, longer than the threshold
        # a long turn of many short callbacks: busy, but no callback holds the loop
        t = time.monotonic()
        while time.monotonic() - t < 0.4:
            for _ in range(1000):
                loop.call_soon(int)
            await asyncio.gather(*[tick() for _ in range(100)])
        fut = loop.create_future()
        loop.call_later(0.4, fut.set_result, None)  # idle with a timer
        await fut

    loop = ferroloop_mod.new_event_loop()
    loop.set_watchdog(0.1, report_interval=0)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert records.items == []


def test_ferroloop_watchdog_thread_exits_after_the_run(ferroloop_mod):
    async def main():
        assert len(_watchdog_threads()) == 1
        await asyncio.sleep(0.01)

    from ferroloop import _production

    before = len(_watchdog_threads())
    loop = ferroloop_mod.new_event_loop()
    loop.set_watchdog(5.0)  # a long polling interval: the end of a run must not wait for it
    try:
        loop.run_until_complete(main())
        first = _watchdog_threads()[0]
        loop.run_until_complete(main())  # the next run soon after: the same thread
        assert _watchdog_threads() == [first]
        t0 = time.monotonic()
        first.join(_production.LINGER + 2.0)  # it exits LINGER after the last run
        assert not first.is_alive()
        assert _production.LINGER - 0.1 <= time.monotonic() - t0 <= _production.LINGER + 1.5
        assert len(_watchdog_threads()) == before
        loop.run_until_complete(main())  # a later run gets a new thread
        assert _watchdog_threads() != [first]
    finally:
        loop.close()


def test_ferroloop_watchdog_thread_of_asyncio_run(ferroloop_mod):
    # One thread for asyncio.run()'s three runs (main, async generators, executor).
    seen = set()

    async def main():
        seen.update(_watchdog_threads())

    with asyncio.Runner(loop_factory=ferroloop_mod.new_event_loop) as runner:
        runner.get_loop().set_watchdog(1.0)
        runner.run(main())
        runner.run(main())
        thread = runner.get_loop()._prod_watchdog._thread
    assert len(seen) == 1 and thread in seen


def test_ferroloop_watchdog_off_and_invalid(ferroloop_mod):
    loop = ferroloop_mod.new_event_loop()
    try:
        for bad in (0, -1, float("nan"), "x"):
            with pytest.raises(ValueError):
                loop.set_watchdog(bad)
        with pytest.raises(ValueError):
            loop.set_watchdog(1.0, report_interval=-1)
        loop.set_watchdog(1.0)
        loop.set_watchdog(None)
        assert loop.get_watchdog() is None

        async def main():
            assert _watchdog_threads() == []
            loop.set_watchdog(0.5)  # on while running: starts at once
            (thread,) = _watchdog_threads()
            loop.set_watchdog(0.2)  # a new setting: a new thread
            (thread2,) = [t for t in _watchdog_threads() if t is not thread]
            loop.set_watchdog(None)  # and off: the thread exits at once
            thread2.join(1.0)
            assert not thread2.is_alive()

        loop.run_until_complete(main())
    finally:
        loop.close()


def test_ferroloop_watchdog_silent_in_debug_mode(ferroloop_mod, records):
    # Debug mode's own watchdog reports the stall (with its own wording); production mode's
    # does not report it a second time.
    async def blocker():
        time.sleep(0.4)

    loop = ferroloop_mod.new_event_loop()
    loop.set_debug(True)
    loop.set_watchdog(0.1)
    try:
        loop.run_until_complete(asyncio.wait_for(blocker(), 5))
    finally:
        loop.close()
    reports = records.messages(BLOCKED)
    assert len(reports) == 1, records.items
    assert "threshold" not in reports[0]  # debug mode's report


ENV_APP = """
import asyncio, time

async def handler():
    time.sleep(0.5)

async def main():
    await asyncio.create_task(handler(), name="handler")
    await asyncio.sleep(0.05)

asyncio.run(main())
"""


def test_ferroloop_watchdog_from_environment(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(ENV_APP))
    p = subprocess.run(
        [sys.executable, "-m", "ferroloop", str(app)],
        capture_output=True, text=True, timeout=60,
        env=child_env(FERROLOOP_WATCHDOG="0.2"),
    )
    assert p.returncode == 0, p.stderr
    assert "the event loop has been blocked for 0.2" in p.stderr, p.stderr
    assert "by Task 'handler' (coroutine handler())" in p.stderr
    assert f"blocking line: {app}:5 in handler: time.sleep(0.5)" in p.stderr
    assert "the event loop was blocked for at least" in p.stderr

    p = subprocess.run(
        [sys.executable, "-m", "ferroloop", str(app)],
        capture_output=True, text=True, timeout=60,
        env=child_env(FERROLOOP_WATCHDOG="soon"),
    )
    assert p.returncode == 0, p.stderr
    assert "ignoring FERROLOOP_WATCHDOG='soon'" in p.stderr
    assert "blocked" not in p.stderr

    p = subprocess.run(
        [sys.executable, str(app)], capture_output=True, text=True, timeout=60,
        env=child_env(FERROLOOP_WATCHDOG="0.2"),
    )
    assert "blocked" not in p.stderr, "the stock loop must not be affected"


def test_ferroloop_watchdog_rate_limiter_unit():
    from ferroloop._production import RateLimiter

    lim = RateLimiter(10)
    assert lim.allow(100.0) == (True, 0)
    assert lim.allow(105.0) == (False, 0)
    assert lim.allow(109.9) == (False, 0)
    assert lim.allow(110.0) == (True, 2)
    assert lim.allow(125.0) == (True, 0)
    assert RateLimiter(0).allow(1.0) == (True, 0)


@pytest.mark.skipif(os.environ.get("FERROLOOP_WATCHDOG") is not None, reason="set by the caller")
def test_ferroloop_watchdog_environment_parsing():
    from ferroloop._production import config_from_env

    assert config_from_env({}) is None
    assert config_from_env({"FERROLOOP_WATCHDOG": "0"}) is None
    assert config_from_env({"FERROLOOP_WATCHDOG": "off"}) is None
    cfg = config_from_env({"FERROLOOP_WATCHDOG": "0.5", "FERROLOOP_WATCHDOG_INTERVAL": "5"})
    assert (cfg.threshold, cfg.limiter.interval) == (0.5, 5.0)
    cfg = config_from_env({"FERROLOOP_WATCHDOG": "2"})
    assert (cfg.threshold, cfg.limiter.interval) == (2.0, 60.0)


def test_ferroloop_watchdog_command_line_option(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(ENV_APP))
    for opt in (["--watchdog", "0.2"], ["--watchdog=0.2"]):
        p = subprocess.run([sys.executable, "-m", "ferroloop", *opt, str(app)], capture_output=True,
                           text=True, timeout=60, env=child_env())
        assert p.returncode == 0, p.stderr
        assert "by Task 'handler' (coroutine handler())" in p.stderr, p.stderr
    p = subprocess.run([sys.executable, "-m", "ferroloop", "--watchdog", "-1", str(app)],
                       capture_output=True, text=True, timeout=60, env=child_env())
    assert p.returncode == 2
    assert "--watchdog needs a number of seconds > 0, not '-1'" in p.stderr


def test_ferroloop_run_watchdog_and_ps_arguments(ferroloop_mod, records):
    from ferroloop import _ps

    async def blocking():
        time.sleep(0.5)
        return "done"

    async def main():
        return await asyncio.create_task(blocking(), name="blocker")

    try:
        assert ferroloop_mod.run(main(), watchdog=0.2, ps=True) == "done"
        path = _ps._server.path
        assert os.path.exists(path) and (os.stat(path).st_mode & 0o777) == 0o600
    finally:
        _ps.stop()
    text = "\n".join(records.messages())
    assert "the event loop has been blocked for" in text
    assert "Task 'blocker'" in text
    assert not os.path.exists(path)
    assert ferroloop_mod.metrics.instrument is not None
