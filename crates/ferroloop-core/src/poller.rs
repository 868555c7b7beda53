//! The poller: level-triggered epoll plus a cross-thread waker.
//!
//! Contract a backend must meet (the loop relies on each point):
//! - **Level-triggered.** `add_reader` callbacks run on every turn while the fd stays readable,
//!   as with CPython's selectors; an edge-triggered backend (mio) would lose readiness that a
//!   callback did not drain.
//! - **Nanosecond timeouts.** Timers have sub-millisecond resolution, so the wait must not round a
//!   0.2 ms timeout up to 1 ms: `epoll_pwait2` (Linux 5.11+) takes a `timespec`.
//! - **EINTR is reported, not retried.** A signal (Ctrl-C) arriving while the loop waits must end
//!   the wait so the loop can run the Python signal handler at once; [`Poller::wait`] returns
//!   `ErrorKind::Interrupted` and the caller decides.
//! - **A waker usable from any thread** that ends the current wait, or the next one if no wait is
//!   in progress, and costs one syscall per burst of wake-ups, not one per wake-up.
//! - **Errors and hang-ups wake both directions**, as CPython's `EpollSelector` maps them: a
//!   reader sees EOF or the error on its next read, a writer its error on the next write.
//!
//! Built on rustix's safe epoll and eventfd wrappers rather than mio (edge-triggered, millisecond
//! timeouts) or polling (retries EINTR itself, and re-arms a timerfd and its notifier with extra
//! syscalls on every wait).

use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags, Timespec};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The token under which the waker's eventfd is registered; never handed to the caller.
const WAKER_TOKEN: u64 = u64::MAX;

/// Which directions a registration watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// Watch for readability.
    pub read: bool,
    /// Watch for writability.
    pub write: bool,
}

impl Interest {
    fn flags(self) -> EventFlags {
        let mut f = EventFlags::empty();
        if self.read {
            f |= EventFlags::IN;
        }
        if self.write {
            f |= EventFlags::OUT;
        }
        f
    }

    /// True when neither direction is watched.
    pub fn is_empty(self) -> bool {
        !self.read && !self.write
    }
}

/// One readiness report from [`Poller::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The token given at registration.
    pub token: u64,
    /// Readable, or error/hang-up.
    pub read: bool,
    /// Writable, or error/hang-up.
    pub write: bool,
}

/// Wakes a [`Poller`] from any thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Waker {
    inner: Arc<WakerInner>,
}

#[derive(Debug)]
struct WakerInner {
    fd: OwnedFd,
    /// True from the first `wake()` until the poller consumes the wake-up: later wake-ups in that
    /// window need no syscall, because the eventfd is already readable.
    pending: AtomicBool,
}

impl Waker {
    /// Ends the poller's current wait, or its next one.
    pub fn wake(&self) -> io::Result<()> {
        if self.inner.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match rustix::io::write(&self.inner.fd, &1u64.to_ne_bytes()) {
            // EAGAIN: the counter is saturated, so the fd is readable anyway.
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Consumes a wake-up. The eventfd is read *before* the flag is cleared: clearing first let a
    /// `wake()` see the cleared flag and write between the two steps, so the read consumed that
    /// write and left the flag set with the counter at zero, and every later `wake()` skipped its
    /// write (lost wake-ups for good). Now a `wake()` racing with this either sees the flag still
    /// set (no write; the swap below acquires its queued work, which this turn then runs) or sees
    /// it cleared and writes (and ends the next wait).
    fn reset(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.inner.fd, &mut buf);
        self.inner.pending.swap(false, Ordering::AcqRel);
    }
}

/// Readiness reports filled by [`Poller::wait`]; owned by the one thread that waits.
pub struct Events {
    buf: Vec<epoll::Event>,
}

// SAFETY: an `epoll::Event` is plain data (flags and a 64-bit user word). rustix types the user
// word as a union that may hold a pointer, which makes it !Send, but this crate only ever stores
// integers (`EventData::new_u64`) and never reads the word as a pointer.
unsafe impl Send for Events {}

impl Default for Events {
    fn default() -> Self {
        Self {
            buf: Vec::with_capacity(256),
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("len", &self.buf.len())
            .finish()
    }
}

impl Events {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Level-triggered epoll with a waker.
///
/// Every method takes `&self`: `epoll_ctl` is safe to call from any thread, even while another
/// thread waits, so the loop can register fds without coordinating with its own wait. Only the
/// [`Events`] buffer is per waiter.
pub struct Poller {
    epoll: OwnedFd,
    waker: Waker,
}

impl Poller {
    /// A new epoll instance with its waker registered.
    pub fn new() -> io::Result<Self> {
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(&epoll, &fd, EventData::new_u64(WAKER_TOKEN), EventFlags::IN)?;
        let waker = Waker {
            inner: Arc::new(WakerInner {
                fd,
                pending: AtomicBool::new(false),
            }),
        };
        Ok(Self { epoll, waker })
    }

    /// A handle that wakes this poller from any thread.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Starts watching `fd`. Fails with the OS error for fds epoll refuses (closed: EBADF,
    /// regular files: EPERM, already registered: EEXIST).
    pub fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        // SAFETY: the borrowed fd is used only for the duration of this epoll_ctl call; if the
        // number is not an open fd the kernel answers EBADF, it is never dereferenced as memory.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        epoll::add(
            &self.epoll,
            bfd,
            EventData::new_u64(token),
            interest.flags(),
        )?;
        Ok(())
    }

    /// Changes what a registered `fd` is watched for (ENOENT if it is not registered).
    pub fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        // SAFETY: as in `add`, the borrow lasts one epoll_ctl call on a plain integer.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        epoll::modify(
            &self.epoll,
            bfd,
            EventData::new_u64(token),
            interest.flags(),
        )?;
        Ok(())
    }

    /// Stops watching `fd`. Fails (EBADF/ENOENT) when the fd was closed meanwhile: the kernel
    /// then already dropped it, and callers may ignore the error.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: as in `add`, the borrow lasts one epoll_ctl call on a plain integer.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        epoll::delete(&self.epoll, bfd)?;
        Ok(())
    }

    /// Waits until an fd is ready, the waker fires, `timeout` passes (`None`: forever) or a
    /// signal arrives (`Err` of kind `Interrupted`). Ready fds are then read with
    /// [`drain`](Self::drain). A zero timeout only polls.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.buf.clear();
        let ts = timeout.map(|d| Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        let cap = events.buf.capacity();
        epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut events.buf),
            ts.as_ref(),
        )?;
        // Grow the buffer when it came back full, so a busy loop reports every fd in one turn.
        if events.buf.len() == cap {
            events.buf.reserve(cap);
        }
        Ok(())
    }

    /// Hands each readiness from the last [`wait`](Self::wait) to `sink`, consuming a wake-up.
    pub fn drain(&self, events: &mut Events, mut sink: impl FnMut(Readiness)) {
        for ev in events.buf.drain(..) {
            let token = ev.data.u64();
            if token == WAKER_TOKEN {
                self.waker.reset();
                continue;
            }
            let flags = ev.flags;
            // CPython's EpollSelector: anything but IN counts as writable, anything but OUT as
            // readable, so errors and hang-ups wake both directions.
            let read = !(flags - EventFlags::OUT).is_empty();
            let write = !(flags - EventFlags::IN).is_empty();
            sink(Readiness { token, read, write });
        }
    }
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("epoll", &self.epoll)
            .finish()
    }
}

impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}
