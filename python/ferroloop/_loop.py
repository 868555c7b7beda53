"""ferroloop.Loop: the event loop class.

The native base class ``LoopCore`` (Rust, ``crates/ferroloop-py``) does everything done once per
callback, timer or fd event: ``call_soon``, ``call_later``, ``call_at``,
``call_soon_threadsafe``, ``time``, the turn itself and fd watching. This module adds what is done
once per run or per setup, in Python, where it is easiest to keep identical to the stdlib.

Where the stdlib's own implementation of a per-setup method is plain Python, ferroloop uses that
very function (``_borrowing.borrow``): its behaviour, messages and version differences (3.11,
3.12, 3.13) are then the installed stdlib's by construction, not a copy that drifts. That code
reads private attributes of the loop, which ``__init__`` below (or ``LoopCore``, or a property)
provides; the list per Python version is ``tests/borrowed_manifest/<version>.toml``, checked by
``tests/test_borrowed_manifest.py`` (docs/borrowing.md).
"""

import asyncio
import collections.abc
import inspect
import os
import signal
import socket
import sys
import threading
import weakref
from asyncio import base_events, coroutines, events, format_helpers, unix_events
from asyncio.log import logger

from . import _compat, _diagnostics, _native, _net, _production, _resolve
from ._borrowing import borrow
from ._net import NetworkingMixin

__all__ = ["Loop"]

_Base = base_events.BaseEventLoop
_Unix = unix_events._UnixSelectorEventLoop

# The stdlib's methods that Loop's own methods call with the loop as self.
_stdlib_set_debug = borrow(_Base, "set_debug")
_stdlib_call_exception_handler = borrow(_Base, "call_exception_handler")

# The native sock_* coroutines (LoopCore.sock_recv & co., sock/) are coroutines for asyncio:
# iscoroutine() accepts them, so create_task / ensure_future / run_until_complete do (as Cython
# registers its coroutine type).
collections.abc.Coroutine.register(_native.SockOp)


class Loop(_native.LoopCore, NetworkingMixin, asyncio.AbstractEventLoop):
    """An asyncio event loop whose scheduling core is written in Rust."""

    # Seconds a callback may run before debug mode reports it (asyncio's default).
    slow_callback_duration = 0.1
    # Seconds a callback may hold the loop before debug mode's watchdog reports it, while it
    # still runs, with the blocking line (ferroloop's diagnostics).
    stall_threshold = 0.1

    def __init__(self):
        # A subclass that defines its own time(): the turn and call_later follow it.
        if type(self).time is not _native.LoopCore.time:
            self._set_time_replaced(True)
        self._thread_id = None
        self._exception_handler = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._current_handle = None
        self._old_agen_hooks = None
        # Signal handling (unix_events): the self-pipe is created on first use.
        self._signal_handlers = {}
        self._self_pipe = None
        # Networking (_net.py): fd -> transport, and listening Unix sockets to unlink (3.13+).
        self._transports = weakref.WeakValueDictionary()
        self._unix_server_sockets = {}
        # 3.14+: the loop owns its child watcher, which the stdlib's _make_subprocess_transport
        # reads as self._watcher (3.11-3.13 ask the policy's watcher instead): _compat.py.
        watcher = _compat.new_child_watcher()
        if watcher is not None:
            self._watcher = watcher
        # Diagnostics (debug mode only): what the loop thread runs now, for the watchdog.
        self._diag_current = None
        self._diag_reported = None
        self._diag_seq = 0
        self._watchdog = None
        self._kept_tasks = set()
        self._fileobjs = {}  # fd -> the object it was registered with (_register_fileobj)
        self._wakeup_fd = None  # the signal wakeup fd this loop set while it runs
        _production.init_loop(self)  # production mode: FERROLOOP_WATCHDOG, FERROLOOP_PS
        # PYTHONASYNCIODEBUG=1 and -X dev switch debug mode on at construction.
        self.set_debug(coroutines._is_debug_mode())

    # The stdlib loop's turn and call_later call self.time(), so a test that replaces
    # loop.time (mock.patch.object(loop, "time"), as aiohttp's do) moves its timers; the native
    # turn reads its own clock unless told that time() was replaced.
    def __setattr__(self, name, value):
        if name == "time":
            self._set_time_replaced(True)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        object.__delattr__(self, name)
        if name == "time":
            self._set_time_replaced(type(self).time is not _native.LoopCore.time)

    # ----------------------------------------------------------------------------------------
    # Running and stopping

    def run_forever(self):
        """Run until stop() is called."""
        self._run_forever_setup()
        try:
            self._run_native()
        finally:
            self._run_forever_cleanup()

    def _run_forever_setup(self):
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        self._old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._install_wakeup_fd()
            if self._debug:
                self._start_diagnostics()
            if self._prod_config is not None:
                _production.start(self)
        except BaseException:
            self._run_forever_cleanup()
            raise

    def _run_forever_cleanup(self):
        # Every step runs even when an earlier one raises, as the stdlib's try/finally restores
        # the same state: a cleanup stopped halfway would leave the loop marked running for good
        # ("Cannot run the event loop while another loop is running"). The first error is
        # raised once all the steps have run. Nothing here blocks: a blocking-call detector
        # (anyio's suite runs under blockbuster) may raise on any blocking call while the loop
        # is still marked running.
        _run_all(
            self._stop_diagnostics,
            lambda: _production.stop(self),
            self._restore_wakeup_fd,
            self._reset_running_state,
            lambda: self._set_coroutine_origin_tracking(False),
            self._restore_agen_hooks,
            self._join_diagnostics,  # last: the loop is no longer marked running
        )

    def _reset_running_state(self):
        self._stopping = False
        self._thread_id = None
        events._set_running_loop(None)

    def _restore_agen_hooks(self):
        if self._old_agen_hooks is not None:
            hooks, self._old_agen_hooks = self._old_agen_hooks, None
            sys.set_asyncgen_hooks(*hooks)

    def _install_wakeup_fd(self):
        # While the loop runs in the main thread, CPython's C signal handler also writes into
        # the loop's signal wakeup pipe (crates/ferroloop-py/src/signals.rs), as uvloop does: a
        # signal the kernel delivers to another thread, or one landing just before the wait
        # starts, still ends the wait at once, and the turn runs the Python handler (Ctrl-C's
        # KeyboardInterrupt). Only when no wakeup fd is set: one set by add_signal_handler()
        # is this loop's own self-pipe, and one set by other code is theirs.
        #
        # `signal` can only read the wakeup fd by setting another, and the C handler writes a
        # signal's byte into whichever fd is set at that instant: a signal landing between two
        # calls would reach this loop's pipe instead of the fd that was set, and an asyncio
        # handler waiting for that byte (add_signal_handler(), a child watcher's SIGCHLD) would
        # never run. So the swaps are lossless: what reaches this loop's pipe while it stands in
        # for another fd is handed to that fd (_give_back_wakeup_fd).
        self._wakeup_fd = None
        if threading.current_thread() is not threading.main_thread():
            return
        if self._signal_handlers:
            return  # add_signal_handler() set this loop's self-pipe: no swap at all
        fd = self._signal_wakeup_fd()
        self._take_signal_bytes()  # left from an earlier run: its handlers have run
        try:
            old = signal.set_wakeup_fd(fd)
        except (ValueError, OSError):
            return
        if old == -1:
            self._wakeup_fd = fd
        else:
            self._give_back_wakeup_fd(old)  # someone else's: leave it in place

    def _restore_wakeup_fd(self):
        fd, self._wakeup_fd = self._wakeup_fd, None
        if fd is None:
            return
        try:
            self._take_signal_bytes()  # ours while it was set: the turns ran their handlers
            prev = signal.set_wakeup_fd(fd)  # no change while ours is still set
            if prev == fd:
                signal.set_wakeup_fd(-1)
            else:
                # add_signal_handler() replaced it meanwhile: that one stays, as it would on the
                # stdlib loop, so signals arriving between runs reach the next run.
                self._give_back_wakeup_fd(prev)
        except (ValueError, OSError):
            pass

    def _give_back_wakeup_fd(self, fd):
        """Sets the wakeup fd back to `fd` after this loop's pipe stood in for it, and writes
        into `fd` the signal numbers that reached the pipe meanwhile."""
        signal.set_wakeup_fd(fd)
        data = self._take_signal_bytes()
        if data:
            try:
                os.write(fd, data)
            except OSError:
                pass  # full or closed: as when the C handler's own write fails

    run_until_complete = borrow(_Base, "run_until_complete")
    is_running = borrow(_Base, "is_running")
    _check_running = borrow(_Base, "_check_running")
    _check_closed = borrow(_Base, "_check_closed")

    def close(self):
        """Close the loop: drop pending callbacks, release its file descriptors, shut down the
        default executor without waiting, remove signal handlers. Closing twice does nothing."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._debug:
            logger.debug("Close %r", self)
        self._close_self_pipe_reader()
        self._fileobjs.clear()
        self._close_native()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            import warnings

            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown "
                f"stage, skipping signal handlers removal",
                ResourceWarning,
                source=self,
            )
            self._signal_handlers.clear()
        self._close_self_pipe()

    __del__ = borrow(_Base, "__del__")
    __repr__ = borrow(_Base, "__repr__")

    # ----------------------------------------------------------------------------------------
    # Futures and tasks

    # create_future and create_task are native; the stdlib's create_task runs when a task
    # factory is set or in debug mode (where it also trims the task's creation traceback).
    _create_task_py = borrow(_Base, "create_task")
    set_task_factory = borrow(_Base, "set_task_factory")
    get_task_factory = borrow(_Base, "get_task_factory")

    # ----------------------------------------------------------------------------------------
    # Debug mode

    def set_debug(self, enabled):
        _stdlib_set_debug(self, enabled)
        if self.is_running() and enabled:
            self.call_soon_threadsafe(self._start_diagnostics)

    def _start_diagnostics(self):
        if self._watchdog is None:
            self._watchdog = _diagnostics.Watchdog(self)
            self._watchdog.start()
            _diagnostics.install_unawaited_hook()

    def _stop_diagnostics(self):
        # Never blocks: the watchdog is told to stop, not joined (it exits within its polling
        # interval, a few milliseconds); _join_diagnostics waits for it after the loop is no
        # longer marked running.
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            self._stopped_watchdog = watchdog
            try:
                watchdog.stop()
            finally:
                _diagnostics.uninstall_unawaited_hook()

    def _join_diagnostics(self):
        watchdog = self.__dict__.pop("_stopped_watchdog", None)
        if watchdog is not None:
            watchdog.join_stopped()
    _set_coroutine_origin_tracking = borrow(_Base, "_set_coroutine_origin_tracking")
    _check_callback = borrow(_Base, "_check_callback")
    _check_thread = borrow(_Base, "_check_thread")

    def _debug_check_call(self, callback, method, check_thread):
        # Called by the native call_soon & co in debug mode only.
        if check_thread:
            self._check_thread()
        self._check_callback(callback, method)

    def _debug_set_traceback(self, handle):
        # Called by the native scheduling methods in debug mode: frame 1 is the caller's frame.
        handle._source_traceback = format_helpers.extract_stack(sys._getframe(1))

    def _run_handle_debug(self, handle):
        # Called by the native turn in debug mode instead of running the handle directly.
        try:
            self._current_handle = handle
            self._diag_seq = seq = self._diag_seq + 1
            t0 = self.time()
            self._diag_current = (seq, handle, t0)
            handle._run()
            self._diag_current = None
            dt = self.time() - t0
            if self._diag_reported is not None:
                _diagnostics.stall_ended(self, seq, dt)
            if dt >= self.slow_callback_duration:
                logger.warning(
                    "Executing %s took %.3f seconds", base_events._format_handle(handle), dt
                )
        finally:
            self._diag_current = None
            self._current_handle = None
            # Break cycles when an exception occurs (as base_events._run_once does): a frame kept
            # alive by a traceback links back to this frame, which must not keep the handle (and
            # through it a task) alive.
            handle = None

    # ----------------------------------------------------------------------------------------
    # Exception handling

    get_exception_handler = borrow(_Base, "get_exception_handler")
    set_exception_handler = borrow(_Base, "set_exception_handler")
    default_exception_handler = borrow(_Base, "default_exception_handler")
    def call_exception_handler(self, context):
        if self._debug:
            _diagnostics.on_exception_context(context)
        _stdlib_call_exception_handler(self, context)

    call_exception_handler.__doc__ = _stdlib_call_exception_handler.__doc__

    # ----------------------------------------------------------------------------------------
    # Production mode (_production.py; begin): the blocked-loop report without debug mode

    def set_watchdog(self, threshold, *, report_interval=60.0):
        """Report, through the ``ferroloop`` logger and while it lasts, any callback or task step
        that holds the loop longer than ``threshold`` seconds, with the task and the blocking
        line; at most one report per ``report_interval`` seconds. No cost per callback: a
        thread samples the loop's counters every ``threshold / 4``. ``None`` turns it off.
        ``FERROLOOP_WATCHDOG=threshold`` sets it for every loop of the process."""
        _production.set_watchdog(self, threshold, report_interval)

    def get_watchdog(self):
        """The watchdog threshold in seconds, or None when it is off."""
        cfg = self._prod_config
        return None if cfg is None else cfg.threshold

    # Production mode (end)
    # ----------------------------------------------------------------------------------------
    # Keeping fire-and-forget tasks alive (opt-in)

    def set_keep_tasks(self, enabled):
        """Keep every pending task created by ``create_task`` alive until it finishes, so a task
        whose last reference was dropped cannot be garbage-collected mid-flight."""
        if enabled:
            # An instance attribute shadows the native method for this loop only.
            self.create_task = self._create_task_kept
        else:
            self.__dict__.pop("create_task", None)

    def get_keep_tasks(self):
        return "create_task" in self.__dict__

    def _create_task_kept(self, coro, **kwargs):
        task = _native.LoopCore.create_task(self, coro, **kwargs)
        if not task.done():
            self._kept_tasks.add(task)
            task.add_done_callback(self._kept_tasks.discard)
        return task

    # ----------------------------------------------------------------------------------------
    # Async generators

    _asyncgen_finalizer_hook = borrow(_Base, "_asyncgen_finalizer_hook")
    _asyncgen_firstiter_hook = borrow(_Base, "_asyncgen_firstiter_hook")
    shutdown_asyncgens = borrow(_Base, "shutdown_asyncgens")

    # ----------------------------------------------------------------------------------------
    # Executor

    run_in_executor = borrow(_Base, "run_in_executor")
    set_default_executor = borrow(_Base, "set_default_executor")
    shutdown_default_executor = borrow(_Base, "shutdown_default_executor")
    _do_shutdown = borrow(_Base, "_do_shutdown")
    _check_default_executor = borrow(_Base, "_check_default_executor")

    # ----------------------------------------------------------------------------------------
    # Name resolution: in the default executor (the stdlib's code), except numeric hosts, which
    # are answered on the loop thread (_resolve.py)

    _getaddrinfo_debug = borrow(_Base, "_getaddrinfo_debug")
    getaddrinfo = _resolve.getaddrinfo
    getnameinfo = _resolve.getnameinfo

    # ----------------------------------------------------------------------------------------
    # Watching file descriptors

    def add_reader(self, fd, callback, *args):
        """Call ``callback(*args)`` whenever ``fd`` is readable."""
        self._ensure_fd_no_transport(fd)
        self._check_closed()
        self._native_add_reader(self._register_fileobj(fd), callback, *args)

    def remove_reader(self, fd):
        """Stop watching ``fd`` for reading; True if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_fd(fd, self._native_remove_reader)

    def add_writer(self, fd, callback, *args):
        """Call ``callback(*args)`` whenever ``fd`` is writable."""
        self._ensure_fd_no_transport(fd)
        self._check_closed()
        self._native_add_writer(self._register_fileobj(fd), callback, *args)

    def remove_writer(self, fd):
        """Stop watching ``fd`` for writing; True if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_fd(fd, self._native_remove_writer)

    # The stdlib's private spellings, which return the handle; some libraries call them.
    def _add_reader(self, fd, callback, *args):
        return self._native_add_reader(self._register_fileobj(fd), callback, *args)

    def _add_writer(self, fd, callback, *args):
        return self._native_add_writer(self._register_fileobj(fd), callback, *args)

    # A transport's close() calls `_remove_reader`/`_remove_writer` with its fd, an int never
    # registered by object: LoopCore's `_remove_reader_checked`/`_remove_writer_checked` remove
    # that natively and hand anything else to _remove_fd (assigned below the class).

    # A file object (a socket) registered by object, not by number, is remembered, so that it
    # can still be unregistered after it was closed (its fileno() is then -1), as selectors
    # finds a closed object's key by identity (anyio closes a socket, then removes its reader).
    def _register_fileobj(self, fileobj):
        fd = _fileobj_to_fd(fileobj)
        if fd > _FD_MAX:
            # What epoll.register(fd) raises for it in the stdlib's selector.
            raise OverflowError("Python int too large to convert to C int")
        if not isinstance(fileobj, int):
            self._fileobjs[fd] = fileobj
        return fd

    def _remove_fd(self, fileobj, native_remove):
        # The stdlib's _remove_reader/_remove_writer: False on a closed loop, whatever `fd` is,
        # then selectors' lookup (its ValueError for an invalid fd, False for one not watched,
        # which an fd beyond a C int's range never is).
        if self.is_closed():
            return False
        try:
            fd = _fileobj_to_fd(fileobj)
        except ValueError:
            fd = next((n for n, obj in self._fileobjs.items() if obj is fileobj), None)
            if fd is None:
                raise
        if fd > _FD_MAX:
            return False
        removed = native_remove(fd)
        if fd in self._fileobjs and self._fd_callbacks(fd) == (None, None):
            del self._fileobjs[fd]
        return removed

    # ----------------------------------------------------------------------------------------
    # Signals (unix_events' implementation over a self-pipe that is created on first use)

    add_signal_handler = borrow(_Unix, "add_signal_handler")
    remove_signal_handler = borrow(_Unix, "remove_signal_handler")
    _handle_signal = borrow(_Unix, "_handle_signal")
    _check_signal = borrow(_Unix, "_check_signal")
    _process_self_data = borrow(_Unix, "_process_self_data")

    @property
    def _csock(self):
        # add_signal_handler() hands this socket to signal.set_wakeup_fd(): the C signal handler
        # writes the signal number into it, which wakes the loop's wait.
        if self._self_pipe is None:
            self._check_closed()
            ssock, csock = socket.socketpair()
            ssock.setblocking(False)
            csock.setblocking(False)
            self._self_pipe = (ssock, csock)
            self._native_add_reader(ssock.fileno(), self._read_from_self)
        return self._self_pipe[1]

    def _read_from_self(self):
        ssock = self._self_pipe[0]
        while True:
            try:
                data = ssock.recv(4096)
                if not data:
                    break
                self._process_self_data(data)
            except InterruptedError:
                continue
            except BlockingIOError:
                break

    def _close_self_pipe_reader(self):
        if self._self_pipe is not None:
            self._native_remove_reader(self._self_pipe[0].fileno())

    def _close_self_pipe(self):
        if self._self_pipe is not None and not self._signal_handlers:
            for s in self._self_pipe:
                s.close()
            self._self_pipe = None

    def _add_callback(self, handle):
        # A stdlib Handle (signal handlers are asyncio.Handle objects, as in unix_events).
        # Its _run enters the handle's own context, so the wrapper gets a fresh copy.
        if not handle._cancelled:
            self.call_soon(handle._run)

    def _add_callback_signalsafe(self, handle):
        self._add_callback(handle)
        self._write_to_self()

    # ----------------------------------------------------------------------------------------
    # Metrics

    def stats(self):
        """Loop metrics, always on: turns, callbacks run, seconds busy and idle (waiting for
        I/O or timers), the longest stall (the longest time the loop went without polling),
        ready-queue depth, live and cancelled timers, watched fds, and the zero-timeout waits
        that the readiness hint skipped (``docs/semantics.md``)."""
        (turns, callbacks, ready, timers, cancelled, fds, running, idle,
         longest) = self._native_stats()
        return {
            "turns": turns,
            "callbacks": callbacks,
            "busy": max(running - idle, 0.0),
            "idle": idle,
            "longest_stall": longest,
            "ready": ready,
            "timers": timers - cancelled,
            "cancelled_timers": cancelled,
            "fds": fds,
            "waits_skipped": self._wait_hint_stats()[0],
        }


def _run_all(*steps):
    """Calls every step, even when one raises; then raises the first error (if any)."""
    error = None
    for step in steps:
        try:
            step()
        except BaseException as exc:  # noqa: B902 - re-raised below, after the other steps
            if error is None:
                error = exc
    if error is not None:
        try:
            raise error
        finally:
            error = None


# The native methods keep their names free for the Python wrappers above.
Loop._native_add_reader = _native.LoopCore._add_reader
Loop._native_add_writer = _native.LoopCore._add_writer
Loop._native_remove_reader = _native.LoopCore._remove_reader
Loop._native_remove_writer = _native.LoopCore._remove_writer
Loop._remove_reader = _native.LoopCore._remove_reader_checked
Loop._remove_writer = _native.LoopCore._remove_writer_checked



def _coroutine_marker():
    # What inspect.markcoroutinefunction (3.12+) stores in `_is_coroutine_marker`, or None.
    if not hasattr(inspect, "markcoroutinefunction"):
        return None

    def f():
        pass

    return inspect.markcoroutinefunction(f)._is_coroutine_marker


if _net.PY_SOCK:
    # FERROLOOP_PY_SOCK=1: the stdlib's sock_* coroutines instead of LoopCore's native ones
    # (_net.py).
    for _name in _net.SOCK_COROUTINES:
        setattr(Loop, _name, getattr(NetworkingMixin, _name))
else:
    # LoopCore's native sock_* methods, marked as coroutine functions as the stdlib's `async
    # def`s are (asyncio.iscoroutinefunction, inspect.iscoroutinefunction on 3.12+, mock's
    # AsyncMock) without a Python frame per call (sock/coro_method.rs).
    _marker = _coroutine_marker()
    for _name in _net.SOCK_COROUTINES:
        setattr(Loop, _name, _native.coroutine_method(
            getattr(_native.LoopCore, _name), coroutines._is_coroutine, _marker))
    del _marker
del _name


# The largest fd: an int of C (the kernel's and epoll's type).
_FD_MAX = 2**31 - 1


def _fileobj_to_fd(fileobj):
    """An fd from an int or an object with fileno(), with selectors' errors."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd
