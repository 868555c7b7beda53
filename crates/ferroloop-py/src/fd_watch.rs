//! Watching file descriptors: `add_reader`/`add_writer` and their removal, for Python and for
//! the native transports.
//!
//! The fd table and its epoll registrations are the core crate's (`ferroloop_core::FdTable`,
//! kept in step); here is the glue: the table owns its handles (gc.rs, `Owner::Fd`), and, as in
//! `selector_events`, replacing or removing a callback cancels the old handle. A handle
//! cancelled directly is unregistered by the turn when its fd next fires.

use crate::gc::Owner;
use crate::handle::{Handle, HandleRef};
use crate::handle_api::cancel_handle;
use crate::loop_state::{closed_error, os_error, LoopCore};
use ferroloop_core::Direction;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::os::fd::RawFd;

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
        let handle = Py::new(py, Self::new_handle(slf, callback, args, None, 0.0)?)?;
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
            Self::new_handle(slf, callback, PyTuple::empty(py), None, 0.0)?,
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
