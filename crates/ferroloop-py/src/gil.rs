//! State shared between Python threads, guarded by the GIL.
//!
//! PyO3 requires every `#[pyclass]` to be `Sync`. The loop's state (ready queue, timer heap, fd
//! table) is only ever touched by a thread that holds the GIL, so a `RefCell` behind a proof of
//! holding the GIL (`Python<'_>`) is enough: no lock on the hot path, and a re-entrant misuse
//! panics instead of corrupting memory.

use pyo3::Python;
use std::cell::{Ref, RefCell, RefMut};

/// A `RefCell` that can only be borrowed with the GIL held.
#[derive(Default)]
pub struct GilCell<T>(RefCell<T>);

// Why this holds: every access goes through `borrow`/`borrow_mut`, which require a `Python<'_>`
// token, so it happens on a thread holding the GIL; with the GIL (the module is declared
// `gil_used`, so a free-threaded interpreter turns the GIL back on when it imports it) only one
// such thread runs at a time, and the GIL's release/acquire orders their accesses. A `Ref`/`RefMut`
// cannot move into `Python::detach` (they are not `Send`), so no access happens with the GIL
// released; one kept alive across a `detach` in the caller's frame is seen by another thread as
// borrowed (a panic, never a data race, because the flag is not written meanwhile).
// SAFETY: all access is serialised by the GIL, as argued above.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Self(RefCell::new(value))
    }

    /// Shared access, with the GIL held.
    #[inline]
    pub fn borrow<'a>(&'a self, _py: Python<'_>) -> Ref<'a, T> {
        self.0.borrow()
    }

    /// Shared access for `__traverse__`. PyO3 hands `__traverse__` no `Python` token, so the
    /// caller obtains one with [`traverse_token`]: CPython's collector calls `tp_traverse` on a
    /// thread that holds the GIL. `None` when the state is borrowed mutably at that moment (a
    /// collection triggered inside a borrow), in which case the object's references are not
    /// reported this time, which only delays their collection.
    #[inline]
    pub fn borrow_for_traverse<'a>(&'a self, _py: Python<'_>) -> Option<Ref<'a, T>> {
        self.0.try_borrow().ok()
    }

    /// Exclusive access through `&mut self` (no borrow flag, no token needed: the caller owns
    /// the cell, e.g. while dropping it).
    #[inline]
    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_mut()
    }

    /// Exclusive access, with the GIL held. Never call into Python while holding it.
    #[inline]
    pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> RefMut<'a, T> {
        self.0.borrow_mut()
    }
}

/// The GIL proof for `__traverse__` implementations (see [`GilCell::borrow_for_traverse`]).
///
/// # Safety
/// Call only from a `__traverse__` method, and use the token only to borrow `GilCell`s (never
/// to call into Python, which `tp_traverse` forbids). It holds because CPython runs the
/// collector, and so every `tp_traverse`, on a thread attached to the interpreter with the GIL
/// held; the module is declared `gil_used` (lib.rs), so even a free-threaded interpreter keeps
/// the GIL enabled once it is imported.
#[inline]
pub unsafe fn traverse_token<'py>() -> Python<'py> {
    // SAFETY: the caller upholds this function's contract (see above).
    unsafe { Python::assume_attached() }
}
