//! The Python methods of `Handle` and `TimerHandle` (`handle.rs` holds their fields).
//!
//! The same methods and private attributes as `asyncio.events.Handle`/`TimerHandle` (3.11) that
//! the stdlib and popular libraries read (`_callback`, `_args`, `_cancelled`, `_loop`,
//! `_context`, `_source_traceback`, `_when`, `_scheduled`, `_run`), the same repr, and the same
//! error path (`Exception in callback ...` to the loop's exception handler, `turn.rs`).

use crate::call_args::{BoundArgs, CallArgs};
use crate::gc::Owner;
use crate::handle::{Handle, TimerHandle};
use crate::loop_state::LoopCore;
use crate::turn::run_handle;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};
use std::sync::atomic::Ordering::Relaxed;

/// `handle.cancel()`: marks it cancelled (a second call does nothing), counts a timer still in
/// the heap towards compaction, and drops the callback and its arguments at once to break
/// reference cycles (as the stdlib does).
pub(crate) fn cancel_handle(slf: &Bound<'_, Handle>) -> PyResult<()> {
    let py = slf.py();
    let h = slf.get();
    if h.cancelled.swap(true, Relaxed) {
        return Ok(());
    }
    let core = h.loop_.bind(py).cast::<LoopCore>().ok();
    if h.owner() == Owner::Timer {
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

#[pymethods]
impl Handle {
    /// Reports the handle's references to the garbage collector, so that reference cycles
    /// through a handle (a callback that refers to its own handle, a traceback frame that holds
    /// one) are collected as they are with `asyncio.Handle`.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if self.owner().loop_owned() {
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
                    st.when_obj.take(),
                )
            };
            drop(taken);
        });
    }

    /// Cancels the callback; cancelling twice does nothing.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        cancel_handle(slf)
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        run_handle(slf)
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st
            .borrow(py)
            .callback
            .as_ref()
            .map(|c| c.clone_ref(py))
    }

    /// The arguments as a tuple (`None` once cancelled). Arguments held without a tuple
    /// (`call_args.rs`) get one now, kept for the next read, so `_args` is the same object
    /// each time, as the stdlib's attribute.
    #[getter]
    fn _args<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let bound = match self.st.borrow(py).args.as_ref() {
            None => return Ok(None),
            Some(CallArgs::Tuple(t)) => return Ok(Some(t.bind(py).clone())),
            Some(a) => a.bind(py),
        };
        // Made outside the borrow: allocating may run the collector, and so finalizers.
        let t = bound.to_tuple(py)?;
        let mut st = self.st.borrow_mut(py);
        if let Some(a @ (CallArgs::One(_) | CallArgs::Two(..))) = st.args.as_mut() {
            let old = std::mem::replace(a, CallArgs::Tuple(t.clone().unbind()));
            drop(st);
            drop(old);
        }
        Ok(Some(t))
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
        Ok(crate::cached::compat(py)?
            .call_method1(intern!(py, "handle_repr"), (slf,))?
            .unbind())
    }
}

#[pymethods]
impl TimerHandle {
    /// The absolute time, on the loop clock, at which the callback is scheduled.
    fn when(slf: PyRef<'_, Self>) -> Py<PyAny> {
        timer_when(&slf)
    }

    #[getter]
    fn _when(slf: PyRef<'_, Self>) -> Py<PyAny> {
        timer_when(&slf)
    }

    #[getter]
    fn _scheduled(slf: PyRef<'_, Self>) -> bool {
        slf.as_super().owner() == Owner::Timer
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
fn timer_eq<'py>(py: Python<'py>, a: &Handle, b: &Handle) -> PyResult<bool> {
    if a.when != b.when || a.is_cancelled() != b.is_cancelled() {
        return Ok(false);
    }
    // Take new references first: comparing calls Python (__eq__), which must not run while a
    // handle's state is borrowed.
    let parts = |h: &Handle| {
        let st = h.st.borrow(py);
        (
            st.callback.as_ref().map(|c| c.bind(py).clone()),
            st.args.as_ref().map(|c| c.bind(py)),
        )
    };
    let ((ca, aa), (cb, ab)) = (parts(a), parts(b));
    let tuple = |x: Option<BoundArgs<'py>>| -> PyResult<Option<Bound<'py, PyAny>>> {
        x.map(|x| x.to_tuple(py).map(Bound::into_any)).transpose()
    };
    let (aa, ab) = (tuple(aa)?, tuple(ab)?);
    let eq_opt = |x: Option<Bound<'_, PyAny>>, y: Option<Bound<'_, PyAny>>| -> PyResult<bool> {
        match (x, y) {
            (None, None) => Ok(true),
            (Some(x), Some(y)) => x.eq(y),
            _ => Ok(false),
        }
    };
    Ok(eq_opt(ca, cb)? && eq_opt(aa, ab)?)
}

/// The deadline as `call_at` got it (see `HandleState::when_obj`), else the float.
fn timer_when(slf: &PyRef<'_, TimerHandle>) -> Py<PyAny> {
    let py = slf.py();
    let h = slf.as_super();
    match h.st.borrow(py).when_obj.as_ref() {
        Some(obj) => obj.clone_ref(py),
        None => pyo3::types::PyFloat::new(py, h.when).into_any().unbind(),
    }
}
