//! The syscall side shared by the read and write paths: borrowing a socket's fd and a Python
//! object's bytes for one call, and turning errors into the exceptions `socket` would raise.

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use rustix::io::Errno;
use std::os::fd::{BorrowedFd, RawFd};

/// `SystemExit` and `KeyboardInterrupt` propagate out of a callback; anything else a protocol
/// raises goes to `_fatal_error`.
pub(super) fn is_exit(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PySystemExit>(py) || e.is_instance_of::<PyKeyboardInterrupt>(py)
}

/// `OSError(errno, os.strerror(errno))`, which Python turns into the matching subclass
/// (`ConnectionResetError`, `BrokenPipeError`, ...), exactly as `socket.send` raises it.
pub(super) fn errno_error(e: Errno) -> PyErr {
    crate::loop_core::os_error(std::io::Error::from_raw_os_error(e.raw_os_error()))
}

/// Would-block and interrupted calls are retried when the fd is next ready.
pub(super) fn is_retry(e: Errno) -> bool {
    e == Errno::AGAIN || e == Errno::WOULDBLOCK || e == Errno::INTR
}

/// A contiguous bytes-like object's bytes, for the duration of a call (the buffer protocol with
/// `PyBUF_SIMPLE`, as `socket.send` uses for its `y*` argument; `PyBUF_WRITABLE` for reads).
pub(super) struct RawBuffer {
    view: ffi::Py_buffer,
}

impl RawBuffer {
    pub(super) fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<RawBuffer> {
        let flags = if writable {
            ffi::PyBUF_WRITABLE
        } else {
            ffi::PyBUF_SIMPLE
        };
        // SAFETY: `Py_buffer` is a plain C struct for which all-zero is a valid "empty" value;
        // PyObject_GetBuffer fills it in (with the GIL held: we have a `Bound`) and, on success,
        // it owns a reference and an export that `Drop` releases exactly once.
        unsafe {
            let mut view: ffi::Py_buffer = std::mem::zeroed();
            if ffi::PyObject_GetBuffer(obj.as_ptr(), &mut view, flags) != 0 {
                return Err(PyErr::fetch(obj.py()));
            }
            Ok(RawBuffer { view })
        }
    }

    pub(super) fn len(&self) -> usize {
        self.view.len as usize
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: with PyBUF_SIMPLE/PyBUF_WRITABLE the exporter hands out `len` contiguous bytes
        // at `buf`, valid until PyBuffer_Release (our Drop), and `&self` does not outlive it.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.len()) }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.view.len == 0 {
            return &mut [];
        }
        // SAFETY: as `as_slice`; the buffer was requested writable (only `get(.., true)` callers
        // use this), and `&mut self` makes this the only slice over it from our side.
        unsafe { std::slice::from_raw_parts_mut(self.view.buf as *mut u8, self.len()) }
    }
}

impl Drop for RawBuffer {
    fn drop(&mut self) {
        // SAFETY: `view` was filled by a successful PyObject_GetBuffer and is released once. A
        // RawBuffer only lives inside a call that holds the GIL (it is neither Send nor stored).
        unsafe { ffi::PyBuffer_Release(&mut self.view) }
    }
}

/// Borrows the socket's fd for one syscall.
pub(super) fn with_fd<R>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>) -> R) -> R {
    // Why the fd stays open: it is what the transport's socket object returned from `fileno()`
    // just before (`TransportCore::live_fd`), with the GIL held since then; that object owns the
    // fd and is referenced by the transport, and closing it needs the GIL, which `f` (no Python
    // call) never gives up.
    // SAFETY: as above, `fd` is open for the whole borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    f(fd)
}
