//! The write buffer: what the socket has not taken yet, as a queue of pieces sent with one
//! `sendmsg` each time the fd is writable.

use super::sys::{with_fd, RawBuffer};
use crate::gil::GilCell;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::RawFd;

/// The most pieces one `sendmsg` hands the kernel (Linux's `IOV_MAX`, the stdlib's `SC_IOV_MAX`).
const IOV_MAX: usize = 1024;

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

/// The transport's write buffer, as the stdlib's borrowed functions see it (`self._buffer`):
/// `len()` is the unsent byte count (3.11's `bytearray`), truth means "not empty", `clear()`
/// drops everything.
#[pyclass(frozen, module = "ferroloop._native", name = "WriteBuffer")]
#[derive(Default)]
pub struct WriteBuffer {
    st: GilCell<BufState>,
}

impl WriteBuffer {
    /// Unsent bytes.
    pub(super) fn size(&self, py: Python<'_>) -> usize {
        self.st.borrow(py).size
    }

    /// Appends what the socket did not take of `obj` (`raw`'s bytes from `start` on): an exact
    /// `bytes` by reference, anything else as a copy.
    pub(super) fn push(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        raw: &RawBuffer,
        start: usize,
    ) {
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
        let mut b = self.st.borrow_mut(py);
        b.size += len;
        b.chunks.push_back(chunk);
    }

    /// One `sendmsg` of the first pieces: the number of bytes sent.
    pub(super) fn send(&self, py: Python<'_>, fd: RawFd) -> Result<usize, Errno> {
        let b = self.st.borrow(py);
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

    /// Forgets the first `n` unsent bytes (sent); the pieces let go are dropped after the borrow.
    pub(super) fn consume(&self, py: Python<'_>, mut n: usize) {
        let mut dropped = Vec::new();
        {
            let mut st = self.st.borrow_mut(py);
            st.size -= n;
            while n > 0 {
                let first = st.chunks.front_mut().expect("consumed more than buffered");
                let len = first.rest(py).len();
                if len <= n {
                    n -= len;
                    dropped.extend(st.chunks.pop_front());
                } else {
                    first.start += n;
                    n = 0;
                }
            }
        }
        drop(dropped);
    }
}

#[pymethods]
impl WriteBuffer {
    fn __len__(&self, py: Python<'_>) -> usize {
        self.size(py)
    }

    fn __bool__(&self, py: Python<'_>) -> bool {
        self.size(py) > 0
    }

    pub(super) fn clear(&self, py: Python<'_>) {
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
