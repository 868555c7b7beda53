//! The binding's entry to the run loop, in one place: `run_forever`'s loop over turns
//! (`LoopCore._run_native`), one turn (`_run_once`), and the run of one callback (`Handle._run`;
//! in debug mode `Loop._run_handle_debug`, in Python, instead).
//!
//! The turn itself is the core crate's (`ferroloop_core::turn::run_once`: purge cancelled
//! timers, the wait-timeout rule, wait, readiness and due timers to the ready queue, run exactly
//! what is ready). [`PyHost`] is the glue it is instantiated with:
//! - the loop state is borrowed (`GilCell`) only for each step, never across a wait or a callback;
//! - the blocking wait releases the GIL (`py.detach`) and counts as idle time;
//! - a wait ended by a signal (`EINTR`), or the signal wakeup pipe firing (signals.rs), runs the
//!   Python signal handlers at once (`PyErr_CheckSignals`; Ctrl-C raises there);
//! - a handle is run in its context with `PyContext_Enter` (no bound-method call, no argument
//!   tuple for zero-argument callbacks; a context that is not a `contextvars.Context` gets
//!   `context.run(callback, *args)`, as the stdlib calls it); leaving the ready queue, or the loop for good, flips its
//!   ownership (gc.rs).
//!
//! Everything is generic, so the per-callback path compiles to what it was when the turn was
//! written here: one borrow to pop, one cancelled check, one call, one ownership update.

use crate::call_args::{BoundArgs, CallArgs};
use crate::gc::Owner;
use crate::handle::{Handle, HandleRef};
use crate::loop_state::{exception_value, os_error, while_handling, LoopCore};
use crate::stats::bump;
use ferroloop_core::{clock, EventLoop, Events, Host, OffsetClock, Poller};
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::MutexGuard;
use std::time::Duration;

/// The loop as the core's turn sees it, for one turn.
struct PyHost<'a, 'py> {
    slf: &'a Bound<'py, LoopCore>,
    this: &'a LoopCore,
    py: Python<'py>,
    /// Debug mode, read once per turn: each callback then goes through `_run_handle_debug`.
    debug: bool,
}

impl Host for PyHost<'_, '_> {
    type Callback = HandleRef;
    type Clock = OffsetClock;
    type Error = PyErr;
    type Events<'b>
        = MutexGuard<'b, Events>
    where
        Self: 'b;

    #[inline]
    fn with_loop<R>(&self, f: impl FnOnce(&mut EventLoop<HandleRef, OffsetClock>) -> R) -> R {
        f(&mut self.this.st.borrow_mut(self.py).ev)
    }

    #[inline]
    fn stopping(&self) -> bool {
        self.this.stopping.load(Relaxed)
    }

    fn events(&self) -> MutexGuard<'_, Events> {
        self.this.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A wait that may block: with the GIL released, and counted as idle time.
    fn wait(
        &self,
        poller: &Poller,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let before = if cfg!(feature = "diagnostics") {
            let t = clock::monotonic();
            self.this.st.borrow_mut(self.py).times.end_busy(t);
            Some(t)
        } else {
            None
        };
        // Nothing is ready: the moment to hand a burst's pooled handles back (pool.rs).
        crate::pool::trim_idle(self.py);
        let r = self.py.detach(|| poller.wait(events, timeout));
        if let Some(before) = before {
            self.this.st.borrow_mut(self.py).times.idle += clock::monotonic() - before;
        }
        r
    }

    #[inline]
    fn clone_callback(&self, cb: &HandleRef) -> HandleRef {
        HandleRef::new(cb.0.clone_ref(self.py))
    }

    #[inline]
    fn run(&self, cb: &HandleRef) -> PyResult<()> {
        bump(&self.this.counters.callbacks);
        let h = cb.0.bind(self.py);
        if self.debug {
            self.slf
                .call_method1(intern!(self.py, "_run_handle_debug"), (h,))
                .map(drop)
        } else {
            run_handle(h)
        }
    }

    /// Out of the queue: a ready handle (or a timer that came due) is the loop's no more; an fd
    /// handle stays owned through the fd table.
    #[inline]
    fn done(&self, cb: &HandleRef) {
        let h = cb.0.bind(self.py);
        if h.get().owner() == Owner::Ready {
            Handle::release(h);
        }
    }

    #[inline]
    fn release(&self, cb: &HandleRef) {
        Handle::release(cb.0.bind(self.py));
    }

    fn check_signals(&self) -> PyResult<()> {
        self.py.check_signals()
    }

    /// A signal's C handler wrote into the wakeup pipe (signals.rs): empty it and run the Python
    /// handlers now (Ctrl-C raises here), whichever thread the kernel delivered it to.
    fn signalled(&self) -> PyResult<()> {
        if let Some(p) = self.this.st.borrow(self.py).signal_pipe.as_ref() {
            p.drain();
        }
        self.py.check_signals()
    }

    fn io_error(&self, e: io::Error) -> PyErr {
        os_error(e)
    }

    #[inline]
    fn turn_started(&self) {
        bump(&self.this.counters.turns);
    }

    /// A turn that did not block: its busy stretch runs on through this poll.
    #[inline]
    fn polled(&self, now: f64) {
        if cfg!(feature = "diagnostics") {
            let times = &mut self.this.st.borrow_mut(self.py).times;
            times.end_busy(now);
            times.busy_since = Some(now);
        }
    }
}

/// One turn of the loop (`LoopCore._run_once`, CPython's `BaseEventLoop._run_once`).
pub(crate) fn run_once(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let this = slf.get();
    if this.time_replaced.load(Relaxed) {
        sync_replaced_time(slf)?;
    }
    let host = PyHost {
        slf,
        this,
        py: slf.py(),
        debug: this.debug(),
    };
    ferroloop_core::run_once(&host)
}

/// `time` is replaced in Python: the turn's clock follows `self.time()` (read once per turn,
/// before any borrow), so timers run when the replaced time says they are due.
fn sync_replaced_time(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let now: f64 = slf.call_method0(intern!(py, "time"))?.extract()?;
    let offset = now - clock::monotonic();
    slf.get().st.borrow(py).ev.clock().set_offset(offset);
    Ok(())
}

/// Runs turns until `stop()` (`LoopCore._run_native`); the Python `run_forever` does the setup
/// around it.
///
/// When `_run_once` was replaced (on the instance, as tests and tools that count turns do, or in
/// a subclass), each turn calls the replacement, as the stdlib loop would. That is decided once
/// per run, so the usual path pays nothing for it.
pub(crate) fn run_native(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    let name = intern!(py, "_run_once");
    let native = py.get_type::<LoopCore>().getattr(name)?;
    let in_instance = match slf.getattr(intern!(py, "__dict__")) {
        Ok(d) => d
            .cast::<PyDict>()
            .map(|d| d.contains(name))
            .unwrap_or(Ok(false))?,
        Err(_) => false,
    };
    let replaced = in_instance || !slf.get_type().getattr(name)?.is(&native);
    if cfg!(feature = "diagnostics") {
        let mut st = this.st.borrow_mut(py);
        st.times.run_started = Some(clock::monotonic());
        st.times.busy_since = None;
    }
    let res = loop {
        let turn = if replaced {
            slf.call_method0(name).map(drop)
        } else {
            run_once(slf)
        };
        if let Err(e) = turn {
            break Err(e);
        }
        if this.stopping.load(Relaxed) {
            break Ok(());
        }
    };
    this.stopping.store(false, Relaxed);
    if cfg!(feature = "diagnostics") {
        let mut st = this.st.borrow_mut(py);
        let now = clock::monotonic();
        st.times.end_busy(now);
        if let Some(t) = st.times.run_started.take() {
            st.times.run_total += now - t;
        }
    }
    res
}

/// Runs a handle's callback in its context (`Handle._run`). Exceptions go to the loop's
/// exception handler, except `KeyboardInterrupt` and `SystemExit`, which propagate
/// (asyncio.Handle._run).
pub(crate) fn run_handle(slf: &Bound<'_, Handle>) -> PyResult<()> {
    let py = slf.py();
    let h = slf.get();
    // `Bound` copies (not `Py`): released with a plain decref, no thread-local lookup.
    let (cb, args) = {
        let st = h.st.borrow(py);
        match &st.callback {
            None => return Ok(()),
            Some(cb) => (
                cb.bind(py).clone(),
                match &st.args {
                    None | Some(CallArgs::Zero) => None,
                    Some(a) => Some(a.bind(py)),
                },
            ),
        }
    };
    // The context is owned by this handle for the whole call.
    let ctx = h.context.bind(py);
    // SAFETY: `ctx` is a live object (the handle holds it) and the GIL is held; this only
    // compares its type pointer with `contextvars.Context`'s.
    let res = if unsafe { ffi::PyContext_CheckExact(ctx.as_ptr()) } != 0 {
        crate::loop_state::in_context(py, ctx.as_ptr(), || match &args {
            Some(a) => a.call(&cb),
            None => cb.call0(),
        })
    } else {
        // Not a `contextvars.Context` (`call_soon(cb, context=obj)` takes any object): what
        // the stdlib's `Handle._run` does, `context.run(callback, *args)`, so an object with a
        // `run` method works and any other fails here, reported as the stdlib reports it
        // (`AttributeError: 'int' object has no attribute 'run'`).
        foreign_context_run(py, ctx, &cb, args.as_ref())
    };
    match res {
        Ok(_) => Ok(()),
        Err(e)
            if e.is_instance_of::<PyKeyboardInterrupt>(py)
                || e.is_instance_of::<PySystemExit>(py) =>
        {
            Err(e)
        }
        Err(e) => {
            // No arguments: `()` (the repr says `cb()`), as the stdlib's handle has.
            let args = match args {
                Some(a) => a.to_tuple(py)?,
                None => PyTuple::empty(py),
            };
            report_callback_error(slf, &cb.unbind(), Some(&args.unbind()), e)
        }
    }
}

/// `context.run(cb, *args)` for a handle whose context is not a `contextvars.Context`.
#[cold]
fn foreign_context_run<'py>(
    py: Python<'py>,
    ctx: &Bound<'py, PyAny>,
    cb: &Bound<'py, PyAny>,
    args: Option<&BoundArgs<'py>>,
) -> PyResult<Bound<'py, PyAny>> {
    let run = ctx.getattr(intern!(py, "run"))?;
    let mut items = vec![cb.clone()];
    if let Some(a) = args {
        items.extend(a.to_tuple(py)?.iter());
    }
    run.call1(PyTuple::new(py, items)?)
}

/// `loop.call_exception_handler({'message': 'Exception in callback ...', ...})`.
fn report_callback_error(
    slf: &Bound<'_, Handle>,
    cb: &Py<PyAny>,
    args: Option<&Py<PyTuple>>,
    err: PyErr,
) -> PyResult<()> {
    let py = slf.py();
    let h = slf.get();
    let debug = h
        .loop_
        .bind(py)
        .call_method0(intern!(py, "get_debug"))?
        .is_truthy()?;
    let src = format_callback_source(py, cb, args, debug)?;
    let ctx = PyDict::new(py);
    ctx.set_item(
        intern!(py, "message"),
        format!("Exception in callback {src}"),
    )?;
    ctx.set_item(intern!(py, "exception"), exception_value(py, &err))?;
    ctx.set_item(intern!(py, "handle"), slf)?;
    let tb =
        h.st.borrow(py)
            .source_traceback
            .as_ref()
            .map(|t| t.clone_ref(py));
    if let Some(tb) = tb {
        if tb.bind(py).is_truthy()? {
            ctx.set_item(intern!(py, "source_traceback"), tb)?;
        }
    }
    // Called inside the stdlib's `except BaseException as exc:` clause (`Handle._run`).
    while_handling(py, &err, || {
        h.loop_
            .bind(py)
            .call_method1(intern!(py, "call_exception_handler"), (ctx,))
    })?;
    Ok(())
}

/// `format_helpers._format_callback_source` as the running Python calls it (3.13 added
/// `debug=`): `ferroloop._compat` holds the version switch.
fn format_callback_source(
    py: Python<'_>,
    cb: &Py<PyAny>,
    args: Option<&Py<PyTuple>>,
    debug: bool,
) -> PyResult<String> {
    let compat = crate::cached::compat(py)?;
    let args: Py<PyAny> = match args {
        Some(a) => a.clone_ref(py).into_any(),
        None => py.None(),
    };
    compat
        .call_method1(intern!(py, "format_callback_source"), (cb, args, debug))?
        .extract()
}
