"""Production mode: the blocked-loop report without debug mode.

Debug mode names a blocked loop precisely, but it makes every callback dearer (the stdlib's debug
checks). Production mode costs nothing per callback: a watchdog thread samples the loop's native
counters (``loop._native_stats()``: turns and callbacks, always counted by the Rust core) a few
times per threshold. When neither has moved for longer than the threshold and the loop thread is
not waiting in its poll (its innermost Python frame is not ``run_forever``'s), one callback has
held the loop that long: the watchdog reads the loop thread's stack (``sys._current_frames()``)
and the loop's current task, and logs a report to the ``ferroloop`` logger while the loop is
still blocked; when the loop moves again, a second line says for how long it was blocked.

The thread starts with the loop's first run and stops sampling when the run ends; it exits
when the loop has not run again for ``LINGER`` (1 s), so the runs of ``asyncio.run()`` (the
program, then the shutdowns) share one thread, and no thread outlives its loop's use by more
than a second.

Opt in per loop with ``loop.set_watchdog(0.5)``, or for every loop of the process with
``FERROLOOP_WATCHDOG=0.5`` (read when a loop is created; ``FERROLOOP_WATCHDOG_INTERVAL=60``
sets the rate limit). Reports are rate-limited per loop: at most one per ``report_interval``
seconds; the next report says how many stalls were not reported meanwhile.

What sampling cannot see (the precise alternative is debug mode):

- The duration is measured from the first sample that saw the callback running, so a stall is
  reported between ``threshold`` and ``threshold * 1.5`` after it began, and the durations given
  are lower bounds, precise to ``threshold / 4``.
- A callback that is itself a C function blocking without a Python frame
  (``loop.call_soon(time.sleep, 1)``) looks like the loop waiting in its poll, and is not
  reported. A blocking call made from Python code (a coroutine, a protocol method, a Python
  callback) is.
- A single turn made of many short callbacks is not a stall here: the callback counter moves.
"""

import asyncio
import logging
import os
import sys
import sysconfig
import threading
import time
import weakref

from . import _diagnostics

logger = logging.getLogger("ferroloop")

ENV_THRESHOLD = "FERROLOOP_WATCHDOG"
ENV_INTERVAL = "FERROLOOP_WATCHDOG_INTERVAL"
DEFAULT_REPORT_INTERVAL = 60.0

# Every ferroloop loop of the process, for ``python -m ferroloop ps`` (_ps.py).
LOOPS: "weakref.WeakSet[object]" = weakref.WeakSet()


class RateLimiter:
    """At most one report per ``interval`` seconds; counts what it refused."""

    def __init__(self, interval):
        self.interval = float(interval)
        self._last = None
        self.suppressed = 0
        self._lock = threading.Lock()

    def allow(self, now=None):
        """(True, suppressed since the last allowed report) or (False, 0)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._last is not None and now - self._last < self.interval:
                self.suppressed += 1
                return False, 0
            self._last = now
            n, self.suppressed = self.suppressed, 0
            return True, n


class WatchdogConfig:
    """What ``loop.set_watchdog()`` set: the threshold and the loop's rate limiter (kept across
    runs, so a program calling ``run_until_complete`` in a loop is still rate-limited)."""

    def __init__(self, threshold, report_interval):
        self.threshold = threshold
        self.limiter = RateLimiter(report_interval)
        self.stalls = 0  # stalls seen (reported or not), for metrics


def parse_threshold(value):
    """A positive number of seconds, or None for off; raises ValueError otherwise."""
    if value is None or value is False:
        return None
    threshold = float(value)
    if threshold != threshold or threshold <= 0:  # NaN, 0, negative
        raise ValueError(f"the watchdog threshold must be a positive number of seconds, not {value!r}")
    return threshold


def config_from_env(environ=os.environ):
    """The watchdog configuration ``FERROLOOP_WATCHDOG`` asks for, or None. An invalid value is
    logged and ignored (a typo in an environment variable must not stop the service)."""
    raw = environ.get(ENV_THRESHOLD)
    if not raw or raw.strip().lower() in ("0", "off", "no", "false"):
        return None
    try:
        threshold = parse_threshold(raw)
        interval = float(environ.get(ENV_INTERVAL) or DEFAULT_REPORT_INTERVAL)
        if not interval >= 0:
            raise ValueError(f"{ENV_INTERVAL} must be >= 0, not {interval!r}")
    except ValueError as exc:
        logger.warning(f"ignoring {ENV_THRESHOLD}={raw!r}: {exc}")
        return None
    return WatchdogConfig(threshold, interval)


# ------------------------------------------------------------------------------------------
# The loop's side (Loop calls these from its production-mode block)


def init_loop(loop):
    """Called by ``Loop.__init__``: the environment's opt-ins (``FERROLOOP_WATCHDOG``,
    ``FERROLOOP_PS``)."""
    loop._prod_watchdog = None
    loop._prod_config = config_from_env() if ENV_THRESHOLD in os.environ else None
    LOOPS.add(loop)
    if os.environ.get("FERROLOOP_PS"):
        from . import _ps

        _ps.serve_from_env()


def set_watchdog(loop, threshold, report_interval=DEFAULT_REPORT_INTERVAL):
    threshold = parse_threshold(threshold)
    if threshold is None:
        loop._prod_config = None
        stop(loop, linger=False)
        return
    report_interval = float(report_interval)
    if not report_interval >= 0:
        raise ValueError(f"report_interval must be >= 0, not {report_interval!r}")
    loop._prod_config = WatchdogConfig(threshold, report_interval)
    stop(loop, linger=False)  # a thread of the previous setting
    if loop.is_running():
        start(loop)


# Seconds a watchdog thread outlives the run that started it, waiting for the next run of its
# loop: ``asyncio.run()`` runs its loop three times (the program, then the shutdown of async
# generators and of the executor), and sync wrappers call ``run_until_complete`` in a loop; a
# thread start costs the loop thread a wait for the new thread to be scheduled (50 us on an idle
# machine, milliseconds on a loaded one).
LINGER = 1.0


def start(loop):
    """At the start of ``run_forever`` (and by ``set_watchdog`` on a running loop): wakes the
    loop's lingering watchdog thread, or starts one."""
    cfg = loop._prod_config
    if cfg is None:
        return
    watchdog = loop._prod_watchdog
    if watchdog is not None:
        if watchdog._config is cfg and watchdog.resume():
            return
        watchdog.stop()
    loop._prod_watchdog = ProductionWatchdog(loop, cfg)
    loop._prod_watchdog.start()


def stop(loop, linger=True):
    """At the end of ``run_forever``: never blocks. The thread stops sampling and exits unless
    the loop runs again within ``LINGER`` seconds (or at once when ``linger`` is False)."""
    watchdog = loop._prod_watchdog
    if watchdog is None:
        return
    if linger:
        watchdog.park()
    else:
        loop._prod_watchdog = None
        watchdog.stop()


# ------------------------------------------------------------------------------------------
# The watchdog


def _library_prefixes():
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {os.path.dirname(os.path.abspath(__file__))}
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs if d) + tuple(
        os.path.join(d, "") for d in dirs if d
    )


_LIBRARY_PREFIXES = None


def _is_library(filename):
    global _LIBRARY_PREFIXES
    if _LIBRARY_PREFIXES is None:
        _LIBRARY_PREFIXES = _library_prefixes()
    return filename.startswith(_LIBRARY_PREFIXES) or filename.startswith("<frozen ")


class ProductionWatchdog(_diagnostics.Watchdog):
    """The debug watchdog's thread, checking by sampling instead of per-callback bookkeeping."""

    def __init__(self, loop, config):
        super().__init__(loop)
        self._config = config
        self._cond = threading.Condition(threading.Lock())
        self._sampling = True  # False while the loop is not running (parked)
        self._quit = False
        self._exited = False
        self._mark = None  # (turns, callbacks) at the last check
        self._since = None  # when the current mark was first seen
        self._reported = None  # (mark, since, what, where, suppressed-at-start) of a stall
        self._last_blocked = None  # the last check that saw the reported stall still going on
        # The frames a loop waiting in its poll shows: the innermost Python frame is the
        # run_forever that called the native run (Loop's, or a Python subclass's override that
        # called it).
        codes = set()
        for klass in type(loop).__mro__:
            fn = klass.__dict__.get("run_forever")
            code = getattr(fn, "__code__", None)
            if code is not None:
                codes.add(code)
        self._idle_codes = frozenset(codes)

    def _interval(self):
        return max(self._config.threshold / 4, 0.001)

    def _run(self):
        cond = self._cond
        while True:
            with cond:
                if self._quit:
                    self._exited = True
                    return
                if self._sampling:
                    cond.wait(self._interval())  # woken early by park() and stop()
                    sample = self._sampling and not self._quit
                else:
                    if not cond.wait_for(lambda: self._sampling or self._quit, LINGER):
                        self._exited = True  # the loop did not run again: exit
                        return
                    sample = False
            if sample:
                self._check()

    def park(self):
        """The run ended: stop sampling; exit after ``LINGER`` unless resumed."""
        with self._cond:
            self._sampling = False
            self._cond.notify()

    def resume(self):
        """The loop runs again: sample again. False if the thread has exited (or is exiting)."""
        with self._cond:
            if self._exited or self._quit or self._thread is None:
                return False
            self._mark = self._since = self._reported = None
            self._sampling = True
            self._cond.notify()
            return True

    def stop(self):
        """Exit now (never waits for the thread)."""
        with self._cond:
            self._quit = True
            self._cond.notify()
        self._thread = None

    def _check(self):
        try:
            self._sample()
        except Exception:  # a diagnostic must never break the program, nor die silently
            logger.debug("ferroloop watchdog check failed", exc_info=True)

    def _sample(self):
        loop = self._loop
        tid = loop._thread_id
        if tid is None or self._quit:
            return
        try:
            st = loop._native_stats()
        except BaseException:  # noqa: B902 - a native panic (state borrowed): skip this sample
            return
        mark = (st[0], st[1])
        now = time.monotonic()
        if mark != self._mark:
            if self._reported is not None:
                self._report_end()
            self._mark, self._since = mark, now
            return
        if loop.get_debug():  # debug mode's own watchdog reports, precisely
            return
        if self._reported is not None:
            self._last_blocked = now
            return
        elapsed = now - self._since
        if elapsed < self._config.threshold:
            return
        frame = sys._current_frames().get(tid)
        try:
            if frame is None or frame.f_code in self._idle_codes:
                return  # waiting in the poll: idle, not blocked
            stack = []
            f = frame
            while f is not None and f.f_code not in self._idle_codes:
                stack.append(f)
                f = f.f_back
            stack.reverse()
            task = _current_task(loop, stack)
            self._report(elapsed, stack, task)
        finally:
            del frame

    def _report(self, elapsed, stack, task):
        cfg = self._config
        cfg.stalls += 1
        now = time.monotonic()
        allowed, suppressed = cfg.limiter.allow(now)
        if not allowed:
            self._reported = (self._mark, self._since, None, None)
            self._last_blocked = now
            return
        what = _diagnostics.describe_task(task) if task is not None else "a callback"
        user = next((f for f in reversed(stack) if not _is_library(f.f_code.co_filename)), None)
        inner = stack[-1] if stack else None
        blocking = _diagnostics._frame_where(user or inner) if stack else "(no Python frame)"
        lines = [
            f"the event loop has been blocked for {elapsed:.2f} s (threshold "
            f"{cfg.threshold:g} s) by {what}",
            f"  blocking line: {blocking}",
        ]
        if inner is not None and user is not None and inner is not user:
            lines.append(f"  innermost frame: {_diagnostics._frame_where(inner)}")
        if suppressed:
            lines.append(
                f"  ({suppressed} earlier stall(s) not reported: at most one report per "
                f"{cfg.limiter.interval:g} s)"
            )
        lines.append("  loop thread stack (most recent call last):")
        lines += _diagnostics.stack_lines(stack)
        self._reported = (self._mark, self._since, what, blocking)
        self._last_blocked = now
        logger.warning("\n".join(lines))

    def _report_end(self):
        _mark, since, what, blocking = self._reported
        self._reported = None
        if what is None:  # the start was rate-limited: so is the end
            return
        # The stall lasted at least until the last check that saw it.
        logger.warning(
            f"the event loop was blocked for at least {self._last_blocked - since:.2f} s by "
            f"{what} at {blocking}"
        )


def _current_task(loop, stack):
    """The task the loop is running: ``asyncio.current_task(loop)`` answers from another thread
    on 3.11-3.13 (a lookup in the ``_current_tasks`` dict); otherwise (3.14 keeps it per thread)
    the task whose coroutine's frame is on the loop thread's stack."""
    try:
        task = asyncio.current_task(loop)
    except RuntimeError:
        task = None
    if task is not None:
        return task
    frames = {id(f) for f in stack}
    try:
        tasks = asyncio.all_tasks(loop)
    except RuntimeError:
        return None
    for t in tasks:
        coro = t.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None and id(frame) in frames:
                return t
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return None
