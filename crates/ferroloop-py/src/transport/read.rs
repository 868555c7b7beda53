//! The read path: registering the reader, and the fd's reader callback
//! (`_SelectorSocketTransport._read_ready`).

use super::sys::{errno_error, is_exit, is_retry, with_fd, RawBuffer};
use super::{names, TransportCore};
use crate::loop_core::LoopCore;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rustix::net::RecvFlags;
use std::cell::RefCell;
use std::os::fd::RawFd;

/// `selector_events._SelectorTransport.max_size`: the most one read takes from the socket.
const MAX_READ: usize = 256 * 1024;

thread_local! {
    /// The read buffer of every transport run by this thread's loop. A read copies what arrived
    /// into a `bytes` before any Python code runs, so one buffer serves them all.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_READ].into_boxed_slice());
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

    /// One `recv` into the thread's buffer, then `protocol.data_received(bytes)`.
    fn read_data_received(&self, py: Python<'_>, fd: RawFd) -> PyResult<()> {
        let res = READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            with_fd(fd, |fd| {
                rustix::net::recv(fd, &mut buf[..], RecvFlags::empty())
            })
            .map(|(n, _)| PyBytes::new(py, &buf[..n]))
        });
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

    /// `_read_ready__on_eof`: the stdlib's function on the Python class (rare path).
    fn on_eof(&self, py: Python<'_>) -> PyResult<()> {
        self.transport(py)
            .call_method0(names::read_ready_on_eof(py))?;
        Ok(())
    }
}
