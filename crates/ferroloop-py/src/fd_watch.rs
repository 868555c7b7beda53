//! Watching file descriptors: `add_reader`/`add_writer` and their removal, for Python and for
//! the native transports.
//!
//! The fd table and its epoll registrations are the core crate's (`ferroloop_core::FdTable`,
//! kept in step); here is the glue: the table owns its handles (gc.rs, `Owner::Fd`), and, as in
//! `selector_events`, replacing or removing a callback cancels the old handle. A handle
//! cancelled directly is unregistered by the turn when its fd next fires.
//!
//! ## `sock_*` registrations
//!
//! A `sock_recv` that would block registers the fd's reader and, in the stdlib, removes it once
//! it has read: an `epoll_ctl` pair per wait, and a server awaiting `sock_recv` in a loop waits
//! once per request. Here a completed wait leaves epoll's registration *lingering*
//! ([`linger_sock_fd`](LoopCore::linger_sock_fd), `FdTable::suspend`: the callback is out of the
//! table and cancelled, as after a removal; nothing runs for the fd), and remembers which socket
//! object it was for, by weak reference. The next wait on the **same socket object**, still open
//! with the **same fd** ([`add_sock_fd_handle`](LoopCore::add_sock_fd_handle)), renews the
//! registration without a syscall (`FdTable::resume`). Anything else registers for real, as
//! always: another socket that got the fd number after a close (epoll forgot the closed file;
//! `FdTable::set` turns the `modify` that then answers ENOENT into an `add`), a socket of which
//! only the number is the same, `add_reader` from Python. A lingering fd that keeps being
//! reported ready is deregistered for real at its second report (`ferroloop_core::fd_table`,
//! "Lingering registrations"), so a socket nobody waits on costs at most two wake-ups. A
//! cancelled wait removes its registration for real, as the stdlib's `_sock_read_done` does.
//! The owners' map is swept of dead and closed sockets whenever it doubles (at least
//! [`SOCK_SWEEP_MIN`] entries), their lingering registrations dropped with it.

use crate::call_args::CallArgs;
use crate::gc::Owner;
use crate::handle::{Handle, HandleRef};
use crate::handle_api::cancel_handle;
use crate::loop_state::{closed_error, os_error, LoopCore};
use ferroloop_core::Direction;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyWeakrefMethods, PyWeakrefReference};
use std::os::fd::RawFd;

/// The size of `LoopState::sock_owners` below which it is never swept (module docs).
pub(crate) const SOCK_SWEEP_MIN: usize = 64;

fn direction(is_reader: bool) -> Direction {
    if is_reader {
        Direction::Read
    } else {
        Direction::Write
    }
}

impl LoopCore {
    /// `loop._add_reader(fd, callback, *args)` (or `_add_writer`): a handle in a copy of the
    /// current context, watching `fd`.
    pub(crate) fn add_fd_handle(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        is_reader: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        slf.get().check_closed()?;
        let handle = Py::new(
            py,
            Self::new_handle(slf, callback, CallArgs::tuple(args), None, 0.0)?,
        )?;
        Self::set_fd_callback(slf, fd, handle.clone_ref(py), direction(is_reader), false)?;
        Ok(handle)
    }

    /// `loop._add_reader(fd, callback)` (or `_add_writer`) for the loop's own native callers (the
    /// transports): a handle in a copy of the current context, as from Python.
    pub(crate) fn add_fd_callback(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        is_reader: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        Self::add_fd_handle(slf, fd, callback, PyTuple::empty(py), is_reader).map(drop)
    }

    /// A transport's `pause_reading`: unregisters the reader of `fd` and cancels it, as
    /// `loop._remove_reader(fd)` does, but leaves epoll's registration lingering for a prompt
    /// [`renew_fd_callback`](Self::renew_fd_callback) (`ferroloop_core::fd_table`, "Lingering
    /// registrations"). False when there was no reader; nothing once the loop is closed.
    pub(crate) fn suspend_fd_reader(slf: &Bound<'_, Self>, fd: RawFd) -> PyResult<bool> {
        let py = slf.py();
        let old = slf
            .get()
            .st
            .borrow_mut(py)
            .ev
            .suspend_fd(fd, Direction::Read);
        let Some(old) = old else {
            return Ok(false);
        };
        let h = old.0.bind(py);
        Handle::release(h);
        cancel_handle(h)?;
        Ok(true)
    }

    /// `loop._add_reader(fd, callback)` (or `_add_writer`) for the transport that owns `fd`'s
    /// registration: a new handle in a copy of the current context, the loop checked open, but no
    /// syscall when epoll already watches what is needed (the read interest left lingering by
    /// [`suspend_fd_reader`](Self::suspend_fd_reader), or the transport's own callback being
    /// replaced; `FdTable::resume`).
    pub(crate) fn renew_fd_callback(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        is_reader: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        slf.get().check_closed()?;
        let handle = Py::new(
            py,
            Self::new_handle(slf, callback, CallArgs::Zero, None, 0.0)?,
        )?;
        Self::set_fd_callback(slf, fd, handle, direction(is_reader), true)
    }

    /// Registers `handle` as the reader (or writer) of `fd`, replacing and cancelling any previous
    /// one (selector_events._add_reader). `resume`: the owner of the registration renews it, trusting
    /// what epoll watches (`FdTable::resume`).
    fn set_fd_callback(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        handle: Py<Handle>,
        dir: Direction,
        resume: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        // The fd table owns the handle from now on (gc.rs).
        Handle::adopt(handle.bind(py), Owner::Fd);
        let (res, closed) = {
            let mut st = slf.get().st.borrow_mut(py);
            let closed = st.ev.poller().is_none();
            let res = if resume {
                st.ev.resume_fd(fd, dir, HandleRef::new(handle))
            } else {
                st.ev.set_fd(fd, dir, HandleRef::new(handle))
            };
            (res, closed)
        };
        match res {
            Ok(None) => Ok(()),
            Ok(Some(old)) => {
                let old = old.0.bind(py);
                Handle::release(old);
                cancel_handle(old)
            }
            Err((e, new)) => {
                Handle::release(new.0.bind(py));
                drop(new);
                Err(if closed { closed_error() } else { os_error(e) })
            }
        }
    }

    /// A `sock_*` wait on `fd` for `sock` must block: its callback becomes the fd's reader (or
    /// writer), with no syscall when the registration lingers from the last wait of the same
    /// socket object on the same fd (module docs). `fd` is what `sock.fileno()` returned just
    /// before.
    pub(crate) fn add_sock_fd_handle(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        sock: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        is_reader: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let dir = direction(is_reader);
        let trusted = {
            let st = this.st.borrow(py);
            st.ev.fd_lingers(fd, dir)
                && st
                    .sock_owners
                    .get(&fd)
                    .is_some_and(|w| w.bind(py).upgrade().is_some_and(|s| s.is(sock)))
        };
        let handle = Py::new(
            py,
            Self::new_handle(slf, callback, CallArgs::Zero, None, 0.0)?,
        )?;
        Self::set_fd_callback(slf, fd, handle.clone_ref(py), dir, trusted)?;
        Ok(handle)
    }

    /// A `sock_*` wait on `fd` for `sock` completed: its callback is unregistered and cancelled,
    /// but epoll's registration is left lingering for the next wait of the same socket (module
    /// docs). False when `fd` had no such callback.
    pub(crate) fn linger_sock_fd(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        sock: &Bound<'_, PyAny>,
        is_reader: bool,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        if this.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        let old = this
            .st
            .borrow_mut(py)
            .ev
            .suspend_fd(fd, direction(is_reader));
        let Some(old) = old else {
            return Ok(false);
        };
        let h = old.0.bind(py);
        Handle::release(h);
        cancel_handle(h)?;
        drop(old);
        let known = this
            .st
            .borrow(py)
            .sock_owners
            .get(&fd)
            .is_some_and(|w| w.bind(py).upgrade().is_some_and(|s| s.is(sock)));
        if !known {
            let w = PyWeakrefReference::new(sock)?.unbind();
            let (old, sweep) = {
                let mut st = this.st.borrow_mut(py);
                let old = st.sock_owners.insert(fd, w);
                (old, st.sock_owners.len() > st.sock_sweep_at)
            };
            drop(old);
            if sweep {
                Self::sweep_sock_owners(slf)?;
            }
        }
        Ok(true)
    }

    /// Drops the owners whose socket is gone or closed (or now has another fd), with the
    /// registration that lingers for them (module docs).
    fn sweep_sock_owners(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let owners: Vec<(RawFd, Py<PyWeakrefReference>)> = this
            .st
            .borrow(py)
            .sock_owners
            .iter()
            .map(|(fd, w)| (*fd, w.clone_ref(py)))
            .collect();
        let mut stale = Vec::new();
        for (fd, w) in &owners {
            let live = match w.bind(py).upgrade() {
                Some(s) => s
                    .call_method0(intern!(py, "fileno"))
                    .and_then(|n| n.extract::<RawFd>())
                    .is_ok_and(|n| n == *fd),
                None => false,
            };
            if !live {
                stale.push(*fd);
            }
        }
        let removed: Vec<_> = {
            let mut st = this.st.borrow_mut(py);
            let removed = stale
                .iter()
                .filter_map(|fd| st.sock_owners.remove(fd))
                .collect();
            for fd in &stale {
                st.ev.lapse_fd(*fd);
            }
            st.sock_sweep_at = (2 * st.sock_owners.len()).max(SOCK_SWEEP_MIN);
            removed
        };
        drop((owners, removed));
        Ok(())
    }

    /// Unregisters the reader (or writer) of `fd` and cancels it; false when there was none.
    pub(crate) fn remove_fd_callback(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        is_reader: bool,
    ) -> PyResult<bool> {
        let py = slf.py();
        let res = slf
            .get()
            .st
            .borrow_mut(py)
            .ev
            .remove_fd(fd, direction(is_reader));
        let (old, err) = match res {
            Ok(None) => return Ok(false),
            Ok(Some(old)) => (old, None),
            Err((e, old)) => (old, Some(e)),
        };
        let h = old.0.bind(py);
        Handle::release(h);
        cancel_handle(h)?;
        match err {
            None => Ok(true),
            Some(e) => Err(os_error(e)),
        }
    }
}
