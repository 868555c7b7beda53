//! A handle's arguments (`Handle._args`), held without a tuple when there are at most two.
//!
//! Most callbacks the loop runs get zero, one or two arguments: a task's step none, a future's
//! done callback the future (the C `Future` schedules `call_soon(cb, fut, context=ctx)`, so
//! every task wake-up), `connection_made(transport)` one, `_chain_future`'s `_set_state` two.
//! Packing them in a tuple costs an allocation and a deallocation per callback, of an object
//! the cyclic collector tracks while it is pending (a tuple that holds a future or a transport
//! is a tracked object). Up to two arguments are kept as plain references and the callback is
//! called through vectorcall; the tuple `_args` shows is made the first time someone asks for
//! it (`_args`, a repr, an error report), and kept, so it is the same object each time after
//! that, as the stdlib's attribute is. More than two, or a tuple the caller already had
//! (`call_later(d, cb, *args)`, whose `*args` PyO3 packs), stay a tuple.

use crate::handle::decref;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

/// The arguments a handle calls its callback with.
pub(crate) enum CallArgs {
    Zero,
    One(Py<PyAny>),
    Two(Py<PyAny>, Py<PyAny>),
    Tuple(Py<PyTuple>),
}

impl CallArgs {
    /// Copies the arguments of a vectorcall (borrowed pointers) into new references.
    ///
    /// # Safety
    /// The GIL is held and each pointer of `args` is a live object.
    pub(crate) unsafe fn from_borrowed(
        py: Python<'_>,
        args: &[*mut ffi::PyObject],
    ) -> PyResult<Self> {
        // SAFETY: live borrowed pointers (caller); each becomes a new strong reference.
        let own = |p: *mut ffi::PyObject| unsafe { Bound::from_borrowed_ptr(py, p).unbind() };
        Ok(match *args {
            [] => CallArgs::Zero,
            [a] => CallArgs::One(own(a)),
            [a, b] => CallArgs::Two(own(a), own(b)),
            _ => CallArgs::Tuple(
                PyTuple::new(
                    py,
                    args.iter().map(|&p| {
                        // SAFETY: as above.
                        unsafe { Bound::from_borrowed_ptr(py, p) }
                    }),
                )?
                .unbind(),
            ),
        })
    }

    /// A tuple the caller already has: kept as it is (its identity is `_args`).
    pub(crate) fn tuple(t: Bound<'_, PyTuple>) -> Self {
        if t.is_empty() {
            CallArgs::Zero
        } else {
            CallArgs::Tuple(t.unbind())
        }
    }

    /// New references to the arguments, to call with after the handle's state is no longer
    /// borrowed.
    pub(crate) fn bind<'py>(&self, py: Python<'py>) -> BoundArgs<'py> {
        match self {
            CallArgs::Zero => BoundArgs::Zero,
            CallArgs::One(a) => BoundArgs::One(a.bind(py).clone()),
            CallArgs::Two(a, b) => BoundArgs::Two(a.bind(py).clone(), b.bind(py).clone()),
            CallArgs::Tuple(t) => BoundArgs::Tuple(t.bind(py).clone()),
        }
    }

    /// Reports the references to the garbage collector.
    pub(crate) fn visit(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            CallArgs::Zero => Ok(()),
            CallArgs::One(a) => visit.call(a),
            CallArgs::Two(a, b) => {
                visit.call(a)?;
                visit.call(b)
            }
            CallArgs::Tuple(t) => visit.call(t),
        }
    }

    /// Releases the references with a plain `Py_DECREF` (see `Drop for Handle`).
    ///
    /// # Safety
    /// The calling thread holds the GIL.
    pub(crate) unsafe fn release(self) {
        // SAFETY: GIL held (caller).
        unsafe {
            match self {
                CallArgs::Zero => {}
                CallArgs::One(a) => decref(a),
                CallArgs::Two(a, b) => {
                    decref(a);
                    decref(b);
                }
                CallArgs::Tuple(t) => decref(t),
            }
        }
    }
}

/// [`CallArgs`] as new references held while the callback runs.
pub(crate) enum BoundArgs<'py> {
    Zero,
    One(Bound<'py, PyAny>),
    Two(Bound<'py, PyAny>, Bound<'py, PyAny>),
    Tuple(Bound<'py, PyTuple>),
}

impl<'py> BoundArgs<'py> {
    /// `cb(*args)`: vectorcall for the inline forms, with room before the arguments so that a
    /// bound method can be called without copying them (`PY_VECTORCALL_ARGUMENTS_OFFSET`).
    pub(crate) fn call(&self, cb: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = cb.py();
        let (mut stack, n) = match self {
            BoundArgs::Zero => return cb.call0(),
            BoundArgs::Tuple(t) => return cb.call1(t),
            BoundArgs::One(a) => ([std::ptr::null_mut(), a.as_ptr(), std::ptr::null_mut()], 1),
            BoundArgs::Two(a, b) => ([std::ptr::null_mut(), a.as_ptr(), b.as_ptr()], 2),
        };
        // Slot 0 is ours and writable (`mut`): ARGUMENTS_OFFSET lets the callee borrow it.
        // SAFETY: GIL held (`py`); `stack[1..=n]` are live (held by `self` for the call); the
        // result is a new reference or NULL with an exception set.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyObject_Vectorcall(
                    cb.as_ptr(),
                    stack.as_mut_ptr().add(1),
                    n | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
                    std::ptr::null_mut(),
                ),
            )
        }
    }

    /// The arguments as a tuple (the shared empty tuple for none).
    pub(crate) fn to_tuple(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self {
            BoundArgs::Zero => Ok(PyTuple::empty(py)),
            BoundArgs::One(a) => PyTuple::new(py, [a]),
            BoundArgs::Two(a, b) => PyTuple::new(py, [a, b]),
            BoundArgs::Tuple(t) => Ok(t.clone()),
        }
    }
}
