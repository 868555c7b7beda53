//! Delegating to the awaited future's iterator, as `await` does (`sock/mod.rs`).

use super::Step;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::{ffi, intern};

/// `StopIteration(value)`: the coroutine returned `value` (a tuple is one value, not the args).
pub(super) fn stop_iteration(value: Py<PyAny>) -> PyErr {
    PyStopIteration::new_err((value,))
}

/// `iterator.send(value)` through `PyIter_Send` (`tp_iternext` for None, as `await` does).
pub(super) fn iter_send(sub: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<Step> {
    let py = sub.py();
    let mut result: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: the GIL is held (we have `py`); both pointers are live borrowed references for the
    // call; PyIter_Send stores a new reference in `result` for PYGEN_NEXT/PYGEN_RETURN and NULL
    // with an exception set for PYGEN_ERROR.
    let status = unsafe { ffi::PyIter_Send(sub.as_ptr(), value.as_ptr(), &mut result) };
    match status {
        ffi::PySendResult::PYGEN_NEXT => {
            // SAFETY: a new reference (above).
            Ok(Step::Yield(
                unsafe { Bound::from_owned_ptr(py, result) }.unbind(),
            ))
        }
        ffi::PySendResult::PYGEN_RETURN => {
            // SAFETY: a new reference (above).
            Ok(Step::Return(
                unsafe { Bound::from_owned_ptr(py, result) }.unbind(),
            ))
        }
        _ => Err(PyErr::fetch(py)),
    }
}

/// The result of a Python `throw` call on a delegate: a yielded value, its return (a
/// `StopIteration`'s value) or an error.
pub(super) fn classify(py: Python<'_>, r: PyResult<Bound<'_, PyAny>>) -> PyResult<Step> {
    match r {
        Ok(v) => Ok(Step::Yield(v.unbind())),
        Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
            let v = e.value(py).getattr(intern!(py, "value"))?;
            Ok(Step::Return(v.unbind()))
        }
        Err(e) => Err(e),
    }
}
