//! Keeping pending callbacks out of CPython's garbage collector, and who owns a handle.
//!
//! A ready callback lives a few microseconds, a timer sometimes hours; either way, while the loop
//! owns it, the collector gains nothing from tracking it: it is reachable from the loop. Tracking
//! it costs every young-generation collection a traversal of each pending handle and of the
//! context copy made for it (about a third of `call_soon`'s time in a profile). So:
//!
//! - **While the loop owns a handle** ([`Owner::Ready`], [`Owner::Timer`], [`Owner::Fd`]: ready
//!   queue, timer heap, fd table) the handle is untracked. (PyO3 frees a `Handle` with the
//!   checked `PyObject_GC_UnTrack`, which is why untracking handles is safe at any time.) The
//!   loop's `__traverse__` reports the handle's
//!   references on their behalf, exactly once per handle: a ready-queue entry only when the
//!   handle is [`Owner::Ready`] (an fd handle queued for a turn is reported through the fd table
//!   only), a heap entry when [`Owner::Timer`], an fd-table entry when [`Owner::Fd`]. So a cycle
//!   through a pending handle (an unclosed loop dropped with `call_soon(loop.stop)` pending) is
//!   still collected. `Handle::__traverse__` reports nothing while the loop owns it.
//! - **When the loop lets go** ([`release`]: [`Owner::Done`]), the handle reports its own
//!   references again, and it is tracked again if anyone else still holds it, so cycles formed
//!   later, through user code that kept the handle, are collected as with `asyncio.Handle`.
//!
//! - **The context copy** the loop makes for a handle (`call_soon(cb)` without `context=`: one
//!   new `Context` per callback) is untracked too, from its creation ([`untrack_own_context`]):
//!   otherwise every young collection still walks one context per pending callback. Nobody else
//!   holds such a copy unless they ask the handle for it (`handle._context`), so the loop's
//!   traversal (`loop_core.rs`, `loop_traverse`) reports the copy's references on its behalf,
//!   with the handle's, but only while the handle holds the only reference ([`traverse_context`]);
//!   a copy someone else also holds is reported by nobody, which only keeps it alive. CPython
//!   frees a `Context` with the unchecked `_PyObject_GC_UNTRACK`, which would corrupt the
//!   collector's lists for an untracked object, so the copy is tracked again
//!   ([`retrack_context`]) before the handle can drop its reference: when the loop lets go of
//!   the handle and in the handle's `Drop`, whichever comes first.
//!
//! Every mistake this scheme could make is on the safe side: a reference reported by nobody only
//! keeps objects alive; a reference is never reported twice (that could free a live object).

use pyo3::ffi;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// Who owns a handle: one state instead of separate flags. Transitions (all under the GIL):
/// `Free → Ready | Timer | Fd` when the loop adopts a handle it created; `Timer → Ready` when the
/// timer leaves the heap (`set_unscheduled`: due, or dropped and released at once);
/// `Ready | Timer | Fd → Done` when the loop releases it. `Done` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Owner {
    /// Created, not yet handed to the loop.
    Free = 0,
    /// In the ready queue (a `call_soon` handle, or a timer that came due).
    Ready = 1,
    /// In the timer heap (CPython's `TimerHandle._scheduled`): its `cancel()` counts towards the
    /// heap's cancelled entries.
    Timer = 2,
    /// In the fd table (`add_reader`/`add_writer`); copies of the reference may sit in the ready
    /// queue meanwhile, which do not own it.
    Fd = 3,
    /// The loop let go: run, dropped, unregistered or the loop closed.
    Done = 4,
}

impl Owner {
    /// True while the loop owns the handle (untracked; the loop reports its references).
    #[inline]
    pub(crate) fn loop_owned(self) -> bool {
        matches!(self, Owner::Ready | Owner::Timer | Owner::Fd)
    }
}

/// An [`Owner`] that a frozen pyclass can hold (an atomic only to be `Sync`; every write happens
/// under the GIL, so relaxed ordering suffices).
#[derive(Debug)]
pub(crate) struct OwnerCell(AtomicU8);

impl OwnerCell {
    pub(crate) const fn new() -> Self {
        Self(AtomicU8::new(Owner::Free as u8))
    }

    #[inline]
    pub(crate) fn get(&self) -> Owner {
        match self.0.load(Relaxed) {
            0 => Owner::Free,
            1 => Owner::Ready,
            2 => Owner::Timer,
            3 => Owner::Fd,
            _ => Owner::Done,
        }
    }

    #[inline]
    pub(crate) fn set(&self, o: Owner) {
        self.0.store(o as u8, Relaxed);
    }
}

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

/// The loop takes ownership of a handle it just created (`obj`, whose state is `cell`), as
/// `owner` (one of the loop-owned states).
#[inline]
pub(crate) fn adopt(obj: &Bound<'_, PyAny>, cell: &OwnerCell, owner: Owner) {
    debug_assert!(owner.loop_owned());
    cell.set(owner);
    untrack(obj);
}

/// The loop gives up ownership (idempotent): from now on the handle reports its own references,
/// and it is tracked again if anyone else holds it.
#[inline]
pub(crate) fn release(obj: &Bound<'_, PyAny>, cell: &OwnerCell) {
    if cell.get().loop_owned() {
        cell.set(Owner::Done);
        track_if_shared(obj);
    }
}

/// A context copy the loop just made for a handle (`copy_context()`, so the handle's reference is
/// the only one): untracked while the handle holds it (module comment).
#[inline]
pub(crate) fn untrack_own_context(ctx: &Py<PyAny>) {
    let p = ctx.as_ptr();
    // SAFETY: `p` is live (we hold a reference), the GIL is held (a `Py` is only created and
    // used under it here), and a `Context` is a GC type; PyObject_GC_UnTrack is the checked
    // variant. It is tracked again before any other code can free it (`retrack_context`).
    unsafe {
        if ffi::Py_REFCNT(p) == 1 {
            ffi::PyObject_GC_UnTrack(p.cast());
        }
    }
}

/// Tracks a handle's context again if the loop untracked it (idempotent): before the handle lets
/// go of it, and when the loop lets go of the handle.
///
/// # Safety
/// The GIL is held and `ctx` is a live object of a GC type (a `Context`, or whatever the caller
/// passed as `context=`, which the loop never untracks).
#[inline]
pub(crate) unsafe fn retrack_context(ctx: *mut ffi::PyObject) {
    // SAFETY: as the caller guarantees; PyObject_GC_Track is only given an untracked object of a
    // GC type (checked first: tracking a tracked object aborts).
    unsafe {
        if ffi::PyObject_IS_GC(ctx) != 0 && ffi::PyObject_GC_IsTracked(ctx) == 0 {
            ffi::PyObject_GC_Track(ctx.cast());
        }
    }
}

/// Reports, on behalf of the loop, the references of a context copy it untracked, if the handle
/// holds the only reference to it (module comment); returns the visitor's verdict.
///
/// # Safety
/// Called from a `tp_traverse` (GIL held, `visit`/`arg` the collector's) with a live `ctx`.
#[inline]
pub(crate) unsafe fn traverse_context(
    ctx: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: as the caller guarantees; the type's tp_traverse is called as the collector would
    // call it, on an object that no collector list holds (untracked), so its references are
    // reported exactly once: here.
    unsafe {
        if ffi::PyObject_IS_GC(ctx) == 0
            || ffi::PyObject_GC_IsTracked(ctx) != 0
            || ffi::Py_REFCNT(ctx) != 1
        {
            return 0;
        }
        match (*ffi::Py_TYPE(ctx)).tp_traverse {
            Some(tr) => tr(ctx, visit, arg),
            None => 0,
        }
    }
}
