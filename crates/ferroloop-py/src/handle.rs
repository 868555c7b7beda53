//! `Handle` and `TimerHandle`: what `call_soon`, `call_later` and `add_reader` return, and what
//! the ready queue and the timer heap hold.
//!
//! They mirror `asyncio.events.Handle`/`TimerHandle` (3.11): the same methods, the same private
//! attributes that the stdlib and popular libraries read (`_callback`, `_args`, `_cancelled`,
//! `_loop`, `_context`, `_source_traceback`, `_when`, `_scheduled`, `_run`), the same repr and the
//! same error path (`Exception in callback ...` to the loop's exception handler).

use crate::gil::GilCell;
use crate::loop_core::LoopCore;
use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{ffi, intern};
use pyo3::{PyTraverseError, PyVisit};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// A callback scheduled on the loop, with its arguments and its contextvars `Context`.
#[pyclass(subclass, frozen, module = "ferroloop", name = "Handle")]
pub struct Handle {
    /// The loop (a `LoopCore` subclass instance) that will run this handle.
    pub(crate) loop_: Py<PyAny>,
    /// The context the callback runs in: the caller's `context=`, else a copy of the current one
    /// taken when the handle was created (as `asyncio.Handle` does).
    pub(crate) context: Py<PyAny>,
    /// The deadline of a timer, on the loop clock. Meaningless for a plain handle.
    pub(crate) when: f64,
    /// Set once by `cancel()`; the loop skips cancelled handles.
    pub(crate) cancelled: AtomicBool,
    /// A timer is in the loop's heap (CPython's `TimerHandle._scheduled`): only then does its
    /// `cancel()` count towards the heap's cancelled entries.
    pub(crate) scheduled: AtomicBool,
    /// The loop owns the handle (see `gc.rs`): it is untracked by the collector and the loop's
    /// `__traverse__` reports its references; the handle's own `__traverse__` reports nothing.
    pub(crate) loop_owned: AtomicBool,
    /// An `add_reader`/`add_writer` handle: owned through the fd table, not the ready queue.
    pub(crate) fd_handle: bool,
    pub(crate) st: GilCell<HandleState>,
}

#[derive(Default)]
pub(crate) struct HandleState {
    /// `None` once cancelled (dropped to break reference cycles, as the stdlib does).
    pub(crate) callback: Option<Py<PyAny>>,
    pub(crate) args: Option<Py<PyTuple>>,
    /// Where the handle was created, in debug mode (`format_helpers.extract_stack` output).
    pub(crate) source_traceback: Option<Py<PyAny>>,
    /// The repr saved at cancel time in debug mode, so slow-callback reports still name it.
    pub(crate) repr: Option<Py<PyAny>>,
}

/// A `Handle` with a deadline: what `call_later`/`call_at` return.
#[pyclass(extends = Handle, frozen, module = "ferroloop", name = "TimerHandle")]
pub struct TimerHandle;

impl Handle {
    pub(crate) fn new(
        loop_: Py<PyAny>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Py<PyAny>,
        when: f64,
        fd_handle: bool,
    ) -> Self {
        Handle {
            loop_,
            context,
            when,
            cancelled: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
            loop_owned: AtomicBool::new(false),
            fd_handle,
            st: GilCell::new(HandleState {
                callback: Some(callback),
                args: Some(args),
                source_traceback: None,
                repr: None,
            }),
        }
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Relaxed)
    }

    /// Reports every reference the handle holds to the garbage collector (for its own
    /// `__traverse__`, or the loop's while the loop owns it).
    pub(crate) fn visit_contents(
        &self,
        py: Python<'_>,
        visit: &PyVisit<'_>,
    ) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.context)?;
        if let Some(st) = self.st.borrow_for_traverse(py) {
            visit.call(&st.callback)?;
            visit.call(&st.args)?;
            visit.call(&st.source_traceback)?;
            visit.call(&st.repr)?;
        }
        Ok(())
    }

    /// `handle.cancel()`, for the loop's own use.
    pub(crate) fn cancel_handle(slf: &Bound<'_, Handle>) -> PyResult<()> {
        Handle::do_cancel(slf)
    }

    fn do_cancel(slf: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        let h = slf.get();
        if h.cancelled.swap(true, Relaxed) {
            return Ok(());
        }
        let core = h.loop_.bind(py).cast::<LoopCore>().ok();
        if slf.is_instance_of::<TimerHandle>() && h.scheduled.load(Relaxed) {
            if let Some(core) = core {
                core.get().timer_cancelled(py);
            }
        }
        if core.is_some_and(|c| c.get().debug()) {
            // Keep a representation for slow-callback reports (as asyncio.Handle.cancel does).
            // The flag is set, so the repr says "cancelled"; the callback is still there.
            let r = slf.repr()?.into_any().unbind();
            h.st.borrow_mut(py).repr = Some(r);
        }
        let (cb, args) = {
            let mut st = h.st.borrow_mut(py);
            (st.callback.take(), st.args.take())
        };
        // Dropped here, outside the borrow: a callback's __del__ may run arbitrary Python.
        drop((cb, args));
        Ok(())
    }

    /// Runs the callback in its context. Exceptions go to the loop's exception handler, except
    /// `KeyboardInterrupt` and `SystemExit`, which propagate (asyncio.Handle._run).
    pub(crate) fn run(slf: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        let h = slf.get();
        let (cb, args) = {
            let st = h.st.borrow(py);
            match &st.callback {
                None => return Ok(()),
                Some(cb) => (cb.clone_ref(py), st.args.as_ref().map(|a| a.clone_ref(py))),
            }
        };
        let ctx = h.context.as_ptr();
        // SAFETY: `ctx` is a live object owned by this handle for the whole call. PyContext_Enter
        // type-checks it (TypeError for a non-Context) and fails cleanly, with an exception set,
        // when the context is already entered.
        let res = if unsafe { ffi::PyContext_Enter(ctx) } < 0 {
            Err(PyErr::fetch(py))
        } else {
            let cbb = cb.bind(py);
            let r = match &args {
                Some(a) if !a.bind(py).is_empty() => cbb.call1(a.bind(py)),
                _ => cbb.call0(),
            };
            // SAFETY: the same context was entered just above on this thread, so exiting it is
            // balanced; the call can only fail if the callback left a different context current,
            // which it cannot do through the public API.
            let exit = unsafe { ffi::PyContext_Exit(ctx) };
            if exit < 0 {
                let e = PyErr::fetch(py);
                r.and(Err(e))
            } else {
                r
            }
        };
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.is_instance_of::<PyKeyboardInterrupt>(py)
                    || e.is_instance_of::<PySystemExit>(py) =>
            {
                Err(e)
            }
            Err(e) => report_callback_error(slf, &cb, args.as_ref(), e),
        }
    }
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
    ctx.set_item(intern!(py, "exception"), err.value(py))?;
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
    h.loop_
        .bind(py)
        .call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
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
    let compat = py.import(intern!(py, "ferroloop._compat"))?;
    let args: Py<PyAny> = match args {
        Some(a) => a.clone_ref(py).into_any(),
        None => py.None(),
    };
    compat
        .call_method1(intern!(py, "format_callback_source"), (cb, args, debug))?
        .extract()
}

#[pymethods]
impl Handle {
    /// Reports the handle's references to the garbage collector, so that reference cycles
    /// through a handle (a callback that refers to its own handle, a traceback frame that holds
    /// one) are collected as they are with `asyncio.Handle`.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if self.loop_owned.load(Relaxed) {
            return Ok(()); // the loop reports them (gc.rs)
        }
        // SAFETY: called by CPython's collector as tp_traverse, with the GIL held; the token
        // only borrows the handle's state (gil.rs, `traverse_token`).
        let py = unsafe { crate::gil::traverse_token() };
        self.visit_contents(py, &visit)
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            let taken = {
                let mut st = self.st.borrow_mut(py);
                (
                    st.callback.take(),
                    st.args.take(),
                    st.source_traceback.take(),
                    st.repr.take(),
                )
            };
            drop(taken);
        });
    }

    /// Cancels the callback; cancelling twice does nothing.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        Handle::do_cancel(slf)
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        Handle::run(slf)
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st
            .borrow(py)
            .callback
            .as_ref()
            .map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.st.borrow(py).args.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st
            .borrow(py)
            .source_traceback
            .as_ref()
            .map(|c| c.clone_ref(py))
    }

    #[setter(_source_traceback)]
    fn set_source_traceback(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.st.borrow_mut(py).source_traceback, value);
        drop(old);
    }

    #[getter]
    fn _repr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow(py).repr.as_ref().map(|c| c.clone_ref(py))
    }

    /// The stdlib's repr for the running Python (`ferroloop._compat.handle_repr` calls
    /// `events.Handle._repr_info`), or the one saved when the handle was cancelled in debug mode.
    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if let Some(r) = slf.get().st.borrow(py).repr.as_ref() {
            return Ok(r.clone_ref(py));
        }
        Ok(py
            .import(intern!(py, "ferroloop._compat"))?
            .call_method1(intern!(py, "handle_repr"), (slf,))?
            .unbind())
    }
}

#[pymethods]
impl TimerHandle {
    /// The absolute time, on the loop clock, at which the callback is scheduled.
    fn when(slf: PyRef<'_, Self>) -> f64 {
        slf.as_super().when
    }

    #[getter]
    fn _when(slf: PyRef<'_, Self>) -> f64 {
        slf.as_super().when
    }

    #[getter]
    fn _scheduled(slf: PyRef<'_, Self>) -> bool {
        slf.as_super().scheduled.load(Relaxed)
    }

    fn __hash__(slf: PyRef<'_, Self>) -> PyResult<isize> {
        let py = slf.py();
        pyo3::types::PyFloat::new(py, slf.as_super().when).hash()
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (slf.as_super().get(), other.as_super().get());
        let r = match op {
            CompareOp::Lt => a.when < b.when,
            CompareOp::Le => a.when < b.when || timer_eq(py, a, b)?,
            CompareOp::Gt => a.when > b.when,
            CompareOp::Ge => a.when > b.when || timer_eq(py, a, b)?,
            CompareOp::Eq => timer_eq(py, a, b)?,
            CompareOp::Ne => !timer_eq(py, a, b)?,
        };
        Ok(pyo3::types::PyBool::new(py, r)
            .to_owned()
            .into_any()
            .unbind())
    }
}

/// asyncio.TimerHandle.__eq__: same deadline, callback, arguments and cancelled state.
fn timer_eq(py: Python<'_>, a: &Handle, b: &Handle) -> PyResult<bool> {
    if a.when != b.when || a.is_cancelled() != b.is_cancelled() {
        return Ok(false);
    }
    // Take new references first: comparing calls Python (__eq__), which must not run while a
    // handle's state is borrowed.
    let parts = |h: &Handle| {
        let st = h.st.borrow(py);
        (
            st.callback.as_ref().map(|c| c.bind(py).clone()),
            st.args.as_ref().map(|c| c.bind(py).clone().into_any()),
        )
    };
    let ((ca, aa), (cb, ab)) = (parts(a), parts(b));
    let eq_opt = |x: Option<Bound<'_, PyAny>>, y: Option<Bound<'_, PyAny>>| -> PyResult<bool> {
        match (x, y) {
            (None, None) => Ok(true),
            (Some(x), Some(y)) => x.eq(y),
            _ => Ok(false),
        }
    };
    Ok(eq_opt(ca, cb)? && eq_opt(aa, ab)?)
}
