//! The per-packet half of ferroloop's TCP and Unix stream transports.
//!
//! `python/ferroloop/_transport.py` defines the transport class users see: a subclass of
//! `asyncio.transports._FlowControlMixin` and `asyncio.Transport` (so `isinstance` checks and the
//! stdlib's sendfile fallback accept it), whose rare paths (close, abort, fatal errors,
//! `connection_lost`, EOF, sendfile waiters, repr) are the stdlib's own functions. Its state, and
//! everything done once per read or write, live here in `TransportCore`:
//!
//! * `_read_ready`: the fd's reader callback. One `recv` into a per-thread buffer, then
//!   `protocol.data_received(bytes)`; for a `BufferedProtocol`, `get_buffer(-1)`, `recv` straight
//!   into the buffer it returned, `buffer_updated(n)`.
//! * `write` / `writelines`: try the socket at once and buffer only what it did not take (a `bytes`
//!   is kept by reference, anything else is copied); the writer callback `_write_ready` sends the
//!   buffer with one `sendmsg` of up to `IOV_MAX` pieces. `pause_writing`/`resume_writing` are
//!   called at the high and low water marks.
//!
//! The Python class publishes these bound methods in each instance's `__dict__`, so that
//! `transport.write(data)` is one vectorcall into Rust (and a test can still monkeypatch
//! `transport.write`). The stdlib functions it borrows read and assign the private attributes they
//! always did (`_closing`, `_conn_lost`, `_protocol`, `_buffer`, ...): those are properties over
//! this object's fields, so Rust and Python see one state.
//!
//! Error paths follow `selector_events._SelectorSocketTransport` line by line: `BlockingIOError`
//! and `InterruptedError` are retried on the next readiness, any other exception goes to the
//! transport's `_fatal_error(exc, message)` with the stdlib's message, and `SystemExit` /
//! `KeyboardInterrupt` propagate out of the callback.

use crate::gil::GilCell;
use crate::loop_core::LoopCore;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use pyo3::{ffi, intern};
use pyo3::{PyTraverseError, PyVisit};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{BorrowedFd, RawFd};

/// `selector_events._SelectorTransport.max_size`: the most one read takes from the socket.
const MAX_READ: usize = 256 * 1024;
/// The most pieces one `sendmsg` hands the kernel (Linux's `IOV_MAX`, the stdlib's `SC_IOV_MAX`).
const IOV_MAX: usize = 1024;
/// `asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u64 = 5;

thread_local! {
    /// The read buffer of every transport run by this thread's loop. A read copies what arrived
    /// into a `bytes` before any Python code runs, so one buffer serves them all.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_READ].into_boxed_slice());
}

/// A piece of the write buffer: a `bytes` kept by reference, or a copy of another bytes-like
/// object (which its owner could change after `write` returned); `start` bytes already sent.
struct Chunk {
    data: ChunkData,
    start: usize,
}

enum ChunkData {
    Bytes(Py<PyBytes>),
    Owned(Box<[u8]>),
}

impl Chunk {
    fn rest<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        let all = match &self.data {
            ChunkData::Bytes(b) => b.as_bytes(py),
            ChunkData::Owned(v) => v,
        };
        &all[self.start..]
    }
}

#[derive(Default)]
struct BufState {
    chunks: VecDeque<Chunk>,
    /// Unsent bytes over all chunks.
    size: usize,
}

impl BufState {
    /// Forgets the first `n` unsent bytes.
    fn consume(&mut self, py: Python<'_>, mut n: usize, dropped: &mut Vec<Chunk>) {
        self.size -= n;
        while n > 0 {
            let first = self
                .chunks
                .front_mut()
                .expect("consumed more than buffered");
            let len = first.rest(py).len();
            if len <= n {
                n -= len;
                dropped.extend(self.chunks.pop_front());
            } else {
                first.start += n;
                n = 0;
            }
        }
    }
}

/// The transport's write buffer, as the stdlib's borrowed functions see it (`self._buffer`):
/// `len()` is the unsent byte count (3.11's `bytearray`), truth means "not empty", `clear()`
/// drops everything.
#[pyclass(frozen, module = "ferroloop._native", name = "WriteBuffer")]
pub struct WriteBuffer {
    st: GilCell<BufState>,
}

#[pymethods]
impl WriteBuffer {
    fn __len__(&self, py: Python<'_>) -> usize {
        self.st.borrow(py).size
    }

    fn __bool__(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).size > 0
    }

    fn clear(&self, py: Python<'_>) {
        let chunks = {
            let mut st = self.st.borrow_mut(py);
            st.size = 0;
            std::mem::take(&mut st.chunks)
        };
        drop(chunks); // outside the borrow
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let st = self.st.borrow(py);
        format!(
            "<ferroloop write buffer: {} bytes in {} pieces>",
            st.size,
            st.chunks.len()
        )
    }
}

/// The state of one transport; the fields are the stdlib's private attributes of the same name.
struct TState {
    /// The Python transport object this core serves (`_transport.py`).
    transport: Option<Py<PyAny>>,
    loop_: Option<Py<PyAny>>,
    sock: Option<Py<PyAny>>,
    fd: RawFd,
    protocol: Option<Py<PyAny>>,
    /// The protocol is an `asyncio.BufferedProtocol` (reads go through `get_buffer`).
    buffered: bool,
    protocol_connected: bool,
    closing: bool,
    eof: bool,
    paused: bool,
    protocol_paused: bool,
    conn_lost: u64,
    high_water: usize,
    low_water: usize,
    empty_waiter: Option<Py<PyAny>>,
    server: Option<Py<PyAny>>,
}

/// The native state and hot paths of a socket transport (module comment).
#[pyclass(frozen, module = "ferroloop._native", name = "TransportCore")]
pub struct TransportCore {
    st: GilCell<TState>,
    buffer: Py<WriteBuffer>,
}

fn is_exit(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PySystemExit>(py) || e.is_instance_of::<PyKeyboardInterrupt>(py)
}

/// `OSError(errno, os.strerror(errno))`, which Python turns into the matching subclass
/// (`ConnectionResetError`, `BrokenPipeError`, ...), exactly as `socket.send` raises it.
fn errno_error(_py: Python<'_>, e: Errno) -> PyErr {
    crate::loop_core::os_error(std::io::Error::from_raw_os_error(e.raw_os_error()))
}

/// Would-block and interrupted calls are retried when the fd is next ready.
fn is_retry(e: Errno) -> bool {
    e == Errno::AGAIN || e == Errno::WOULDBLOCK || e == Errno::INTR
}

/// A contiguous bytes-like object's bytes, for the duration of a call (the buffer protocol with
/// `PyBUF_SIMPLE`, as `socket.send` uses for its `y*` argument; `PyBUF_WRITABLE` for reads).
struct RawBuffer {
    view: ffi::Py_buffer,
}

impl RawBuffer {
    fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<RawBuffer> {
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

    fn len(&self) -> usize {
        self.view.len as usize
    }

    fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: with PyBUF_SIMPLE/PyBUF_WRITABLE the exporter hands out `len` contiguous bytes
        // at `buf`, valid until PyBuffer_Release (our Drop), and `&self` does not outlive it.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.len()) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
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
fn with_fd<R>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>) -> R) -> R {
    // Why the fd stays open: it is what the transport's socket object returned from `fileno()`
    // just before (`TransportCore::live_fd`), with the GIL held since then; that object owns the
    // fd and is referenced by the transport, and closing it needs the GIL, which `f` (no Python
    // call) never gives up.
    // SAFETY: as above, `fd` is open for the whole borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    f(fd)
}

impl TransportCore {
    fn transport<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.st.borrow(py).transport {
            Some(t) => t.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    fn loop_core<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, LoopCore>> {
        let lp = self
            .st
            .borrow(py)
            .loop_
            .as_ref()
            .map(|l| l.bind(py).clone());
        match lp {
            Some(l) => Ok(l.cast_into::<LoopCore>()?),
            None => Err(PyRuntimeError::new_err("the transport has no event loop")),
        }
    }

    /// The socket's fd, asked of the socket object itself: a socket closed behind the
    /// transport's back gives `EBADF` (as `sock.send` would) instead of a reused number.
    fn live_fd(&self, py: Python<'_>) -> PyResult<RawFd> {
        let sock = self.st.borrow(py).sock.as_ref().map(|s| s.clone_ref(py));
        let Some(sock) = sock else {
            return Err(errno_error(py, Errno::BADF));
        };
        let fd: RawFd = sock
            .bind(py)
            .call_method0(intern!(py, "fileno"))?
            .extract()?;
        if fd < 0 {
            return Err(errno_error(py, Errno::BADF));
        }
        Ok(fd)
    }

    /// `transport._fatal_error(exc, message)`.
    fn fatal(&self, py: Python<'_>, exc: PyErr, message: &str) -> PyResult<()> {
        self.transport(py)
            .call_method1(intern!(py, "_fatal_error"), (exc.into_value(py), message))?;
        Ok(())
    }

    /// Calls the protocol; on failure other than SystemExit/KeyboardInterrupt, `_fatal_error`.
    fn protocol_call<'py>(
        &self,
        py: Python<'py>,
        res: PyResult<Bound<'py, PyAny>>,
        message: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        match res {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_exit(py, &e) => Err(e),
            Err(e) => {
                self.fatal(py, e, message)?;
                Ok(None)
            }
        }
    }

    fn protocol<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.st.borrow(py).protocol {
            Some(p) => p.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

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
                return self.fatal(
                    py,
                    errno_error(py, e),
                    "Fatal read error on socket transport",
                )
            }
        };
        if data.as_bytes().is_empty() {
            return self.on_eof(py);
        }
        let protocol = self.protocol(py);
        let res = protocol.call_method1(intern!(py, "data_received"), (data,));
        self.protocol_call(
            py,
            res,
            "Fatal error: protocol.data_received() call failed.",
        )?;
        Ok(())
    }

    fn read_get_buffer(&self, py: Python<'_>) -> PyResult<()> {
        let protocol = self.protocol(py);
        let res = protocol
            .call_method1(intern!(py, "get_buffer"), (-1,))
            .and_then(|b| {
                let raw = RawBuffer::get(&b, true)?;
                if raw.len() == 0 {
                    return Err(PyRuntimeError::new_err(
                        "get_buffer() returned an empty buffer",
                    ));
                }
                Ok(raw)
            });
        let Some(mut raw) = (match res {
            Ok(raw) => Some(raw),
            Err(e) if is_exit(py, &e) => return Err(e),
            Err(e) => {
                self.fatal(py, e, "Fatal error: protocol.get_buffer() call failed.")?;
                None
            }
        }) else {
            return Ok(());
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
                return self.fatal(
                    py,
                    errno_error(py, e),
                    "Fatal read error on socket transport",
                )
            }
        };
        if n == 0 {
            return self.on_eof(py);
        }
        let res = protocol.call_method1(intern!(py, "buffer_updated"), (n,));
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
            .call_method0(intern!(py, "_read_ready__on_eof"))?;
        Ok(())
    }

    /// `loop.call_exception_handler({...})` for a failed pause_writing/resume_writing.
    fn flow_error(&self, py: Python<'_>, e: PyErr, message: &str) -> PyResult<()> {
        if is_exit(py, &e) {
            return Err(e);
        }
        let ctx = PyDict::new(py);
        ctx.set_item("message", message)?;
        ctx.set_item("exception", e.into_value(py))?;
        ctx.set_item("transport", self.transport(py))?;
        ctx.set_item("protocol", self.protocol(py))?;
        let lp = self.st.borrow(py).loop_.as_ref().map(|l| l.clone_ref(py));
        if let Some(lp) = lp {
            lp.bind(py)
                .call_method1(intern!(py, "call_exception_handler"), (ctx,))?;
        }
        Ok(())
    }

    /// `_FlowControlMixin._maybe_pause_protocol`.
    fn maybe_pause(&self, py: Python<'_>) -> PyResult<()> {
        {
            let size = self.buffer.get().st.borrow(py).size;
            let mut st = self.st.borrow_mut(py);
            if size <= st.high_water || st.protocol_paused {
                return Ok(());
            }
            st.protocol_paused = true;
        }
        if let Err(e) = self.protocol(py).call_method0(intern!(py, "pause_writing")) {
            self.flow_error(py, e, "protocol.pause_writing() failed")?;
        }
        Ok(())
    }

    /// `_FlowControlMixin._maybe_resume_protocol`.
    fn maybe_resume(&self, py: Python<'_>) -> PyResult<()> {
        {
            let size = self.buffer.get().st.borrow(py).size;
            let mut st = self.st.borrow_mut(py);
            if !st.protocol_paused || size > st.low_water {
                return Ok(());
            }
            st.protocol_paused = false;
        }
        if let Err(e) = self
            .protocol(py)
            .call_method0(intern!(py, "resume_writing"))
        {
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
            py.import(intern!(py, "asyncio.log"))?
                .getattr(intern!(py, "logger"))?
                .call_method1(intern!(py, "warning"), ("socket.send() raised exception.",))?;
        }
        Ok(())
    }

    /// Appends to the write buffer what the socket did not take of `obj` (`raw`'s bytes from
    /// `start` on): an exact `bytes` by reference, anything else as a copy.
    fn buffer_rest(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, raw: &RawBuffer, start: usize) {
        let len = raw.len() - start;
        let chunk = match obj.cast_exact::<PyBytes>() {
            Ok(b) => Chunk {
                data: ChunkData::Bytes(b.clone().unbind()),
                start,
            },
            Err(_) => Chunk {
                data: ChunkData::Owned(raw.as_slice()[start..].into()),
                start: 0,
            },
        };
        let mut b = self.buffer.get().st.borrow_mut(py);
        b.size += len;
        b.chunks.push_back(chunk);
    }

    /// Registers `_write_ready` as the fd's writer (`loop._add_writer(fd, self._write_ready)`).
    fn add_writer(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lp = this.loop_core(py)?;
        let fd = this.st.borrow(py).fd;
        let cb = slf.getattr(intern!(py, "_write_ready"))?;
        LoopCore::add_fd_callback(&lp, fd, cb, false)
    }

    fn remove_writer(&self, py: Python<'_>) -> PyResult<()> {
        let lp = self.loop_core(py)?;
        let fd = self.st.borrow(py).fd;
        if !lp.get().closed.load(std::sync::atomic::Ordering::Relaxed) {
            LoopCore::remove_fd_callback(&lp, fd, false)?;
        }
        Ok(())
    }

    /// One `sendmsg` of the buffer's first pieces: the number of bytes sent.
    fn send_buffer(&self, py: Python<'_>, fd: RawFd) -> Result<usize, Errno> {
        let b = self.buffer.get().st.borrow(py);
        let iov: Vec<IoSlice<'_>> = b
            .chunks
            .iter()
            .take(IOV_MAX)
            .map(|c| IoSlice::new(c.rest(py)))
            .collect();
        with_fd(fd, |fd| {
            rustix::net::sendmsg(
                fd,
                &iov,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        })
    }
}

/// A field value handed to Python (a new reference for objects).
trait ToPy {
    fn to_py(&self, py: Python<'_>) -> Self;
}

impl ToPy for Option<Py<PyAny>> {
    fn to_py(&self, py: Python<'_>) -> Self {
        self.as_ref().map(|o| o.clone_ref(py))
    }
}

macro_rules! copy_to_py {
    ($($t:ty),*) => { $(impl ToPy for $t { fn to_py(&self, _py: Python<'_>) -> Self { *self } })* };
}
copy_to_py!(bool, u64, usize, RawFd);

/// Get/set properties over `TState`'s fields (written out: one `#[pymethods]` block per class).
/// The Python class maps the stdlib's private names onto them (`transport._closing` is
/// `transport._core.closing`).
#[pymethods]
impl TransportCore {
    #[new]
    fn py_new(
        py: Python<'_>,
        transport: Py<PyAny>,
        loop_: Py<PyAny>,
        sock: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        Ok(TransportCore {
            st: GilCell::new(TState {
                transport: Some(transport),
                loop_: Some(loop_),
                sock: Some(sock.unbind()),
                fd,
                protocol: None,
                buffered: false,
                protocol_connected: false,
                closing: false,
                eof: false,
                paused: false,
                protocol_paused: false,
                conn_lost: 0,
                high_water: 64 * 1024,
                low_water: 16 * 1024,
                empty_waiter: None,
                server: None,
            }),
            buffer: Py::new(
                py,
                WriteBuffer {
                    st: GilCell::new(BufState::default()),
                },
            )?,
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // SAFETY: called by CPython's collector as tp_traverse, with the GIL held; the token
        // only borrows the transport's state (gil.rs, `traverse_token`).
        let py = unsafe { crate::gil::traverse_token() };
        if let Some(st) = self.st.borrow_for_traverse(py) {
            visit.call(&st.transport)?;
            visit.call(&st.loop_)?;
            visit.call(&st.sock)?;
            visit.call(&st.protocol)?;
            visit.call(&st.empty_waiter)?;
            visit.call(&st.server)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            let taken = {
                let mut st = self.st.borrow_mut(py);
                (
                    st.transport.take(),
                    st.loop_.take(),
                    st.sock.take(),
                    st.protocol.take(),
                    st.empty_waiter.take(),
                    st.server.take(),
                )
            };
            drop(taken);
        });
    }

    /// `set_protocol`: the protocol, whether it is a `BufferedProtocol`, and `_protocol_connected`.
    fn _set_protocol(&self, py: Python<'_>, protocol: Py<PyAny>, buffered: bool) {
        let old = {
            let mut st = self.st.borrow_mut(py);
            st.buffered = buffered;
            st.protocol_connected = true;
            st.protocol.replace(protocol)
        };
        drop(old);
    }

    /// The fd's reader callback (`_SelectorSocketTransport._read_ready`).
    fn _read_ready(&self, py: Python<'_>) -> PyResult<()> {
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

    /// `transport.write(data)`.
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
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
        {
            let st = this.st.borrow(py);
            if st.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                ));
            }
            if st.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                ));
            }
        }
        let raw = RawBuffer::get(data, false)?;
        if raw.len() == 0 {
            return Ok(());
        }
        if this.st.borrow(py).conn_lost > 0 {
            return this.write_after_lost(py);
        }
        let mut start = 0;
        if this.buffer.get().st.borrow(py).size == 0 {
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
                    return this.fatal(
                        py,
                        errno_error(py, e),
                        "Fatal write error on socket transport",
                    );
                }
            }
            Self::add_writer(slf)?;
        }
        this.buffer_rest(py, data, &raw, start);
        drop(raw);
        this.maybe_pause(py)
    }

    /// `transport.writelines(list_of_data)` (3.12+: every piece is buffered, then one `sendmsg`).
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let st = this.st.borrow(py);
            if st.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call writelines() after write_eof()",
                ));
            }
            if st.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to writelines; sendfile is in progress",
                ));
            }
        }
        // Every piece must be bytes-like (3.12 makes a memoryview of each) before any is taken.
        let mut pieces = Vec::new();
        for item in list_of_data.try_iter()? {
            let item = item?;
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
        let was_empty = this.buffer.get().st.borrow(py).size == 0;
        for (item, raw) in &pieces {
            this.buffer_rest(py, item, raw, 0);
        }
        drop(pieces);
        if was_empty {
            Self::_write_ready(slf)?;
            if this.buffer.get().st.borrow(py).size > 0 && this.st.borrow(py).conn_lost == 0 {
                Self::add_writer(slf)?;
            }
        }
        this.maybe_pause(py)
    }

    /// The fd's writer callback: sends what is buffered (`_SelectorSocketTransport._write_ready`).
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.st.borrow(py).conn_lost > 0 {
            return Ok(());
        }
        let res = match this.live_fd(py) {
            Ok(fd) => this.send_buffer(py, fd).map_err(|e| (e, None)),
            Err(e) => Err((Errno::BADF, Some(e))),
        };
        match res {
            Err((e, None)) if is_retry(e) => Ok(()),
            Err((e, pyerr)) => {
                let exc = pyerr.unwrap_or_else(|| errno_error(py, e));
                this.remove_writer(py)?;
                this.buffer.get().clear(py);
                let value = exc.value(py).clone();
                this.fatal(py, exc, "Fatal write error on socket transport")?;
                let waiter = this
                    .st
                    .borrow(py)
                    .empty_waiter
                    .as_ref()
                    .map(|w| w.clone_ref(py));
                if let Some(w) = waiter {
                    w.bind(py)
                        .call_method1(intern!(py, "set_exception"), (value,))?;
                }
                Ok(())
            }
            Ok(n) => {
                let mut dropped = Vec::new();
                this.buffer
                    .get()
                    .st
                    .borrow_mut(py)
                    .consume(py, n, &mut dropped);
                drop(dropped);
                this.maybe_resume(py)?; // may append to the buffer
                if this.buffer.get().st.borrow(py).size == 0 {
                    this.remove_writer(py)?;
                    let (waiter, closing, eof) = {
                        let st = this.st.borrow(py);
                        (
                            st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                            st.closing,
                            st.eof,
                        )
                    };
                    if let Some(w) = waiter {
                        w.bind(py)
                            .call_method1(intern!(py, "set_result"), (py.None(),))?;
                    }
                    if closing {
                        this.transport(py)
                            .call_method1(intern!(py, "_call_connection_lost"), (py.None(),))?;
                    } else if eof {
                        let sock = this.st.borrow(py).sock.as_ref().map(|s| s.clone_ref(py));
                        if let Some(sock) = sock {
                            let how = py
                                .import(intern!(py, "socket"))?
                                .getattr(intern!(py, "SHUT_WR"))?;
                            sock.bind(py)
                                .call_method1(intern!(py, "shutdown"), (how,))?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.buffer.get().st.borrow(py).size
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).closing
    }

    #[getter]
    fn _buffer(&self, py: Python<'_>) -> Py<WriteBuffer> {
        self.buffer.clone_ref(py)
    }

    #[getter]
    fn get_loop(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow(py).loop_.to_py(py)
    }
    #[setter]
    fn set_loop(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.st.borrow_mut(py).loop_, value);
        drop(old); // outside the borrow: dropping an object can run Python code
    }
    #[getter]
    fn get_sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow(py).sock.to_py(py)
    }
    #[setter]
    fn set_sock(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.st.borrow_mut(py).sock, value);
        drop(old); // outside the borrow: dropping an object can run Python code
    }
    #[getter]
    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow(py).protocol.to_py(py)
    }
    #[setter]
    fn set_protocol(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.st.borrow_mut(py).protocol, value);
        drop(old); // outside the borrow: dropping an object can run Python code
    }
    #[getter]
    fn get_empty_waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow(py).empty_waiter.to_py(py)
    }
    #[setter]
    fn set_empty_waiter(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.st.borrow_mut(py).empty_waiter, value);
        drop(old); // outside the borrow: dropping an object can run Python code
    }
    #[getter]
    fn get_server(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st.borrow(py).server.to_py(py)
    }
    #[setter]
    fn set_server(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut self.st.borrow_mut(py).server, value);
        drop(old); // outside the borrow: dropping an object can run Python code
    }
    #[getter]
    fn get_sock_fd(&self, py: Python<'_>) -> RawFd {
        self.st.borrow(py).fd.to_py(py)
    }
    #[setter]
    fn set_sock_fd(&self, py: Python<'_>, value: RawFd) {
        self.st.borrow_mut(py).fd = value;
    }
    #[getter]
    fn get_protocol_connected(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).protocol_connected.to_py(py)
    }
    #[setter]
    fn set_protocol_connected(&self, py: Python<'_>, value: bool) {
        self.st.borrow_mut(py).protocol_connected = value;
    }
    #[getter]
    fn get_closing(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).closing.to_py(py)
    }
    #[setter]
    fn set_closing(&self, py: Python<'_>, value: bool) {
        self.st.borrow_mut(py).closing = value;
    }
    #[getter]
    fn get_eof(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).eof.to_py(py)
    }
    #[setter]
    fn set_eof(&self, py: Python<'_>, value: bool) {
        self.st.borrow_mut(py).eof = value;
    }
    #[getter]
    fn get_paused(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).paused.to_py(py)
    }
    #[setter]
    fn set_paused(&self, py: Python<'_>, value: bool) {
        self.st.borrow_mut(py).paused = value;
    }
    #[getter]
    fn get_protocol_paused(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).protocol_paused.to_py(py)
    }
    #[setter]
    fn set_protocol_paused(&self, py: Python<'_>, value: bool) {
        self.st.borrow_mut(py).protocol_paused = value;
    }
    #[getter]
    fn get_conn_lost(&self, py: Python<'_>) -> u64 {
        self.st.borrow(py).conn_lost.to_py(py)
    }
    #[setter]
    fn set_conn_lost(&self, py: Python<'_>, value: u64) {
        self.st.borrow_mut(py).conn_lost = value;
    }
    #[getter]
    fn get_high_water(&self, py: Python<'_>) -> usize {
        self.st.borrow(py).high_water.to_py(py)
    }
    #[setter]
    fn set_high_water(&self, py: Python<'_>, value: usize) {
        self.st.borrow_mut(py).high_water = value;
    }
    #[getter]
    fn get_low_water(&self, py: Python<'_>) -> usize {
        self.st.borrow(py).low_water.to_py(py)
    }
    #[setter]
    fn set_low_water(&self, py: Python<'_>, value: usize) {
        self.st.borrow_mut(py).low_water = value;
    }
}
