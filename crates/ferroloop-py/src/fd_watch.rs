//! Watching file descriptors: `add_reader`/`add_writer` and their removal.
//!
//! The fd table (`LoopState::fds`) and epoll's registrations are kept in step: an fd is
//! registered exactly when it has an entry, with the interest of the callbacks it has. As in
//! `selector_events`, replacing or removing a callback cancels the old handle, and a handle
//! cancelled directly is unregistered when its fd next fires.

use crate::gc;
use crate::handle::Handle;
use crate::loop_core::{os_error, LoopCore};
use ferroloop_core::Interest;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::os::fd::RawFd;

/// The callbacks watching one fd.
#[derive(Default)]
pub(crate) struct FdEntry {
    pub(crate) reader: Option<Py<Handle>>,
    pub(crate) writer: Option<Py<Handle>>,
}

impl FdEntry {
    pub(crate) fn interest(&self) -> Interest {
        Interest {
            read: self.reader.is_some(),
            write: self.writer.is_some(),
        }
    }
}

impl LoopCore {
    /// `loop._add_reader(fd, callback)` (or `_add_writer`) for the loop's own native callers (the
    /// transports): a handle in a copy of the current context, as from Python.
    pub(crate) fn add_fd_callback(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        is_reader: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        slf.get().check_closed()?;
        let handle = Py::new(
            py,
            Self::new_handle(slf, callback, PyTuple::empty(py), None, 0.0, true)?,
        )?;
        Self::set_fd_callback(slf, fd, handle, is_reader)
    }

    /// Registers `handle` as the reader (or writer) of `fd`, replacing and cancelling any previous
    /// one (selector_events._add_reader).
    pub(crate) fn set_fd_callback(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        handle: Py<Handle>,
        is_reader: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // The fd table owns the handle from now on (gc.rs).
        gc::adopt(handle.bind(py));
        let old = {
            let mut st = this.st.borrow_mut(py);
            let Some(poller) = st.poller.clone() else {
                drop(st);
                gc::release(handle.bind(py));
                return Err(PyRuntimeError::new_err("Event loop is closed"));
            };
            let existed = st.fds.contains_key(&fd);
            let entry = st.fds.entry(fd).or_default();
            let slot = if is_reader {
                &mut entry.reader
            } else {
                &mut entry.writer
            };
            let old = slot.replace(handle);
            let interest = entry.interest();
            let res = if existed {
                poller.modify(fd, fd as u64, interest).or_else(|e| {
                    // The fd was closed and its number reused: epoll forgot it.
                    if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) {
                        poller.add(fd, fd as u64, interest)
                    } else {
                        Err(e)
                    }
                })
            } else {
                poller.add(fd, fd as u64, interest)
            };
            if let Err(e) = res {
                // Undo, so that the table keeps matching what epoll watches.
                let entry = st.fds.get_mut(&fd).expect("inserted above");
                let slot = if is_reader {
                    &mut entry.reader
                } else {
                    &mut entry.writer
                };
                let new = std::mem::replace(slot, old);
                let gone = if existed { None } else { st.fds.remove(&fd) };
                drop(st);
                if let Some(new) = &new {
                    gc::release(new.bind(py));
                }
                drop((new, gone));
                return Err(os_error(e));
            }
            old
        };
        if let Some(old) = old {
            gc::release(old.bind(py));
            Handle::cancel_handle(old.bind(py))?;
        }
        Ok(())
    }

    /// Unregisters the reader (or writer) of `fd` and cancels it; false when there was none.
    pub(crate) fn remove_fd_callback(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        is_reader: bool,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let (old, gone) = {
            let mut st = this.st.borrow_mut(py);
            let poller = st.poller.clone();
            let Some(entry) = st.fds.get_mut(&fd) else {
                return Ok(false);
            };
            let slot = if is_reader {
                &mut entry.reader
            } else {
                &mut entry.writer
            };
            let Some(old) = slot.take() else {
                return Ok(false);
            };
            let interest = entry.interest();
            let mut gone = None;
            if let Some(poller) = poller {
                if interest.is_empty() {
                    gone = st.fds.remove(&fd);
                    // The fd may be closed already (then the kernel dropped it): not an error,
                    // as in selectors.EpollSelector.unregister.
                    let _ = poller.delete(fd);
                } else if let Err(e) = poller.modify(fd, fd as u64, interest) {
                    if e.raw_os_error() != Some(rustix::io::Errno::NOENT.raw_os_error())
                        && e.raw_os_error() != Some(rustix::io::Errno::BADF.raw_os_error())
                    {
                        drop(st);
                        gc::release(old.bind(py));
                        Handle::cancel_handle(old.bind(py))?;
                        return Err(os_error(e));
                    }
                }
            }
            (old, gone)
        };
        drop(gone);
        gc::release(old.bind(py));
        Handle::cancel_handle(old.bind(py))?;
        Ok(true)
    }
}
