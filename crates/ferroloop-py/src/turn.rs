//! One turn of the loop (CPython's `BaseEventLoop._run_once`):
//! 1. drop cancelled timers (compacting when they pile up);
//! 2. wait for I/O: zero timeout when callbacks are ready or `stop()` was called, else until the
//!    earliest timer, else forever; the GIL is released while waiting; a signal ends the wait and
//!    its Python handler runs at once;
//! 3. ready fds queue their reader/writer handles; due timers are queued;
//! 4. run exactly the callbacks that were ready at that point, each in its own context.

use crate::gc;
use crate::handle::Handle;
use crate::loop_core::{LoopCore, LoopState, MAXIMUM_SELECT_TIMEOUT};
use crate::signals::SIGNAL_TOKEN;
use crate::stats::bump;
use ferroloop_core::{clock, Events};
use pyo3::intern;
use pyo3::prelude::*;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

impl LoopCore {
    /// One turn of the loop (see the module comment).
    pub(crate) fn run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        bump(&this.counters.turns);

        // 1. Timeout, with cancelled timers dropped first. What is removed is dropped after the
        //    borrow ends: dropping a Python object can run code that schedules callbacks.
        let mut removed = Vec::new();
        let (timeout, poller) = {
            let mut st = this.st.borrow_mut(py);
            st.timers.purge_cancelled(&mut removed);
            let timeout = if !st.ready.is_empty() || this.stopping.load(Relaxed) {
                Some(Duration::ZERO)
            } else if let Some(when) = st.timers.next_deadline() {
                let secs = (when - clock::monotonic()).clamp(0.0, MAXIMUM_SELECT_TIMEOUT);
                Some(Duration::from_secs_f64(secs))
            } else {
                None
            };
            // A turn that must not block and has no fd to poll skips the syscall: wake-ups from
            // other threads put their callback in the ready queue themselves (under the GIL).
            let poll = timeout != Some(Duration::ZERO) || !st.fds.is_empty();
            (timeout, if poll { st.poller.clone() } else { None })
        };
        for t in &removed {
            gc::release(t.0.bind(py));
        }
        drop(removed);

        // 2. Wait for I/O, then 3a. queue the handles of ready fds.
        if let Some(poller) = poller {
            let mut guard = this.events.lock().unwrap_or_else(|e| e.into_inner());
            let events: &mut Events = &mut guard;
            let res = if timeout == Some(Duration::ZERO) {
                poller.wait(events, timeout)
            } else {
                let before = if cfg!(feature = "diagnostics") {
                    let t = clock::monotonic();
                    this.st.borrow_mut(py).times.end_busy(t);
                    Some(t)
                } else {
                    None
                };
                let r = py.detach(|| poller.wait(events, timeout));
                if let Some(before) = before {
                    this.st.borrow_mut(py).times.idle += clock::monotonic() - before;
                }
                r
            };
            match res {
                Ok(()) => {}
                // A signal ended the wait: run its Python handler now (Ctrl-C raises here).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => py.check_signals()?,
                Err(e) => return Err(crate::loop_core::os_error(e)),
            }
            let mut stale: Vec<(RawFd, bool)> = Vec::new();
            let mut signalled = false;
            {
                let mut st = this.st.borrow_mut(py);
                let LoopState { ready, fds, .. } = &mut *st;
                poller.drain(events, |r| {
                    if r.token == SIGNAL_TOKEN {
                        signalled = true;
                        return;
                    }
                    let fd = r.token as RawFd;
                    let Some(entry) = fds.get(&fd) else { return };
                    for (hit, handle, is_reader) in [
                        (r.read, &entry.reader, true),
                        (r.write, &entry.writer, false),
                    ] {
                        if let (true, Some(h)) = (hit, handle) {
                            if h.get().is_cancelled() {
                                stale.push((fd, is_reader));
                            } else {
                                ready.push(h.clone_ref(py));
                            }
                        }
                    }
                });
            }
            drop(guard);
            // A signal's C handler wrote into the wakeup pipe (signals.rs): run the Python
            // handlers now (Ctrl-C raises here), whichever thread the kernel delivered it to.
            if signalled {
                if let Some(p) = this.st.borrow(py).signal_pipe.as_ref() {
                    p.drain();
                }
                py.check_signals()?;
            }
            // A reader/writer handle cancelled directly is unregistered when its fd fires
            // (selector_events._process_events).
            for (fd, is_reader) in stale {
                Self::remove_fd_callback(slf, fd, is_reader)?;
            }
        }

        // 3b. Queue the due timers.
        {
            let mut st = this.st.borrow_mut(py);
            let LoopState {
                ready,
                timers,
                times,
                ..
            } = &mut *st;
            let now = clock::monotonic();
            if cfg!(feature = "diagnostics") {
                // A turn that did not block: its busy stretch runs on through this poll.
                times.end_busy(now);
                times.busy_since = Some(now);
            }
            let end = now + this.clock_resolution;
            timers.pop_due(end, |t| ready.push(t.0));
        }

        // 4. Run what is ready now; callbacks scheduled meanwhile wait for the next turn.
        let n = this.st.borrow(py).ready.turn_len();
        let debug = this.debug();
        for _ in 0..n {
            let Some(handle) = this.st.borrow_mut(py).ready.pop() else {
                break;
            };
            let h = handle.bind(py);
            let hd = h.get();
            let res = if hd.is_cancelled() {
                Ok(())
            } else {
                bump(&this.counters.callbacks);
                if debug {
                    slf.call_method1(intern!(py, "_run_handle_debug"), (h,))
                        .map(drop)
                } else {
                    Handle::run(h)
                }
            };
            // Out of the queue: a ready or timer handle is the loop's no more (an fd handle stays
            // owned through the fd table).
            if !hd.fd_handle {
                gc::release(h);
            }
            res?;
        }
        Ok(())
    }
}
