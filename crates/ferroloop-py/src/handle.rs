//! `Handle` and `TimerHandle`, the data: what `call_soon`, `call_later` and `add_reader` return,
//! and what the loop's queues hold ([`HandleRef`], the core's [`Callback`]).
//!
//! They mirror `asyncio.events.Handle`/`TimerHandle` (3.11). Their Python methods are in
//! `handle_api.rs`, their run in `turn.rs`; this module only holds the fields, the ownership
//! state ([`Owner`], `gc.rs`) and the garbage-collector traversal of their contents, so that the
//! loop's state can hold handles without depending on the code that calls into the loop.

use crate::call_args::CallArgs;
use crate::gc::{self, Owner, OwnerCell};
use crate::gil::GilCell;
use ferroloop_core::Callback;
use pyo3::prelude::*;
use pyo3::{ffi, PyTraverseError, PyVisit};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// A callback scheduled on the loop, with its arguments and its contextvars `Context`.
#[pyclass(
    subclass,
    frozen,
    freelist = 1024,
    weakref,
    module = "ferroloop",
    name = "Handle"
)]
pub struct Handle {
    /// The loop (a `LoopCore` subclass instance) that will run this handle. Released by
    /// `Drop for Handle` (as every reference the handle holds: see there).
    pub(crate) loop_: ManuallyDrop<Py<PyAny>>,
    /// The context the callback runs in: the caller's `context=`, else a copy of the current one
    /// taken when the handle was created (as `asyncio.Handle` does).
    pub(crate) context: ManuallyDrop<Py<PyAny>>,
    /// The deadline of a timer, on the loop clock. Meaningless for a plain handle.
    pub(crate) when: f64,
    /// Set once by `cancel()`; the loop skips cancelled handles.
    pub(crate) cancelled: AtomicBool,
    /// Who owns the handle (`gc.rs`): while the loop does, the handle is untracked by the
    /// collector and the loop's `__traverse__` reports its references; `Owner::Timer` is
    /// CPython's `TimerHandle._scheduled`.
    pub(crate) owner: OwnerCell,
    pub(crate) st: GilCell<HandleState>,
}

#[derive(Default)]
pub(crate) struct HandleState {
    /// `None` once cancelled (dropped to break reference cycles, as the stdlib does).
    pub(crate) callback: Option<Py<PyAny>>,
    /// The arguments (`_args`; `call_args.rs`), `None` once cancelled as the callback.
    pub(crate) args: Option<CallArgs>,
    /// Where the handle was created, in debug mode (`format_helpers.extract_stack` output).
    pub(crate) source_traceback: Option<Py<PyAny>>,
    /// The repr saved at cancel time in debug mode, so slow-callback reports still name it.
    pub(crate) repr: Option<Py<PyAny>>,
    /// A timer's deadline as passed to `call_at` when it was not a float (an int), returned by
    /// `when()`/`_when` as the stdlib's `TimerHandle` returns it; `None`: the float `when`.
    pub(crate) when_obj: Option<Py<PyAny>>,
}

/// A `Handle` with a deadline: what `call_later`/`call_at` return.
#[pyclass(extends = Handle, frozen, module = "ferroloop", name = "TimerHandle")]
pub struct TimerHandle;

impl Handle {
    pub(crate) fn new(
        loop_: Py<PyAny>,
        callback: Py<PyAny>,
        args: CallArgs,
        context: Py<PyAny>,
        when: f64,
    ) -> Self {
        Handle {
            loop_: ManuallyDrop::new(loop_),
            context: ManuallyDrop::new(context),
            when,
            cancelled: AtomicBool::new(false),
            owner: OwnerCell::new(),
            st: GilCell::new(HandleState {
                callback: Some(callback),
                args: Some(args),
                source_traceback: None,
                repr: None,
                when_obj: None,
            }),
        }
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Relaxed)
    }

    #[inline]
    pub(crate) fn owner(&self) -> Owner {
        self.owner.get()
    }

    /// The loop takes ownership of `h`, just created, as `owner` (`gc.rs`).
    #[inline]
    pub(crate) fn adopt(h: &Bound<'_, Handle>, owner: Owner) {
        gc::adopt(h.as_any(), &h.get().owner, owner);
    }

    /// The loop lets go of `h` (idempotent; `gc.rs`): the handle, and the context copy the loop
    /// made for it, are tracked again.
    #[inline]
    pub(crate) fn release(h: &Bound<'_, Handle>) {
        // SAFETY: GIL held (`Bound`); the context is live (the handle holds it).
        unsafe { gc::retrack_context(h.get().context.as_ptr()) };
        gc::release(h.as_any(), &h.get().owner);
    }

    /// Reports every reference the handle holds to the garbage collector (for its own
    /// `__traverse__`, or the loop's while the loop owns it).
    pub(crate) fn visit_contents(
        &self,
        py: Python<'_>,
        visit: &PyVisit<'_>,
    ) -> Result<(), PyTraverseError> {
        visit.call(&*self.loop_)?;
        visit.call(&*self.context)?;
        if let Some(st) = self.st.borrow_for_traverse(py) {
            visit.call(&st.callback)?;
            if let Some(a) = &st.args {
                a.visit(visit)?;
            }
            visit.call(&st.source_traceback)?;
            visit.call(&st.repr)?;
            visit.call(&st.when_obj)?;
        }
        Ok(())
    }
}

impl Drop for Handle {
    /// The context copy the loop untracked is tracked again before its last reference can go
    /// (CPython's `Context` deallocator requires a tracked object; `gc.rs`). Then every
    /// reference the handle holds is released with a plain `Py_DECREF`: dropping a `Py<T>`
    /// makes PyO3 look up a thread-local to learn whether the GIL is held (a `__tls_get_addr`
    /// call in a shared library), which was a third of a handle's deallocation.
    fn drop(&mut self) {
        // SAFETY: a Handle is dropped with the GIL held: by its tp_dealloc (PyO3), or in Rust
        // code holding `py` when `Py::new` failed; the context is still alive (the field is
        // released below, after this).
        unsafe { gc::retrack_context(self.context.as_ptr()) };
        let st = self.st.get_mut();
        let args = st.args.take();
        let fields = [
            st.callback.take().map(Py::into_any),
            st.source_traceback.take(),
            st.repr.take(),
            st.when_obj.take(),
        ];
        // SAFETY: the GIL is held (above), so a direct decref is what PyO3's drop would do; each
        // `ManuallyDrop` field is taken exactly once, here, and never used after.
        unsafe {
            decref(ManuallyDrop::take(&mut self.loop_));
            decref(ManuallyDrop::take(&mut self.context));
            for f in fields.into_iter().flatten() {
                decref(f);
            }
            if let Some(a) = args {
                a.release();
            }
        }
    }
}

/// Releases `obj` with `Py_DECREF` (no thread-local lookup, unlike `Py<T>`'s `Drop`).
///
/// # Safety
/// The calling thread holds the GIL.
#[inline]
pub(crate) unsafe fn decref<T>(obj: Py<T>) {
    let p = obj.into_ptr();
    // SAFETY: GIL held (caller); `into_ptr` handed over the reference being released.
    unsafe { ffi::Py_DECREF(p) };
}

/// A handle as the loop's queues hold it: one strong reference (a newtype so that the core's
/// [`Callback`] can be implemented for it). Released with a plain `Py_DECREF` (see
/// `Drop for Handle`): a `HandleRef` lives in the loop's GIL-guarded state or in a local of code
/// holding the GIL, and is dropped there (a turn, a close, a deallocation).
#[repr(transparent)]
pub(crate) struct HandleRef(pub(crate) ManuallyDrop<Py<Handle>>);

impl HandleRef {
    #[inline]
    pub(crate) fn new(h: Py<Handle>) -> Self {
        HandleRef(ManuallyDrop::new(h))
    }
}

impl Drop for HandleRef {
    #[inline]
    fn drop(&mut self) {
        debug_assert!(
            // SAFETY: PyGILState_Check only reads the thread state.
            unsafe { ffi::PyGILState_Check() } == 1,
            "HandleRef dropped without the GIL"
        );
        // SAFETY: dropped with the GIL held (type docs); the field is taken once, here.
        unsafe { decref(ManuallyDrop::take(&mut self.0)) };
    }
}

impl Callback for HandleRef {
    #[inline]
    fn is_cancelled(&self) -> bool {
        self.0.get().is_cancelled()
    }

    /// The timer left the heap: it is due (and now in the ready queue) or dropped (and released
    /// right after), so its `cancel()` no longer counts towards the heap's cancelled entries.
    #[inline]
    fn set_unscheduled(&self) {
        let owner = &self.0.get().owner;
        if owner.get() == Owner::Timer {
            owner.set(Owner::Ready);
        }
    }
}
