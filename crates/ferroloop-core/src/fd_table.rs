//! The fd table: the reader and writer callback of each watched fd, kept in step with epoll.
//!
//! Invariant: an fd is registered with the poller exactly when it has an entry here, with the
//! interest of the callbacks it has (read when it has a reader, write when it has a writer).
//! - first callback of an fd: `add`; a callback added or removed while the other stays: `modify`;
//!   the last one removed: `delete` (entry dropped).
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

/// The callbacks watching one fd.
#[derive(Debug)]
pub struct FdEntry<H> {
    /// The `add_reader` callback.
    pub reader: Option<H>,
    /// The `add_writer` callback.
    pub writer: Option<H>,
}

impl<H> Default for FdEntry<H> {
    fn default() -> Self {
        Self {
            reader: None,
            writer: None,
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
        let Some(old) = entry.slot_mut(dir).take() else {
            return Ok(None);
        };
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
                    return Err((e, old));
                }
            }
        }
        Ok(Some(old))
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
