//! The poller: level-triggered epoll plus a cross-thread waker.
//!
//! Contract a backend must meet (the loop relies on each point):
//! - **Level-triggered.** `add_reader` callbacks run on every turn while the fd stays readable,
//!   as with CPython's selectors; an edge-triggered backend (mio) would lose readiness that a
//!   callback did not drain.
//! - **Nanosecond timeouts where the kernel allows, never an early wake-up.** Timers have
//!   sub-millisecond resolution, so the wait must not round a 0.2 ms timeout up to 1 ms:
//!   `epoll_pwait2` (Linux 5.11+) takes a `timespec`. Where it is missing (ENOSYS: older kernels)
//!   or refused (EPERM: a seccomp filter), the wait falls back to `epoll_wait` with the timeout
//!   rounded *up* to whole milliseconds (a nonzero timeout is at least 1 ms, so a timer is late
//!   by under a millisecond, never early). See [Backend selection](#backend-selection).
//! - **EINTR is reported, not retried**, by either syscall. A signal (Ctrl-C) arriving while the
//!   loop waits must end the wait so the loop can run the Python signal handler at once;
//!   [`Poller::wait`] returns `ErrorKind::Interrupted` and the caller decides.
//! - **A waker usable from any thread** that ends the current wait, or the next one if no wait is
//!   in progress, and costs one syscall per burst of wake-ups, not one per wake-up.
//! - **Errors and hang-ups wake both directions**, as CPython's `EpollSelector` maps them: a
//!   reader sees EOF or the error on its next read, a writer its error on the next write.
//!
//! Built on rustix's safe epoll and eventfd wrappers rather than mio (edge-triggered, millisecond
//! timeouts) or polling (retries EINTR itself, and re-arms a timerfd and its notifier with extra
//! syscalls on every wait). The `epoll_wait` fallback is a direct `libc` call: with the
//! workspace's `linux_5_11` feature rustix's `epoll::wait` always issues `epoll_pwait2`.
//!
//! # Backend selection
//!
//! One choice per process, kept in a process-wide atomic:
//! - By default every wait uses `epoll_pwait2`. The first time it answers ENOSYS or EPERM (which
//!   an epoll wait never returns for any other reason), the process switches to `epoll_wait` for
//!   good, and the refused wait is retried at once with it: the caller sees neither the error nor
//!   a lost wait. Other errors are returned as they are and change nothing.
//! - `FERROLOOP_EPOLL=wait` in the environment (read once, at the first wait or
//!   [`uses_epoll_wait`] call of the process) selects `epoll_wait` from the start, so
//!   `epoll_pwait2` is never issued: for tests, and for seccomp policies that kill the process
//!   on an unknown syscall instead of refusing it. Any other value, or none, is the default.
//! - [`force_epoll_wait`] does the same from code (tests); [`uses_epoll_wait`] tells which
//!   syscall the next wait will use.

use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags, Timespec};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The token under which the waker's eventfd is registered; never handed to the caller.
const WAKER_TOKEN: u64 = u64::MAX;

/// [`MODE`] before the first wait of the process has read `FERROLOOP_EPOLL`.
const MODE_UNDECIDED: u8 = 0;
/// [`MODE`] while waits use `epoll_pwait2` (nanosecond timeouts).
const MODE_PWAIT2: u8 = 1;
/// [`MODE`] once waits use `epoll_wait` (millisecond timeouts, rounded up); never left.
const MODE_WAIT: u8 = 2;

/// Which syscall every [`Poller::wait`] of the process uses. Relaxed ordering throughout: the
/// value publishes no other memory, and a thread that still sees `MODE_PWAIT2` after another
/// switched only pays one more refused `epoll_pwait2` before it switches too.
static MODE: AtomicU8 = AtomicU8::new(MODE_UNDECIDED);

/// The environment variable that selects `epoll_wait` from the start when set to `wait`.
const MODE_ENV: &str = "FERROLOOP_EPOLL";

fn mode() -> u8 {
    match MODE.load(Ordering::Relaxed) {
        MODE_UNDECIDED => decide_mode(),
        m => m,
    }
}

/// Reads `FERROLOOP_EPOLL` once per process. A switch made meanwhile by another thread (a
/// refusal or [`force_epoll_wait`]) wins over the default.
#[cold]
fn decide_mode() -> u8 {
    let wanted = match std::env::var_os(MODE_ENV) {
        Some(v) if v == "wait" => MODE_WAIT,
        _ => MODE_PWAIT2,
    };
    match MODE.compare_exchange(MODE_UNDECIDED, wanted, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => wanted,
        Err(current) => current,
    }
}

/// Makes every later [`Poller::wait`] in this process use `epoll_wait` (millisecond timeouts,
/// rounded up) instead of `epoll_pwait2`, as if `epoll_pwait2` had been refused. For tests of the
/// fallback; there is no way back.
pub fn force_epoll_wait() {
    MODE.store(MODE_WAIT, Ordering::Relaxed);
}

/// True when waits in this process use the `epoll_wait` fallback: forced by
/// [`force_epoll_wait`] or `FERROLOOP_EPOLL=wait`, or switched to after `epoll_pwait2` answered
/// ENOSYS or EPERM.
pub fn uses_epoll_wait() -> bool {
    mode() == MODE_WAIT
}

/// `epoll_wait`'s timeout argument: milliseconds rounded up, so the wait never ends before
/// `timeout` (a nonzero sub-millisecond timeout is 1 ms, not 0, which would only poll); capped
/// at `i32::MAX` ms (about 24.8 days; the loop recomputes its timeout on every turn); `None`
/// is -1 (forever).
fn timeout_millis(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    }
}

// The fallback hands the kernel rustix's `epoll::Event` buffer as `libc::epoll_event`s. Both
// spell the kernel's `struct epoll_event` (packed on x86_64); these checks fail the build if
// they ever differ.
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<epoll::Event>() == size_of::<libc::epoll_event>());
    assert!(align_of::<epoll::Event>() == align_of::<libc::epoll_event>());
    assert!(size_of::<EventFlags>() == size_of::<u32>());
    assert!(size_of::<EventData>() == size_of::<u64>());
    assert!(offset_of!(epoll::Event, flags) == offset_of!(libc::epoll_event, events));
    assert!(offset_of!(epoll::Event, data) == offset_of!(libc::epoll_event, u64));
};

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

    /// How many readiness events the last wait returned and [`Poller::drain`] has not consumed.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
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
    /// `epoll_ctl` calls made for fds ([`ctl_calls`](Self::ctl_calls)).
    ctl_calls: AtomicU64,
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
        Ok(Self {
            epoll,
            waker,
            ctl_calls: AtomicU64::new(0),
        })
    }

    /// How many `epoll_ctl` calls [`add`](Self::add), [`modify`](Self::modify) and
    /// [`delete`](Self::delete) made (successful or not): what flow control saves is measured by
    /// it (`LoopCore._epoll_ctl_calls`).
    pub fn ctl_calls(&self) -> u64 {
        self.ctl_calls.load(Ordering::Relaxed)
    }

    /// A handle that wakes this poller from any thread.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Starts watching `fd`. Fails with the OS error for fds epoll refuses (closed: EBADF,
    /// regular files: EPERM, already registered: EEXIST).
    pub fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl_calls.fetch_add(1, Ordering::Relaxed);
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
        self.ctl_calls.fetch_add(1, Ordering::Relaxed);
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
        self.ctl_calls.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as in `add`, the borrow lasts one epoll_ctl call on a plain integer.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        epoll::delete(&self.epoll, bfd)?;
        Ok(())
    }

    /// Waits until an fd is ready, the waker fires, `timeout` passes (`None`: forever) or a
    /// signal arrives (`Err` of kind `Interrupted`). Ready fds are then read with
    /// [`drain`](Self::drain). A zero timeout only polls. The timeout has nanosecond precision
    /// with `epoll_pwait2`, and is rounded up to whole milliseconds with the `epoll_wait`
    /// fallback (see the [module docs](self#backend-selection)); the wait never ends early.
    ///
    /// Every call is a real wait: the [readiness hint](crate::ready_hint) that lets a turn skip a
    /// zero-timeout wait is the loop's ([`EventLoop::prepare`](crate::EventLoop::prepare)), so
    /// a skipped turn touches neither the poller nor its caller's event buffer.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.buf.clear();
        let cap = events.buf.capacity();
        if mode() == MODE_WAIT {
            self.wait_millis(events, timeout)?;
        } else {
            match self.wait_nanos(events, timeout) {
                Ok(()) => {}
                // Missing (kernel < 5.11) or refused by a seccomp filter: epoll_pwait2 returns
                // neither for any other reason. Switch the process over and retry this very wait,
                // which did not start (no time passed, no event was consumed).
                Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                    MODE.store(MODE_WAIT, Ordering::Relaxed);
                    self.wait_millis(events, timeout)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Grow the buffer when it came back full, so a busy loop reports every fd in one turn.
        if events.buf.len() == cap {
            events.buf.reserve(cap);
        }
        Ok(())
    }

    /// One `epoll_pwait2` with a nanosecond timeout (rustix, `linux_5_11`).
    fn wait_nanos(&self, events: &mut Events, timeout: Option<Duration>) -> rustix::io::Result<()> {
        let ts = timeout.map(|d| Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut events.buf),
            ts.as_ref(),
        )?;
        Ok(())
    }

    /// One `epoll_wait` with the timeout rounded up to milliseconds: the fallback.
    fn wait_millis(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        debug_assert!(events.buf.is_empty());
        let max = events.buf.capacity().min(libc::c_int::MAX as usize) as libc::c_int;
        // Why the call below is sound: the pointer is the start of `events.buf`'s allocation,
        // which has room for `capacity() >= max` elements (Events starts at 256 and only grows),
        // and the vector is not touched while the kernel writes into it. An `epoll::Event` has
        // exactly the layout of `libc::epoll_event` (the const assertions above), so the
        // kernel's writes land in whole elements. The epoll fd is owned by `self` and open for
        // the whole call.
        // SAFETY: as argued just above.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.buf.as_mut_ptr().cast::<libc::epoll_event>(),
                max,
                timeout_millis(timeout),
            )
        };
        if n < 0 {
            // EINTR becomes `ErrorKind::Interrupted`, reported as the contract says.
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel initialised the first `n` elements, and `0 <= n <= max <= capacity`.
        // Every bit pattern is a valid `epoll::Event`: its flags are a plain `u32` bit set and
        // its data a union of `u64` and a raw pointer (which this crate never reads).
        unsafe { events.buf.set_len(n as usize) };
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

#[cfg(test)]
mod tests {
    use super::timeout_millis;
    use std::time::Duration;

    #[test]
    fn millisecond_timeouts_round_up() {
        let ms = |ns: u64| timeout_millis(Some(Duration::from_nanos(ns)));
        assert_eq!(timeout_millis(None), -1);
        assert_eq!(ms(0), 0, "zero only polls");
        assert_eq!(ms(1), 1, "a nonzero timeout never becomes a poll");
        assert_eq!(ms(200_000), 1);
        assert_eq!(ms(999_999), 1);
        assert_eq!(ms(1_000_000), 1);
        assert_eq!(ms(1_000_001), 2);
        assert_eq!(ms(1_500_000), 2);
        assert_eq!(ms(2_000_000), 2);
        assert_eq!(timeout_millis(Some(Duration::from_secs(3))), 3000);
        let max = i32::MAX;
        let just_below = Duration::from_millis(max as u64 - 1) + Duration::from_nanos(1);
        assert_eq!(timeout_millis(Some(just_below)), max);
        assert_eq!(
            timeout_millis(Some(Duration::from_millis(max as u64 + 1))),
            max
        );
        assert_eq!(timeout_millis(Some(Duration::MAX)), max);
    }
}
