"""Debug-mode diagnostics: the classic asyncio mistakes, named with the line to fix.

Everything here runs only in debug mode (``loop.set_debug(True)``, ``ferroloop.run(...,
debug=True)``, ``PYTHONASYNCIODEBUG=1``, ``python -m ferroloop --debug``); with debug off the
loop never calls into this module. Reports go to the ``ferroloop`` logger, one per event: a
summary line a person understands, then the evidence.

- A blocked loop: a watchdog thread notices a callback or task step running longer than
  ``loop.stall_threshold`` *while it runs*, and reports the loop thread's Python stack at that
  moment, so the report shows the blocking line (a ``time.sleep``, a blocking ``recv``, a busy
  loop). When the stall ends, a second line gives its total duration.
- Coroutines never awaited, with where they were created (``cr_origin``).
- Tasks destroyed while pending, tasks whose exception was never retrieved, and tasks that
  ``ferroloop.run()`` had to cancel at exit, with where they were created.

``SUMMARY`` accumulates what was reported, for ``python -m ferroloop --debug``'s summary at exit.
"""

import linecache
import logging
import signal
import sys
import threading
import time
import warnings

logger = logging.getLogger("ferroloop")

# How deep coroutine origins are tracked in debug mode (asyncio's constants.DEBUG_STACK_DEPTH).
ORIGIN_DEPTH = 10


class Summary:
    """What debug mode reported in this process."""

    def __init__(self):
        self.stalls = []  # (seconds, where)
        self.never_awaited = []  # (coroutine name, where)
        self.lost_tasks = []  # one-line descriptions

    def format(self):
        lines = ["ferroloop debug summary:"]
        if self.stalls:
            longest = max(self.stalls, key=lambda s: s[0])
            lines.append(
                f"  loop blocked {len(self.stalls)} time(s); longest {longest[0]:.2f} s "
                f"at {longest[1]}"
            )
            for secs, where in self.stalls[:10]:
                lines.append(f"    {secs:.2f} s at {where}")
        else:
            lines.append("  loop never blocked beyond the threshold")
        if self.never_awaited:
            lines.append(f"  {len(self.never_awaited)} coroutine(s) never awaited:")
            for name, where in self.never_awaited[:10]:
                lines.append(f"    {name} created at {where}")
        else:
            lines.append("  no coroutine left un-awaited")
        if self.lost_tasks:
            lines.append(f"  {len(self.lost_tasks)} task(s) lost or cancelled at exit:")
            for desc in self.lost_tasks[:10]:
                lines.append(f"    {desc}")
        else:
            lines.append("  no task lost or cancelled at exit")
        return "\n".join(lines)


SUMMARY = Summary()


# ------------------------------------------------------------------------------------------
# Describing things


def _where_frame(filename, lineno, func):
    return f"{filename}:{lineno} in {func}"


def _internal_dirs():
    import asyncio
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    return (os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep, here + os.sep)


def user_frame(stack):
    """The innermost entry of an extracted stack that is not asyncio's or ferroloop's own code:
    the line the user wrote (``asyncio.create_task(...)``), not ``tasks.py`` inside asyncio."""
    internal = _internal_dirs()
    for frame in reversed(stack):
        if not frame.filename.startswith(internal):
            return frame
    return stack[-1]


def describe_task(task):
    """``Task 'name' (coroutine f(), created at file:line in func)``."""
    parts = []
    coro = task.get_coro() if hasattr(task, "get_coro") else None
    if coro is not None:
        name = getattr(coro, "__qualname__", None) or getattr(coro, "__name__", "?")
        parts.append(f"coroutine {name}()")
    tb = getattr(task, "_source_traceback", None)
    if tb:
        frame = user_frame(tb)
        parts.append(f"created at {_where_frame(frame.filename, frame.lineno, frame.name)}")
    extra = f" ({', '.join(parts)})" if parts else ""
    return f"Task {task.get_name()!r}{extra}"


def _task_of(handle):
    cb = getattr(handle, "_callback", None)
    owner = getattr(cb, "__self__", None)
    import asyncio

    if isinstance(owner, asyncio.Task):
        return owner
    return None


def describe_handle(handle):
    task = _task_of(handle)
    if task is not None:
        return describe_task(task)
    return f"callback {handle!r}"


def stack_lines(frames, indent="    "):
    """A traceback-style listing of live frames, outermost first."""
    lines = []
    for fr in frames:
        code = fr.f_code
        lines.append(f'{indent}File "{code.co_filename}", line {fr.f_lineno}, in {code.co_name}')
        src = linecache.getline(code.co_filename, fr.f_lineno).strip()
        if src:
            lines.append(f"{indent}  {src}")
    return lines


def _frame_where(frame):
    code = frame.f_code
    line = linecache.getline(code.co_filename, frame.f_lineno).strip()
    where = _where_frame(code.co_filename, frame.f_lineno, code.co_name)
    return f"{where}: {line}" if line else where


# ------------------------------------------------------------------------------------------
# The blocked-loop watchdog


class Watchdog:
    """A daemon thread that checks, a few times per threshold, whether the callback the loop is
    running has been running too long, and reports it once per stall.

    The loop thread publishes what it runs in ``loop._diag_current`` (``(seq, handle, t0)``, set
    by ``Loop._run_handle_debug``); reading it and the loop thread's frame needs the GIL, which
    the watchdog gets at once when the loop is blocked in a call that releases it (``time.sleep``,
    socket I/O) and within the interpreter's switch interval (5 ms) when it is busy in Python code.
    """

    def __init__(self, loop):
        self._loop = loop
        self._stop = threading.Event()
        self._thread = None
        self._reported = None  # the sequence number of the stall reported last

    def start(self):
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="ferroloop-watchdog", daemon=True
        )
        # The thread starts with every signal blocked (it inherits the mask at creation), so the
        # kernel never delivers a process signal (Ctrl-C) to it: a signal handled there would
        # not end the loop thread's wait.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def stop(self):
        """Asks the thread to exit; does not wait for it (it exits within its polling interval).
        Called at the end of a run, while the loop is still marked running, where a blocking
        call (a join) would be reported by blocking-call detectors; ``join_stopped`` waits for
        it once the loop is no longer marked running."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._stopped = thread

    def join_stopped(self, timeout=1.0):
        """Waits for a stopped thread to exit, so that no thread outlives the run (a program
        that counts its threads sees the stdlib loop's count)."""
        thread = self.__dict__.pop("_stopped", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _interval(self):
        """Seconds between two checks (re-read each time: the threshold may change)."""
        return max(min(self._loop.stall_threshold / 4, 0.05), 0.001)

    def _run(self):
        stop = self._stop
        while not stop.wait(self._interval()):
            self._check()

    def _check(self):
        """One check, on the watchdog thread (debug mode: what ``_run_handle_debug`` published).
        Subclasses (``_production.ProductionWatchdog``) check differently."""
        loop = self._loop
        cur = loop._diag_current
        if cur is None or cur[0] == self._reported or not loop.get_debug():
            return
        seq, handle, t0 = cur
        elapsed = time.monotonic() - t0
        if elapsed < loop.stall_threshold:
            return
        frame = sys._current_frames().get(loop._thread_id)
        if frame is None or loop._diag_current is not cur or self._stop.is_set():
            return
        self._reported = seq
        report_stall(loop, seq, handle, elapsed, frame)
        del frame


def report_stall(loop, seq, handle, elapsed, frame):
    """The 'has been blocked' report, from the watchdog thread, while the stall goes on."""
    stack = []
    f = frame
    stop_code = loop._run_handle_debug.__func__.__code__
    while f is not None and f.f_code is not stop_code:
        stack.append(f)
        f = f.f_back
    stack.reverse()
    blocking = _frame_where(stack[-1]) if stack else "(no Python frame)"
    what = describe_handle(handle)
    lines = [
        f"the event loop has been blocked for {elapsed:.2f} s by {what}",
        f"  blocking line: {blocking}",
        "  loop thread stack (most recent call last):",
    ]
    lines += stack_lines(stack)
    # The loop thread writes the end report when the callback returns.
    loop._diag_reported = (seq, blocking, what)
    logger.warning("\n".join(lines))


def stall_ended(loop, seq, elapsed):
    """Called by the loop thread after a callback returns: closes a reported stall."""
    rep = loop._diag_reported
    if rep is None or rep[0] != seq:
        return
    loop._diag_reported = None
    _, blocking, what = rep
    SUMMARY.stalls.append((elapsed, blocking.split(": ", 1)[0]))
    logger.warning(f"the event loop was blocked for {elapsed:.2f} s by {what} at {blocking}")


# ------------------------------------------------------------------------------------------
# Coroutines never awaited


_hook_users = 0
_orig_showwarnmsg = None


def _showwarnmsg(msg):
    """Sees every warning that passes the filters; picks out CPython's "coroutine ... was never
    awaited" (its ``source`` is the coroutine). Hooked here rather than by wrapping
    ``warnings._warn_unawaited_coroutine``, whose ``stacklevel`` would then point at the wrapper."""
    try:
        coro = msg.source
        if msg.category is RuntimeWarning and hasattr(coro, "cr_code"):
            name = getattr(coro, "__qualname__", "?")
            origin = getattr(coro, "cr_origin", None)
            if origin:
                filename, lineno, func = origin[0]
                where = _where_frame(filename, lineno, func)
                SUMMARY.never_awaited.append((name, where))
                logger.warning(f"coroutine {name!r} was never awaited (created at {where})")
            else:
                SUMMARY.never_awaited.append((name, f"{msg.filename}:{msg.lineno}"))
                logger.warning(
                    f"coroutine {name!r} was never awaited (dropped at {msg.filename}:"
                    f"{msg.lineno}; created before debug mode was on, so its origin is unknown)"
                )
    except Exception:  # a diagnostic must never break the program
        pass
    _orig_showwarnmsg(msg)


def install_unawaited_hook():
    """Report never-awaited coroutines. Reference-counted: nested debug loops share it. CPython
    looks ``warnings._showwarnmsg`` up at each warning, so replacing it is enough."""
    global _hook_users, _orig_showwarnmsg
    if _hook_users == 0:
        _orig_showwarnmsg = warnings._showwarnmsg
        warnings._showwarnmsg = _showwarnmsg
    _hook_users += 1


def uninstall_unawaited_hook():
    global _hook_users
    if _hook_users == 0:
        return
    _hook_users -= 1
    if _hook_users == 0:
        warnings._showwarnmsg = _orig_showwarnmsg


# ------------------------------------------------------------------------------------------
# Tasks


def on_exception_context(context):
    """Called by ``Loop.call_exception_handler`` in debug mode, before the handler runs."""
    message = context.get("message")
    task = context.get("task") or context.get("future")
    if task is None or not hasattr(task, "get_name"):
        return
    if message == "Task was destroyed but it is pending!":
        desc = describe_task(task)
        SUMMARY.lost_tasks.append(f"{desc}: destroyed while pending")
        logger.warning(f"task destroyed while pending: {desc}")
    elif message == "Task exception was never retrieved":
        exc = context.get("exception")
        desc = describe_task(task)
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        SUMMARY.lost_tasks.append(f"{desc}: exception never retrieved{detail}")
        logger.warning(f"task exception was never retrieved: {desc}{detail}")


_reported_at_exit = None


def report_pending_at_exit(loop):
    """In debug mode, the tasks ``run()`` is about to cancel (each reported once)."""
    import asyncio
    import weakref

    global _reported_at_exit
    if _reported_at_exit is None:
        _reported_at_exit = weakref.WeakSet()
    for task in asyncio.all_tasks(loop):
        if task in _reported_at_exit:
            continue
        _reported_at_exit.add(task)
        desc = describe_task(task)
        SUMMARY.lost_tasks.append(f"{desc}: still pending when run() finished, cancelled")
        logger.warning(f"task still pending when run() finished, cancelled: {desc}")


def install_process_hooks():
    """``python -m ferroloop --debug``: debug mode for the whole program. Coroutine origins are
    tracked from the start, never-awaited coroutines are recorded for the summary, and tasks that
    ``asyncio.run()`` cancels at exit are reported (its ``Runner.close`` looks
    ``runners._cancel_all_tasks`` up at call time)."""
    import asyncio.runners as runners

    sys.set_coroutine_origin_tracking_depth(ORIGIN_DEPTH)
    install_unawaited_hook()
    orig = runners._cancel_all_tasks

    def _cancel_all_tasks(loop):
        if loop.get_debug():
            report_pending_at_exit(loop)
        return orig(loop)

    runners._cancel_all_tasks = _cancel_all_tasks
