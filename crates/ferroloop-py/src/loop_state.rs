//! `LoopCore`'s fields, and the helpers every binding module shares (errors, handle creation).
//!
//! The loop's logic (ready queue, timer heap, fd table kept in step with epoll, the turn) is
//! `ferroloop_core::EventLoop`; this struct holds one, behind the GIL, with what only the binding
//! needs (Python objects, metrics, the signal wakeup pipe). Its Python methods are in
//! `loop_core.rs`, its run in `turn.rs`, fd watching in `fd_watch.rs`.
//!
//! Module layering (no import circle): `gil`, `gc`, `stats`, `signals` → `handle` → `loop_state`
//! → `turn` → `handle_api` → `fd_watch` → `loop_core`.

use crate::call_args::CallArgs;
use crate::gil::GilCell;
use crate::handle::{Handle, HandleRef};
use crate::signals::SignalPipe;
use crate::stats::{Counters, TimeStats};
use ferroloop_core::{EventLoop, Events, OffsetClock, Waker};
use pyo3::exceptions::{PyBaseException, PyOSError, PyRuntimeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyWeakrefReference};
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

/// What the loop holds under the GIL.
pub(crate) struct LoopState {
    /// Ready queue, timer heap, fd table and poller (the core crate). Its poller is `None` once
    /// the loop is closed.
    pub(crate) ev: EventLoop<HandleRef, OffsetClock>,
    pub(crate) times: TimeStats,
    /// The signal wakeup pipe (signals.rs), created the first time the loop runs in the main
    /// thread; watched by the poller under `SIGNAL_TOKEN`, outside the fd table.
    pub(crate) signal_pipe: Option<SignalPipe>,
    /// The `sock_*` registrations left lingering (fd_watch.rs, "sock_* registrations"): fd ->
    /// a weak reference to the socket object whose wait registered it. Only a later wait on that
    /// same object, still open with that fd, trusts the registration.
    pub(crate) sock_owners: HashMap<RawFd, Py<PyWeakrefReference>>,
    /// `sock_owners` is swept of dead and closed sockets when it grows past this.
    pub(crate) sock_sweep_at: usize,
}

/// `loop._debug`: the stdlib keeps whatever object was assigned (`set_debug(1)` makes
/// `get_debug()` answer `1`) and the attribute can be deleted. The hot paths read the truth value
/// (`LoopCore::debug`); this holds the rest.
pub(crate) enum DebugValue {
    /// `True` or `False`, the value of `LoopCore::debug`.
    Flag,
    /// Another object, whose truth value `LoopCore::debug` holds.
    Object(Py<PyAny>),
    /// `del loop._debug`: reading it raises `AttributeError` (`LoopCore::debug` is false).
    Deleted,
}

/// The native base class of `ferroloop.Loop`.
#[pyclass(subclass, frozen, module = "ferroloop._native", name = "LoopCore")]
pub struct LoopCore {
    pub(crate) st: GilCell<LoopState>,
    /// The wait's event buffer. Only the thread running the loop locks it (uncontended); it is a
    /// mutex so that it can be used with the GIL released.
    pub(crate) events: Mutex<Events>,
    /// Wakes the poller from any thread (`call_soon_threadsafe`). Kept outside `st` so that waking
    /// needs no borrow; it is `None` after close.
    pub(crate) waker: GilCell<Option<Waker>>,
    /// `stop()` was called: the loop finishes the current turn and `run_forever` returns.
    pub(crate) stopping: AtomicBool,
    /// `time` is replaced on the instance or in a subclass (`Loop.__setattr__` and `__init__`
    /// keep it): each turn and `call_later` then read `self.time()`, as the stdlib loop does.
    pub(crate) time_replaced: AtomicBool,
    pub(crate) closed: AtomicBool,
    pub(crate) debug: AtomicBool,
    /// What `loop._debug` holds when that is not simply `debug` (`loop_core.rs`, `_debug`).
    pub(crate) debug_value: GilCell<DebugValue>,
    /// `loop.set_task_factory()`'s factory; `None` for the default (`asyncio.Task`).
    pub(crate) task_factory: GilCell<Option<Py<PyAny>>>,
    /// `{'loop': self}`, the keyword arguments of `create_future`'s `Future(loop=self)`, made
    /// once (`LoopCore::create_future`); reported to the collector, dropped by `__clear__`.
    pub(crate) loop_kwargs: GilCell<Option<Py<PyDict>>>,
    /// `time.get_clock_info('monotonic').resolution`: timers due within it of now run now.
    pub(crate) clock_resolution: f64,
    pub(crate) counters: Counters,
}

impl LoopCore {
    #[inline]
    pub(crate) fn debug(&self) -> bool {
        self.debug.load(Relaxed)
    }

    /// `loop._debug` assigned or deleted: the flag the hot paths read, and the rest
    /// (`DebugValue`). The old object is dropped after the borrow (a `__del__` may run).
    pub(crate) fn replace_debug(slf: &Bound<'_, Self>, enabled: bool, new: DebugValue) {
        let this = slf.get();
        this.debug.store(enabled, Relaxed);
        let old = std::mem::replace(&mut *this.debug_value.borrow_mut(slf.py()), new);
        drop(old);
    }

    /// A timer still in the heap was cancelled (counts towards compaction).
    pub(crate) fn timer_cancelled(&self, py: Python<'_>) {
        self.st.borrow_mut(py).ev.timer_cancelled();
    }

    #[inline]
    pub(crate) fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Relaxed) {
            return Err(closed_error());
        }
        Ok(())
    }

    /// Builds a handle; `context=None` means a copy of the current context (asyncio.Handle).
    pub(crate) fn new_handle(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: CallArgs,
        context: Option<Bound<'_, PyAny>>,
        when: f64,
    ) -> PyResult<Handle> {
        let py = slf.py();
        let context = match context {
            Some(c) if !c.is_none() => c.unbind(),
            _ => {
                let own = copy_context(py)?;
                crate::gc::untrack_own_context(&own);
                own
            }
        };
        Ok(Handle::new(
            slf.clone().into_any().unbind(),
            callback.unbind(),
            args,
            context,
            when,
        ))
    }
}

/// `RuntimeError('Event loop is closed')`.
pub(crate) fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// The `OSError` the stdlib raises for `e`: `OSError(errno, strerror)`, so Python picks the
/// subclass (`ConnectionResetError`, ...) and the message is the C library's text
/// (`[Errno 9] Bad file descriptor`), without Rust's ` (os error 9)` suffix.
pub(crate) fn os_error(e: io::Error) -> PyErr {
    match e.raw_os_error() {
        Some(code) => PyOSError::new_err((code, strerror(code))),
        None => PyOSError::new_err(e.to_string()),
    }
}

/// `os.strerror(code)`: std formats an OS error as `strerror(code) (os error N)`.
pub(crate) fn strerror(code: i32) -> String {
    let full = io::Error::from_raw_os_error(code).to_string();
    match full.strip_suffix(&format!(" (os error {code})")) {
        Some(text) => text.to_owned(),
        None => full,
    }
}

/// `f()` with the `contextvars.Context` at `ctx` entered (`ctx.run(f)` without a call): how a
/// handle runs its callback (`turn.rs`) and the native accept loop sets a connection up. An
/// error exiting the context is raised after `f`'s own result, as `Context.run` does.
#[inline]
pub(crate) fn in_context<R>(
    py: Python<'_>,
    ctx: *mut ffi::PyObject,
    f: impl FnOnce() -> PyResult<R>,
) -> PyResult<R> {
    // SAFETY: the caller holds a reference to `ctx` for the whole call, and the GIL (`py`).
    // PyContext_Enter type-checks it (TypeError for a non-Context) and fails cleanly, with an
    // exception set, when the context is already entered.
    if unsafe { ffi::PyContext_Enter(ctx) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let r = f();
    // SAFETY: the same context was entered just above on this thread, so exiting it is
    // balanced; it can only fail if `f` left a different context current, which the public API
    // cannot do.
    if unsafe { ffi::PyContext_Exit(ctx) } < 0 {
        let e = PyErr::fetch(py);
        return r.and(Err(e));
    }
    r
}

/// The exception object of `err`, with its traceback attached (`__traceback__`): what an
/// `except ... as exc:` clause binds. On 3.11 the traceback is kept apart from the value until
/// then, so `err.value(py)` alone would hand Python an exception with no traceback.
pub(crate) fn exception_value<'py>(py: Python<'py>, err: &PyErr) -> Bound<'py, PyBaseException> {
    err.clone_ref(py).into_value(py).into_bound(py)
}

/// Runs `f` with `err` as the exception being handled, then restores the previous one: what
/// the body of the stdlib's `except BaseException as exc:` clause (or a `finally:` block that
/// the exception passes through) runs under. Inside `f`, `sys.exc_info()` is the exception, and
/// an exception raised there gets it as its `__context__` from CPython itself, so a traceback
/// printed of it shows both, "During handling of the above exception, another exception
/// occurred".
pub(crate) fn while_handling<R>(py: Python<'_>, err: &PyErr, f: impl FnOnce() -> R) -> R {
    let value = exception_value(py, err);
    // SAFETY: the GIL is held (`py`). `PyErr_GetHandledException` returns a new reference (or
    // NULL); `PyErr_SetHandledException` takes no reference of its argument (it keeps its own),
    // and NULL clears the state. `value` outlives the call that installs it, and `previous` is
    // put back, then released, exactly once.
    unsafe {
        let previous = ffi::PyErr_GetHandledException();
        ffi::PyErr_SetHandledException(value.as_ptr());
        let result = f();
        ffi::PyErr_SetHandledException(previous);
        ffi::Py_XDECREF(previous);
        result
    }
}

/// `contextvars.copy_context()`.
pub(crate) fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: called with the GIL held (we have `py`); PyContext_CopyCurrent returns a new
    // reference or NULL with an exception set, which `from_owned_ptr_or_err` turns into an error.
    unsafe { Ok(Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())?.unbind()) }
}
