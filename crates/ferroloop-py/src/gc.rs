//! Keeping pending callbacks out of CPython's garbage collector.
//!
//! A ready callback lives a few microseconds, a timer sometimes hours; either way, while the loop
//! owns it, the collector gains nothing from tracking it: it is reachable from the loop. Tracking
//! it costs every young-generation collection a traversal of each pending handle and of the
//! context copy made for it (about a third of `call_soon`'s time in a profile). So:
//!
//! - **While the loop owns a handle** (ready queue, timer heap, fd table) the handle is
//!   untracked. (Its context stays tracked: CPython frees a `Context` with the unchecked
//!   `_PyObject_GC_UNTRACK`, which crashes on an untracked object; PyO3 frees a `Handle` with
//!   the checked `PyObject_GC_UnTrack`, which is why untracking handles is safe at any time.)
//!   The loop's `__traverse__` reports the handle's
//!   references on their behalf, exactly once per handle (fd handles only through the fd table),
//!   so a cycle through a pending handle (an unclosed loop dropped with `call_soon(loop.stop)`
//!   pending) is still collected. `Handle::__traverse__` reports nothing while the loop owns it.
//! - **When the loop lets go** ([`release`]), ownership flips back to the handle, and the handle
//!   is tracked again if anyone else still holds it, so cycles formed
//!   later, through user code that kept the handle, are collected as with `asyncio.Handle`.
//!
//! Every mistake this scheme could make is on the safe side: a reference reported by nobody only
//! keeps objects alive; a reference is never reported twice (that could free a live object).

use crate::handle::Handle;
use pyo3::ffi;
use pyo3::prelude::*;
use std::sync::atomic::Ordering::Relaxed;

/// Stops the collector tracking `obj` (a `Handle`).
#[inline]
fn untrack(obj: &Bound<'_, PyAny>) {
    // SAFETY: `obj` is a live object (we hold a reference) and the GIL is held (`Bound`);
    // PyObject_GC_UnTrack accepts any GC object, tracked or not, and is a no-op on the latter.
    // Only Handles (a GC type, freed by PyO3 with the checked PyObject_GC_UnTrack) come here.
    unsafe { ffi::PyObject_GC_UnTrack(obj.as_ptr().cast()) }
}

/// Tracks `obj` again if someone besides the caller's reference holds it and it is untracked.
#[inline]
fn track_if_shared(obj: &Bound<'_, PyAny>) {
    let p = obj.as_ptr();
    // SAFETY: `p` is live (borrowed from `obj`) and the GIL is held. PyObject_GC_Track must not be
    // given an object that is already tracked (CPython aborts), hence the IsTracked check; both
    // calls are only made on objects of GC types.
    unsafe {
        if ffi::Py_REFCNT(p) > 1 && ffi::PyObject_GC_IsTracked(p) == 0 {
            ffi::PyObject_GC_Track(p.cast());
        }
    }
}

/// The loop takes ownership of a handle it just created.
#[inline]
pub(crate) fn adopt(h: &Bound<'_, Handle>) {
    h.get().loop_owned.store(true, Relaxed);
    untrack(h.as_any());
}

/// The loop gives up ownership of `h` (idempotent): from now on the handle reports its own
/// references, and it is tracked again if anyone else holds it.
#[inline]
pub(crate) fn release(h: &Bound<'_, Handle>) {
    if h.get().loop_owned.swap(false, Relaxed) {
        track_if_shared(h.as_any());
    }
}
