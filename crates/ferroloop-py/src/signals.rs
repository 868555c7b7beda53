//! The loop's signal wakeup pipe: what makes Ctrl-C reach a loop that is waiting.
//!
//! CPython runs Python-level signal handlers only in the main thread, between bytecodes. When a
//! signal is delivered while the loop thread sits in `epoll_pwait2`, the wait ends with `EINTR`
//! and the turn runs the handler at once (the core's turn calls `Host::check_signals`, turn.rs).
//! But the kernel may deliver a process signal to another thread (an executor thread, a
//! library's thread), or the signal may land just before the wait starts; then nothing ends the
//! wait. While a loop runs in the main thread, `Loop.run_forever` therefore points
//! `signal.set_wakeup_fd()` at this pipe (as uvloop does): CPython's C-level handler writes the
//! signal number into it, epoll reports it under the core's `SIGNAL_TOKEN`, and the turn calls
//! `Host::signalled` (turn.rs), which empties the pipe and runs the pending Python handlers
//! (`PyErr_CheckSignals`).
//!
//! The pipe is registered in epoll under its own token and is not an entry of the loop's fd
//! table, so a turn that must not block still skips the `epoll_wait` syscall when no other fd is
//! watched: a signal then waits at most until the next blocking turn, and its Python handler
//! runs anyway as soon as the loop runs Python code.

use ferroloop_core::{Interest, Poller, SIGNAL_TOKEN};
use rustix::fd::{AsRawFd, OwnedFd, RawFd};
use rustix::pipe::{pipe_with, PipeFlags};
use std::io;

/// A non-blocking, close-on-exec pipe whose read end is watched by the loop's poller.
pub(crate) struct SignalPipe {
    read: OwnedFd,
    /// The end handed to `signal.set_wakeup_fd()` (non-blocking, as CPython requires).
    write: OwnedFd,
}

impl SignalPipe {
    /// Creates the pipe and registers its read end with `poller`.
    pub(crate) fn new(poller: &Poller) -> io::Result<Self> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        poller.add(
            read.as_raw_fd(),
            SIGNAL_TOKEN,
            Interest {
                read: true,
                write: false,
            },
        )?;
        Ok(Self { read, write })
    }

    /// The fd for `signal.set_wakeup_fd()`.
    pub(crate) fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// Empties the pipe and returns what it held (signal numbers, one byte each).
    pub(crate) fn take(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.read_all(|bytes| out.extend_from_slice(bytes));
        out
    }

    /// Empties the pipe. The bytes are signal numbers; the Python handlers run afterwards
    /// through `PyErr_CheckSignals`, which knows which signals are pending.
    pub(crate) fn drain(&self) {
        self.read_all(|_| {});
    }

    /// Reads the (non-blocking) pipe until it is empty, handing each chunk to `sink`.
    fn read_all(&self, mut sink: impl FnMut(&[u8])) {
        let mut buf = [0u8; 256];
        while let Ok(n) = rustix::io::read(&self.read, &mut buf) {
            sink(&buf[..n]);
            if n < buf.len() {
                break;
            }
        }
    }
}
