//! The read path: registering the reader, and the fd's reader callback
//! (`_SelectorSocketTransport._read_ready`).

use super::sys::{errno_error, is_exit, is_retry, with_fd, RawBuffer};
use super::{names, TransportCore};
use crate::loop_core::LoopCore;
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rustix::io::Errno;
use rustix::net::RecvFlags;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// `selector_events._SelectorTransport.max_size`: the most one read takes from the socket.
const MAX_READ: usize = 256 * 1024;

thread_local! {
    /// The read buffer of every transport run by this thread's loop. A read copies what arrived
    /// into a `bytes` before any Python code runs, so one buffer serves them all.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_READ].into_boxed_slice());
}

/// One `recv` of up to `MAX_READ` bytes straight into a new `bytes` object, shrunk to what
/// arrived (`PyBytesWriter`, CPython 3.15's API, provided by pyo3 for older versions). The outer
/// error is Python's (no memory), the inner one the socket's.
fn recv_new_bytes(py: Python<'_>, fd: RawFd) -> PyResult<Result<Bound<'_, PyBytes>, Errno>> {
    // SAFETY: the GIL is held (`py`). `PyBytesWriter_Create(MAX_READ)` returns a writer owning a
    // `bytes` under construction with `MAX_READ` writable bytes at `PyBytesWriter_GetData` (or
    // NULL with an exception set); the slice over them is built from `MaybeUninit<u8>`, so no
    // uninitialised byte is read as `u8`, and it is dropped before the writer is finished or
    // discarded, each exactly once. `FinishWithSize(n)` (n <= MAX_READ bytes written by `recv`)
    // returns a new reference to an exact `bytes` of length n, or NULL with an exception set.
    unsafe {
        let writer = ffi::compat::PyBytesWriter_Create(MAX_READ as ffi::Py_ssize_t);
        if writer.is_null() {
            return Err(PyErr::fetch(py));
        }
        let data = ffi::compat::PyBytesWriter_GetData(writer) as *mut MaybeUninit<u8>;
        let buf = std::slice::from_raw_parts_mut(data, MAX_READ);
        let res = with_fd(fd, |fd| rustix::net::recv(fd, buf, RecvFlags::empty()));
        let n = match res {
            Ok(((filled, _), _)) => filled.len(),
            Err(e) => {
                ffi::compat::PyBytesWriter_Discard(writer);
                return Ok(Err(e));
            }
        };
        let obj = ffi::compat::PyBytesWriter_FinishWithSize(writer, n as ffi::Py_ssize_t);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked()))
    }
}

impl TransportCore {
    /// `_SelectorTransport._add_reader(fd, callback)`: registers `callback` as the fd's reader
    /// unless the transport is closing or paused (`is_reading()`), straight into the loop's fd
    /// table (`LoopCore::add_fd_callback`, which checks that the loop is open, as
    /// `loop._add_reader` does).
    pub(super) fn add_reader_impl(
        &self,
        py: Python<'_>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        {
            let st = self.st.borrow(py);
            if st.closing || st.paused {
                return Ok(());
            }
        }
        let lp = self.loop_core(py)?;
        LoopCore::add_fd_callback(&lp, fd, callback, true)
    }

    /// `_SelectorTransport.is_reading()`: `not self.is_closing() and not self._paused` (the
    /// core's `is_closing` is `_closing`).
    pub(super) fn is_reading_impl(&self, py: Python<'_>) -> bool {
        let st = self.st.borrow(py);
        !st.closing && !st.paused
    }

    /// `_SelectorTransport.pause_reading()`. The stdlib removes the reader
    /// (`loop._remove_reader`): its handle is cancelled here too, so nothing is read while paused
    /// (not even by a handle the turn already queued), but epoll's registration is left lingering
    /// (`LoopCore::suspend_fd_reader`), so that a resume soon after costs no `epoll_ctl`. An fd
    /// that stays ready while paused is deregistered by the turn at its second report
    /// (`ferroloop_core::fd_table`, "Lingering registrations"): no busy loop however long the
    /// pause. EOF while paused is not seen until the reader runs again, as in the stdlib.
    pub(super) fn pause_reading_impl(&self, py: Python<'_>) -> PyResult<()> {
        let fd = {
            let mut st = self.st.borrow_mut(py);
            if st.closing || st.paused {
                return Ok(());
            }
            st.paused = true;
            st.fd
        };
        let lp = self.loop_core(py)?;
        // `BaseSelectorEventLoop._remove_reader` does nothing on a closed loop.
        if !lp.get().closed.load(std::sync::atomic::Ordering::Relaxed) {
            LoopCore::suspend_fd_reader(&lp, fd)?;
        }
        if lp.get().debug() {
            self.debug_log(py, "%r pauses reading")?;
        }
        Ok(())
    }

    /// `_SelectorTransport.resume_reading()`: `self._add_reader(self._sock_fd, self._read_ready)`
    /// with no syscall when the registration left by `pause_reading` still lingers.
    pub(super) fn resume_reading_impl(&self, py: Python<'_>) -> PyResult<()> {
        let fd = {
            let mut st = self.st.borrow_mut(py);
            if st.closing || !st.paused {
                return Ok(());
            }
            st.paused = false;
            st.fd
        };
        let callback = self.transport(py).getattr(names::read_ready(py))?;
        let lp = self.loop_core(py)?;
        // The registration is trusted only while the socket still has the fd it was registered
        // with; a socket closed behind the transport's back gets the ordinary registration (and
        // its error), as the stdlib's `_add_reader` would.
        if self.live_fd(py).ok() == Some(fd) {
            LoopCore::renew_fd_callback(&lp, fd, callback, true)?;
        } else {
            LoopCore::add_fd_callback(&lp, fd, callback, true)?;
        }
        if lp.get().debug() {
            self.debug_log(py, "%r resumes reading")?;
        }
        Ok(())
    }

    /// `logger.debug(message, transport)` on asyncio's logger.
    pub(super) fn debug_log(&self, py: Python<'_>, message: &str) -> PyResult<()> {
        py.import(names::asyncio_log(py))?
            .getattr(names::logger(py))?
            .call_method1(names::debug(py), (message, self.transport(py)))?;
        Ok(())
    }

    /// The fd's reader callback.
    pub(super) fn read_ready_impl(&self, py: Python<'_>) -> PyResult<()> {
        let buffered = {
            let st = self.st.borrow(py);
            if st.conn_lost > 0 {
                return Ok(());
            }
            st.buffered
        };
        if buffered {
            return self.read_get_buffer(py);
        }
        let fd = match self.live_fd(py) {
            Ok(fd) => fd,
            Err(e) => return self.fatal(py, e, "Fatal read error on socket transport"),
        };
        self.read_data_received(py, fd)
    }

    /// One `recv`, then `protocol.data_received(bytes)`. A transport whose previous read filled
    /// `MAX_READ` (a bulk stream) receives straight into a new `bytes` of that size, shrunk to
    /// what arrived (the stdlib's `sock.recv(max_size)`): no copy. Others receive into the
    /// thread's buffer and copy what arrived into a `bytes` of that size: a 256 KiB allocation
    /// (and its shrinking) per small message would cost more than the copy.
    fn read_data_received(&self, py: Python<'_>, fd: RawFd) -> PyResult<()> {
        let res = if self.st.borrow(py).bulk {
            recv_new_bytes(py, fd)?
        } else {
            READ_BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                with_fd(fd, |fd| {
                    rustix::net::recv(fd, &mut buf[..], RecvFlags::empty())
                })
                .map(|(n, _)| PyBytes::new(py, &buf[..n]))
            })
        };
        if let Ok(d) = &res {
            self.st.borrow_mut(py).bulk = d.as_bytes().len() == MAX_READ;
        }
        let data = match res {
            Ok(d) => d,
            Err(e) if is_retry(e) => return Ok(()),
            Err(e) => {
                return self.fatal(py, errno_error(e), "Fatal read error on socket transport")
            }
        };
        if data.as_bytes().is_empty() {
            return self.on_eof(py);
        }
        let protocol = self.protocol(py);
        let res = protocol.call_method1(names::data_received(py), (data,));
        self.protocol_call(
            py,
            res,
            "Fatal error: protocol.data_received() call failed.",
        )?;
        Ok(())
    }

    /// A `BufferedProtocol`: `get_buffer(-1)`, `recv` into it, `buffer_updated(n)`.
    fn read_get_buffer(&self, py: Python<'_>) -> PyResult<()> {
        let protocol = self.protocol(py);
        let res = protocol
            .call_method1(names::get_buffer(py), (-1,))
            .and_then(|b| {
                let raw = RawBuffer::get(&b, true)?;
                if raw.len() == 0 {
                    return Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    ));
                }
                Ok(raw)
            });
        let mut raw = match res {
            Ok(raw) => raw,
            Err(e) if is_exit(py, &e) => return Err(e),
            Err(e) => {
                return self.fatal(py, e, "Fatal error: protocol.get_buffer() call failed.");
            }
        };
        let fd = match self.live_fd(py) {
            Ok(fd) => fd,
            Err(e) => {
                drop(raw);
                return self.fatal(py, e, "Fatal read error on socket transport");
            }
        };
        let res = with_fd(fd, |fd| {
            rustix::net::recv(fd, raw.as_mut_slice(), RecvFlags::empty())
        });
        // The protocol may resize its buffer in buffer_updated(): release the export first.
        drop(raw);
        let n = match res {
            Ok((n, _)) => n,
            Err(e) if is_retry(e) => return Ok(()),
            Err(e) => {
                return self.fatal(py, errno_error(e), "Fatal read error on socket transport")
            }
        };
        if n == 0 {
            return self.on_eof(py);
        }
        let res = protocol.call_method1(names::buffer_updated(py), (n,));
        self.protocol_call(
            py,
            res,
            "Fatal error: protocol.buffer_updated() call failed.",
        )?;
        Ok(())
    }
}
