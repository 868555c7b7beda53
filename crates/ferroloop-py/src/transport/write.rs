//! The write path: `write`, `writelines`, the fd's writer callback
//! (`_SelectorSocketTransport._write_ready`) and flow control (`_FlowControlMixin`).

use super::sys::{errno_error, is_exit, is_retry, with_fd, RawBuffer};
use super::{names, TransportCore};
use crate::loop_core::LoopCore;
use crate::loop_state::{exception_value, while_handling};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use rustix::io::Errno;
use rustix::net::SendFlags;

/// `asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u64 = 5;

impl TransportCore {
    /// `transport.write(data)`: the socket first, the buffer for the rest.
    pub(super) fn write_impl(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {}",
                data.get_type().name()?.repr()?
            )));
        }
        this.check_writable(py, "write")?;
        let raw = RawBuffer::get(data, false)?;
        if raw.len() == 0 {
            return Ok(());
        }
        if this.st.borrow(py).conn_lost > 0 {
            return this.write_after_lost(py);
        }
        let buffer = this.buffer.get();
        let mut start = 0;
        if buffer.size(py) == 0 {
            // Try to send now; buffer only what the socket does not take.
            let fd = match this.live_fd(py) {
                Ok(fd) => fd,
                Err(e) => return this.fatal(py, e, "Fatal write error on socket transport"),
            };
            match with_fd(fd, |fd| {
                rustix::net::send(fd, raw.as_slice(), SendFlags::NOSIGNAL)
            }) {
                Ok(n) if n == raw.len() => return Ok(()),
                Ok(n) => start = n,
                Err(e) if is_retry(e) => {}
                Err(e) => {
                    drop(raw);
                    return this.fatal(py, errno_error(e), "Fatal write error on socket transport");
                }
            }
            Self::add_writer(slf)?;
        }
        buffer.push(py, data, &raw, start);
        drop(raw);
        this.maybe_pause(py)
    }

    /// `transport.writelines(list_of_data)` (3.12+: every piece is buffered, then one `sendmsg`).
    pub(super) fn writelines_impl(
        slf: &Bound<'_, Self>,
        list_of_data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.check_writable(py, "writelines")?;
        if !list_of_data.is_truthy()? {
            return Ok(()); // `if not list_of_data: return`, as 3.12's (None included)
        }
        // Every piece must be bytes-like (3.12 makes a memoryview of each) before any is taken.
        let mut pieces = Vec::new();
        for item in list_of_data.try_iter()? {
            let item = item?;
            // SAFETY: `item` is a live object and the GIL is held (`py`): PyObject_CheckBuffer
            // only reads its type's buffer slot.
            if unsafe { ffi::PyObject_CheckBuffer(item.as_ptr()) } == 0 {
                return Err(not_bytes_like(&item));
            }
            let raw = RawBuffer::get(&item, false)?;
            if raw.len() > 0 {
                pieces.push((item, raw));
            }
        }
        if pieces.is_empty() {
            return Ok(());
        }
        if this.st.borrow(py).conn_lost > 0 {
            return this.write_after_lost(py);
        }
        let buffer = this.buffer.get();
        let was_empty = buffer.size(py) == 0;
        for (item, raw) in &pieces {
            buffer.push(py, item, raw, 0);
        }
        drop(pieces);
        if was_empty {
            Self::write_ready_impl(slf)?;
            if buffer.size(py) > 0 && this.st.borrow(py).conn_lost == 0 {
                Self::add_writer(slf)?;
            }
        }
        this.maybe_pause(py)
    }

    /// `write()`/`writelines()` after `write_eof()` or during sendfile: the stdlib's errors.
    fn check_writable(&self, py: Python<'_>, method: &str) -> PyResult<()> {
        let st = self.st.borrow(py);
        if st.eof {
            return Err(PyRuntimeError::new_err(format!(
                "Cannot call {method}() after write_eof()"
            )));
        }
        if st.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err(format!(
                "unable to {method}; sendfile is in progress"
            )));
        }
        Ok(())
    }

    /// The fd's writer callback: sends what is buffered.
    pub(super) fn write_ready_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.st.borrow(py).conn_lost > 0 {
            return Ok(());
        }
        let buffer = this.buffer.get();
        let res = match this.live_fd(py) {
            Ok(fd) => buffer.send(py, fd).map_err(|e| (e, None)),
            Err(e) => Err((Errno::BADF, Some(e))),
        };
        let n = match res {
            Ok(n) => n,
            Err((e, None)) if is_retry(e) => return Ok(()),
            Err((e, pyerr)) => {
                let exc = pyerr.unwrap_or_else(|| errno_error(e));
                this.remove_writer(py)?;
                buffer.clear(py);
                let value = exception_value(py, &exc);
                this.fatal(py, exc, "Fatal write error on socket transport")?;
                if let Some(w) = this.empty_waiter(py) {
                    w.call_method1(names::set_exception(py), (value,))?;
                }
                return Ok(());
            }
        };
        buffer.consume(py, n);
        this.maybe_resume(py)?; // may append to the buffer
        if buffer.size(py) > 0 {
            return Ok(());
        }
        this.remove_writer(py)?;
        let (waiter, closing, eof) = {
            let st = this.st.borrow(py);
            let waiter = st.empty_waiter.as_ref().map(|w| w.clone_ref(py));
            (waiter, st.closing, st.eof)
        };
        if let Some(w) = waiter {
            w.bind(py)
                .call_method1(names::set_result(py), (py.None(),))?;
        }
        if closing {
            this.transport(py)
                .call_method1(names::call_connection_lost(py), (py.None(),))?;
        } else if eof {
            let sock = this.st.borrow(py).sock.as_ref().map(|s| s.clone_ref(py));
            if let Some(sock) = sock {
                let how = py.import(names::socket(py))?.getattr(names::shut_wr(py))?;
                sock.bind(py).call_method1(names::shutdown(py), (how,))?;
            }
        }
        Ok(())
    }

    fn empty_waiter<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let st = self.st.borrow(py);
        st.empty_waiter.as_ref().map(|w| w.bind(py).clone())
    }

    /// `loop.call_exception_handler({...})` for a failed pause_writing/resume_writing.
    fn flow_error(&self, py: Python<'_>, e: PyErr, message: &str) -> PyResult<()> {
        if is_exit(py, &e) {
            return Err(e);
        }
        let ctx = PyDict::new(py);
        ctx.set_item(names::message(py), message)?;
        ctx.set_item(names::exception(py), exception_value(py, &e))?;
        ctx.set_item(names::transport(py), self.transport(py))?;
        ctx.set_item(names::protocol(py), self.protocol(py))?;
        let lp = self.st.borrow(py).loop_.as_ref().map(|l| l.clone_ref(py));
        if let Some(lp) = lp {
            // Inside the stdlib's `except (Exception) as exc:` clause.
            while_handling(py, &e, || {
                lp.bind(py)
                    .call_method1(names::call_exception_handler(py), (ctx,))
            })?;
        }
        Ok(())
    }

    /// `_FlowControlMixin._maybe_pause_protocol`.
    fn maybe_pause(&self, py: Python<'_>) -> PyResult<()> {
        {
            let size = self.buffer.get().size(py);
            let mut st = self.st.borrow_mut(py);
            if size <= st.high_water || st.protocol_paused {
                return Ok(());
            }
            st.protocol_paused = true;
        }
        if let Err(e) = self.protocol(py).call_method0(names::pause_writing(py)) {
            self.flow_error(py, e, "protocol.pause_writing() failed")?;
        }
        Ok(())
    }

    /// `_FlowControlMixin._maybe_resume_protocol`.
    fn maybe_resume(&self, py: Python<'_>) -> PyResult<()> {
        {
            let size = self.buffer.get().size(py);
            let mut st = self.st.borrow_mut(py);
            if !st.protocol_paused || size > st.low_water {
                return Ok(());
            }
            st.protocol_paused = false;
        }
        if let Err(e) = self.protocol(py).call_method0(names::resume_writing(py)) {
            self.flow_error(py, e, "protocol.resume_writing() failed")?;
        }
        Ok(())
    }

    /// `write()` on a closed connection: counted, and logged past a threshold.
    fn write_after_lost(&self, py: Python<'_>) -> PyResult<()> {
        let n = {
            let mut st = self.st.borrow_mut(py);
            let n = st.conn_lost;
            st.conn_lost += 1;
            n
        };
        if n >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
            py.import(names::asyncio_log(py))?
                .getattr(names::logger(py))?
                .call_method1(names::warning(py), ("socket.send() raised exception.",))?;
        }
        Ok(())
    }

    /// Registers `_write_ready` as the fd's writer (`loop._add_writer(fd, self._write_ready)`),
    /// straight into the loop's fd table. Called when the buffer was empty: usually no writer is
    /// registered, but `_write_ready` empties the buffer, calls `resume_writing`, whose writes
    /// land here, and only then removes its writer.
    fn add_writer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lp = this.loop_core(py)?;
        let fd = this.st.borrow(py).fd;
        let cb = slf.getattr(names::write_ready(py))?;
        // The transport owns the fd's registration (write() just used the socket's live fd): a
        // writer still registered is replaced without an epoll_ctl (FdTable::resume).
        LoopCore::renew_fd_callback(&lp, fd, cb, false)
    }

    /// `loop._remove_writer(fd)`, straight from the loop's fd table (nothing once it is closed).
    fn remove_writer(&self, py: Python<'_>) -> PyResult<()> {
        let lp = self.loop_core(py)?;
        let fd = self.st.borrow(py).fd;
        if !lp.get().closed.load(std::sync::atomic::Ordering::Relaxed) {
            LoopCore::remove_fd_callback(&lp, fd, false)?;
        }
        Ok(())
    }
}

/// `memoryview(obj)`'s `TypeError` for an object without the buffer protocol, which 3.12's
/// `writelines` raises: "memoryview: a bytes-like object is required, not 'str'" (the type's
/// C name, as CPython formats it).
fn not_bytes_like(obj: &Bound<'_, PyAny>) -> PyErr {
    // SAFETY: `obj` is live and the GIL is held; a type's `tp_name` is a NUL-terminated string
    // that lives as long as the type, which `obj` keeps alive for this call.
    let name = unsafe { std::ffi::CStr::from_ptr((*ffi::Py_TYPE(obj.as_ptr())).tp_name) };
    PyTypeError::new_err(format!(
        "memoryview: a bytes-like object is required, not '{}'",
        name.to_string_lossy()
    ))
}
