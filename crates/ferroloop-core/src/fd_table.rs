//! The fd table: the reader and writer callback of each watched fd, kept in step with epoll.
//!
//! Invariant: an fd is registered with the poller exactly when it has an entry here, with the
//! interest of the callbacks it has (read when it has a reader, write when it has a writer).
//! - first callback of an fd: `add`; a callback added or removed while the other stays: `modify`;
//!   the last one removed: `delete` (entry dropped); a callback replaced by another for the same
//!   direction: `modify` all the same, which re-registers an fd closed and reused behind the
//!   table's back (ENOENT, below); only [`FdTable::resume`], for an owner that knows its fd is
//!   the one registered, skips it.
//! - An fd closed and its number reused behind the loop's back: epoll forgot the old
//!   registration, so a `modify` answering ENOENT is retried as an `add`.
//! - A failed `add`/`modify` while setting a callback is undone in the table, so the table keeps
//!   matching what epoll watches.
//! - Removing: `delete` errors are ignored (the fd may be closed already, and the kernel then
//!   dropped it; as `selectors.EpollSelector.unregister`), and so are ENOENT and EBADF from a
//!   `modify`; any other `modify` error is reported, the callback being out of the table anyway.
//!
//! As in `selector_events`, the owner cancels what [`FdTable::set`] replaces and what
//! [`FdTable::remove`] takes out; the table only moves callbacks around.
//!
//! ## Lingering registrations (flow control without `epoll_ctl` churn)
//!
//! A transport's `pause_reading()` is followed, more often than not, by `resume_reading()` within
//! a turn or two (a consumer drains what was read). Deregistering on pause and registering again
//! on resume costs an `epoll_ctl` pair per pause. So [`FdTable::suspend`] takes the reader out of
//! the table (the caller cancels it: no callback runs for that fd any more, as after a removal)
//! but leaves epoll's registration as it was: the read interest *lingers*. Then:
//!
//! - [`FdTable::resume`] (the same owner registering a reader again) finds the registration still
//!   in place and makes no syscall at all.
//! - Level-triggered epoll keeps reporting an fd that stays readable, and nothing would consume
//!   that readiness: the loop must not spin. A lingering fd reported ready is ignored once (the
//!   turn in which its owner is most likely to resume), and dropped for real (`modify`, or `delete`
//!   when no callback is left) the next time it is reported while still lingering
//!   ([`LINGER_WAKEUPS`]). A paused fd therefore costs at most [`LINGER_WAKEUPS`] wake-ups, then
//!   nothing, however long the pause; one that is not ready costs nothing at all.
//! - Any other change to the fd's registration ([`FdTable::set`], [`FdTable::remove`]) drops the
//!   lingering interest with the syscall it makes anyway, and `set` always issues its syscall
//!   when something lingered: if the fd was closed behind the table's back and its number reused,
//!   the new owner's registration is made for real (ENOENT on `modify` retried as `add`).
//!   Only `resume`, by the owner that suspended, trusts the lingering registration.
//!
//! The invariant above becomes: epoll watches an fd in the table for the interest of its
//! callbacks plus its lingering interest; an fd is in the table while either is non-empty.

use crate::callback::Callback;
use crate::poller::{Interest, Poller};
use rustix::io::Errno;
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

/// Which callback of an fd: the reader (`add_reader`) or the writer (`add_writer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The callback run when the fd is readable (or has an error or hang-up).
    Read,
    /// The callback run when the fd is writable (or has an error or hang-up).
    Write,
}

/// Where the fd table registers interest: the loop's [`Poller`], or a recording double in tests.
/// Tokens are the fd numbers.
pub trait Registry {
    /// Starts watching `fd` (`epoll_ctl(ADD)`).
    fn add(&self, fd: RawFd, interest: Interest) -> io::Result<()>;
    /// Changes what `fd` is watched for (`epoll_ctl(MOD)`).
    fn modify(&self, fd: RawFd, interest: Interest) -> io::Result<()>;
    /// Stops watching `fd` (`epoll_ctl(DEL)`).
    fn delete(&self, fd: RawFd) -> io::Result<()>;
}

impl Registry for Poller {
    #[inline]
    fn add(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        Poller::add(self, fd, fd as u64, interest)
    }
    #[inline]
    fn modify(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        Poller::modify(self, fd, fd as u64, interest)
    }
    #[inline]
    fn delete(&self, fd: RawFd) -> io::Result<()> {
        Poller::delete(self, fd)
    }
}

/// How many times a lingering fd may be reported ready before its lingering interest is dropped
/// for real ([module docs](self)): the first report is ignored, the second deregisters.
pub const LINGER_WAKEUPS: u8 = 2;

/// The callbacks watching one fd.
#[derive(Debug)]
pub struct FdEntry<H> {
    /// The `add_reader` callback.
    pub reader: Option<H>,
    /// The `add_writer` callback.
    pub writer: Option<H>,
    /// Interest epoll still watches although its callback was suspended ([module docs](self)).
    linger: Interest,
    /// Times the fd was reported ready for its lingering interest since it began to linger.
    linger_wakeups: u8,
}

impl<H> Default for FdEntry<H> {
    fn default() -> Self {
        Self {
            reader: None,
            writer: None,
            linger: Interest::default(),
            linger_wakeups: 0,
        }
    }
}

impl<H> FdEntry<H> {
    /// What epoll must watch this fd for.
    pub fn interest(&self) -> Interest {
        Interest {
            read: self.reader.is_some(),
            write: self.writer.is_some(),
        }
    }

    /// What epoll watches this fd for: the callbacks' interest plus what lingers.
    pub fn registered(&self) -> Interest {
        let i = self.interest();
        Interest {
            read: i.read || self.linger.read,
            write: i.write || self.linger.write,
        }
    }

    /// The interest that lingers after a [`FdTable::suspend`] (empty when none does).
    pub fn lingering(&self) -> Interest {
        self.linger
    }

    fn clear_linger(&mut self) {
        self.linger = Interest::default();
        self.linger_wakeups = 0;
    }

    /// The slot of one direction.
    pub fn slot(&self, dir: Direction) -> &Option<H> {
        match dir {
            Direction::Read => &self.reader,
            Direction::Write => &self.writer,
        }
    }

    fn slot_mut(&mut self, dir: Direction) -> &mut Option<H> {
        match dir {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        }
    }
}

fn is_errno(e: &io::Error, errno: Errno) -> bool {
    e.raw_os_error() == Some(errno.raw_os_error())
}

/// Watched fds and their callbacks (see the [module docs](self) for the invariant).
#[derive(Debug)]
pub struct FdTable<H> {
    entries: HashMap<RawFd, FdEntry<H>>,
}

impl<H> Default for FdTable<H> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<H: Callback> FdTable<H> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of watched fds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no fd is watched.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The callbacks of `fd`, if it is watched.
    pub fn get(&self, fd: RawFd) -> Option<&FdEntry<H>> {
        self.entries.get(&fd)
    }

    /// Makes `cb` the `dir` callback of `fd`, registering or updating epoll's interest. Returns
    /// the callback it replaced (the caller cancels it), or the OS error and `cb` back when epoll
    /// refused (closed fd: EBADF, regular file: EPERM), the table then being as before.
    pub fn set(
        &mut self,
        reg: &impl Registry,
        fd: RawFd,
        dir: Direction,
        cb: H,
    ) -> Result<Option<H>, (io::Error, H)> {
        let existed = self.entries.contains_key(&fd);
        let entry = self.entries.entry(fd).or_default();
        let old = entry.slot_mut(dir).replace(cb);
        let old_linger = (entry.linger, entry.linger_wakeups);
        entry.clear_linger();
        let interest = entry.interest();
        let res = if existed {
            reg.modify(fd, interest).or_else(|e| {
                // The fd was closed and its number reused: epoll forgot it.
                if is_errno(&e, Errno::NOENT) {
                    reg.add(fd, interest)
                } else {
                    Err(e)
                }
            })
        } else {
            reg.add(fd, interest)
        };
        match res {
            Ok(()) => Ok(old),
            Err(e) => {
                // Undo, so that the table keeps matching what epoll watches.
                let entry = self.entries.get_mut(&fd).expect("inserted above");
                let new = std::mem::replace(entry.slot_mut(dir), old).expect("set above");
                (entry.linger, entry.linger_wakeups) = old_linger;
                if !existed {
                    self.entries.remove(&fd);
                }
                Err((e, new))
            }
        }
    }

    /// Takes the `dir` callback of `fd` out of the table (the caller cancels it), updating
    /// epoll's interest, or deleting the registration when it was the fd's last callback.
    /// `None` when there was no such callback. The `Err` case is a `modify` error other than
    /// ENOENT/EBADF: the callback is out of the table all the same, and comes with it.
    pub fn remove(
        &mut self,
        reg: Option<&impl Registry>,
        fd: RawFd,
        dir: Direction,
    ) -> Result<Option<H>, (io::Error, H)> {
        let Some(entry) = self.entries.get_mut(&fd) else {
            return Ok(None);
        };
        let old = entry.slot_mut(dir).take();
        if old.is_none() && entry.linger.is_empty() {
            return Ok(None);
        }
        // Whatever lingered goes with this change (module docs).
        entry.clear_linger();
        let interest = entry.interest();
        if interest.is_empty() {
            self.entries.remove(&fd);
            if let Some(reg) = reg {
                // The fd may be closed already (then the kernel dropped it): not an error, as in
                // selectors.EpollSelector.unregister.
                let _ = reg.delete(fd);
            }
        } else if let Some(reg) = reg {
            if let Err(e) = reg.modify(fd, interest) {
                if !is_errno(&e, Errno::NOENT) && !is_errno(&e, Errno::BADF) {
                    match old {
                        Some(old) => return Err((e, old)),
                        None => return Ok(None),
                    }
                }
            }
        }
        Ok(old)
    }

    /// Takes the `dir` callback of `fd` out of the table (the caller cancels it) like
    /// [`remove`](Self::remove), but leaves epoll's registration in place: the interest lingers
    /// ([module docs](self)). No syscall. `None` when there was no such callback.
    pub fn suspend(&mut self, fd: RawFd, dir: Direction) -> Option<H> {
        let entry = self.entries.get_mut(&fd)?;
        let old = entry.slot_mut(dir).take()?;
        match dir {
            Direction::Read => entry.linger.read = true,
            Direction::Write => entry.linger.write = true,
        }
        entry.linger_wakeups = 0;
        Some(old)
    }

    /// Makes `cb` the `dir` callback of `fd` for the owner of that registration: after its own
    /// [`suspend`](Self::suspend) while the interest still lingers, or in place of its own
    /// callback (a transport's writer re-added while registered, as `selector_events` does), epoll
    /// already watches what is needed and no syscall is made (`selectors.EpollSelector.modify`
    /// makes none either when the events are unchanged). Otherwise exactly [`set`](Self::set).
    /// The caller vouches that `fd` is still the file it registered (a transport checks its
    /// socket's `fileno()`), which is what lets the `modify` that `set` makes be skipped.
    pub fn resume(
        &mut self,
        reg: &impl Registry,
        fd: RawFd,
        dir: Direction,
        cb: H,
    ) -> Result<Option<H>, (io::Error, H)> {
        if let Some(entry) = self.entries.get_mut(&fd) {
            let lingers = match dir {
                Direction::Read => entry.linger.read,
                Direction::Write => entry.linger.write,
            };
            let occupied = entry.slot(dir).is_some();
            if lingers && !occupied {
                let before = entry.registered();
                *entry.slot_mut(dir) = Some(cb);
                match dir {
                    Direction::Read => entry.linger.read = false,
                    Direction::Write => entry.linger.write = false,
                }
                if entry.linger.is_empty() {
                    entry.linger_wakeups = 0;
                }
                debug_assert_eq!(before, entry.registered());
                return Ok(None);
            }
            if occupied && entry.linger.is_empty() {
                return Ok(entry.slot_mut(dir).replace(cb));
            }
        }
        self.set(reg, fd, dir, cb)
    }

    /// The turn saw `fd` ready (`read`/`write` as reported): counts a wake-up of its lingering
    /// interest, and true when that interest must now be dropped ([`LINGER_WAKEUPS`]; the caller
    /// then calls [`lapse`](Self::lapse) once the events are handled).
    pub fn linger_hit(&mut self, fd: RawFd, read: bool, write: bool) -> bool {
        let Some(entry) = self.entries.get_mut(&fd) else {
            return false;
        };
        if !((read && entry.linger.read) || (write && entry.linger.write)) {
            return false;
        }
        entry.linger_wakeups = entry.linger_wakeups.saturating_add(1);
        entry.linger_wakeups >= LINGER_WAKEUPS
    }

    /// Drops the lingering interest of `fd` for real: `modify` to the callbacks' interest, or
    /// `delete` (and the entry) when it has none. Errors are ignored, as on removal (the fd may
    /// be closed already).
    pub fn lapse(&mut self, reg: &impl Registry, fd: RawFd) {
        let Some(entry) = self.entries.get_mut(&fd) else {
            return;
        };
        if entry.linger.is_empty() {
            return;
        }
        entry.clear_linger();
        let interest = entry.interest();
        if interest.is_empty() {
            self.entries.remove(&fd);
            let _ = reg.delete(fd);
        } else {
            let _ = reg.modify(fd, interest);
        }
    }

    /// Every callback in the table, readers and writers, in no particular order.
    pub fn callbacks(&self) -> impl Iterator<Item = &H> {
        self.entries
            .values()
            .flat_map(|e| [&e.reader, &e.writer].into_iter().flatten())
    }

    /// Empties the table (`loop.close()`) without touching epoll (the poller is closed with it),
    /// returning the callbacks so the caller can drop them where it is safe to.
    pub fn take_all(&mut self) -> Vec<H> {
        std::mem::take(&mut self.entries)
            .into_values()
            .flat_map(|e| [e.reader, e.writer].into_iter().flatten())
            .collect()
    }
}
