//! Handle pooling: `Handle` and `TimerHandle` objects are recycled instead of going back to the
//! allocator, as uvloop's `@cython.freelist` does for its handles.
//!
//! A handle lives for one trip through the ready queue, so a busy loop allocates and frees one
//! per callback. Reusing the memory saves the allocator round trip and, more importantly,
//! keeps the collector's allocation counter still: CPython counts every new GC object towards its
//! next collection, and with one handle per callback the collections (each traversing every
//! young object) cost more than the handles themselves. A recycled object is not a new GC
//! object, so it is not counted.
//!
//! PyO3's `#[pyclass(freelist = N)]` does the same behind a lazily created mutex, which costs
//! more than the allocation it saves on this path (a fifth of `call_soon` in a profile). Here
//! the list is a plain array guarded by the GIL: `tp_alloc` and `tp_free` run only with the
//! GIL held, and this module is `gil_used` (a free-threaded interpreter turns the GIL back on
//! when it imports it). Should the GIL be off all the same (a free-threaded interpreter run with
//! `PYTHON_GIL=0`), [`install`] leaves the default allocator in place.
//!
//! How much a pool keeps: up to [`imp::CAPACITY`] objects while the loop is busy, so that a
//! fan-out of 100k tasks (100k wake-ups pending at once) is served from the pool the next time,
//! and down to [`imp::KEEP`] once it goes idle: each wait that may block first releases up to
//! [`imp::TRIM_STEP`] objects above `KEEP` ([`trim_idle`]), so a server's memory returns to the
//! allocator after a spike, about 10 µs at a time, in moments when it has nothing to do. The
//! pools belong to the process, not to a loop: a loop that closes gives back at once what is
//! above `KEEP` ([`trim_closed`]) and leaves the rest to the next loop.
//!
//! [`install`] replaces the two types' `tp_alloc`/`tp_free` at module import. Only objects of
//! exactly that type are pooled (a subclass falls through to the default functions), and an
//! object is taken from the pool with `PyObject_Init` (type and reference count set; PyO3 then
//! writes every field), untracked by the collector as the loop wants a handle it adopts.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::PyTypeInfo;

mod imp {
    use pyo3::ffi;
    use std::cell::UnsafeCell;
    use std::ffi::c_void;
    use std::ptr;

    /// Objects kept per type while the loop is busy: enough for the bursts of a busy loop (a
    /// batch of wake-ups, a thread feeding `call_soon_threadsafe`, a fan-out of tasks). A
    /// thread holds the GIL for a switch interval (5 ms) at a time, and at 100-160 ns per
    /// `call_soon_threadsafe` it queues 30-50k handles before the loop runs any: with 8192 the
    /// rest were new GC objects, each counted towards the next collection, and that bench ran
    /// 1.25x faster with 65536 (A/B, 5 and 7 rounds). `create_task` of 100k coroutines queues
    /// 100k first steps at once: with 65536 the other 35k were new GC objects again (825 young
    /// collections and 6 full ones per 100k-task gather, against 781 and 5 with this capacity),
    /// and the gather bench ran 1.22x faster with 262144 and the idle trim below (A/B, 5
    /// rounds, 1.20-1.23). The pool
    /// only ever holds objects that were live at the same time, so it keeps at most the
    /// process's own peak of pending handles, bounded here at about 38 MB per type (a handle
    /// is 144 bytes with its GC header) while busy and [`KEEP`] once idle; the array itself is
    /// 2 MiB of zeroed memory, untouched (not resident) until a burst that size has happened.
    pub(crate) const CAPACITY: usize = 262_144;
    /// Objects kept per type through idle periods (about 9 MB of handles at most).
    pub(crate) const KEEP: usize = 65_536;
    /// Objects released per wait that may block while a pool holds more than [`KEEP`]: about
    /// 10 µs of `PyObject_GC_Del` (a step of 1024 made each of 100 waits of a loop blocking on
    /// a 0.2 ms timer take 319 µs instead of 279 µs), so at most 768 such waits after the
    /// largest burst.
    pub(crate) const TRIM_STEP: usize = 256;

    pub(super) struct Pool {
        ty: UnsafeCell<*mut ffi::PyTypeObject>,
        len: UnsafeCell<usize>,
        items: UnsafeCell<[*mut ffi::PyObject; CAPACITY]>,
    }

    // SAFETY: every access happens inside tp_alloc/tp_free or `install`, which CPython calls
    // with the GIL held, and `install` puts the pools in place only when the interpreter runs
    // with a GIL (a GIL that is on at import stays on): the GIL serialises them.
    unsafe impl Sync for Pool {}

    impl Pool {
        pub(super) const fn new() -> Self {
            Pool {
                ty: UnsafeCell::new(ptr::null_mut()),
                len: UnsafeCell::new(0),
                items: UnsafeCell::new([ptr::null_mut(); CAPACITY]),
            }
        }

        /// # Safety
        /// The GIL is held.
        pub(super) unsafe fn set_type(&self, ty: *mut ffi::PyTypeObject) {
            // SAFETY: GIL held (caller), so no other access runs concurrently.
            unsafe { *self.ty.get() = ty };
        }

        /// # Safety
        /// The GIL is held; `subtype` is a live type object.
        pub(super) unsafe fn alloc(
            &self,
            subtype: *mut ffi::PyTypeObject,
            nitems: ffi::Py_ssize_t,
        ) -> *mut ffi::PyObject {
            // SAFETY: GIL held (caller): exclusive access to the fields. A pooled pointer is a
            // whole object of exactly type `ty` whose last reference went away (`free` below),
            // still allocated; `PyObject_Init` makes it a new reference of `subtype` (== ty).
            unsafe {
                let len = &mut *self.len.get();
                if nitems == 0 && ptr::eq(subtype, *self.ty.get()) && *len > 0 {
                    *len -= 1;
                    let obj = (*self.items.get())[*len];
                    return ffi::PyObject_Init(obj, subtype);
                }
                ffi::PyType_GenericAlloc(subtype, nitems)
            }
        }

        /// # Safety
        /// The GIL is held; `obj` is an object being deallocated (refcount 0, untracked by
        /// PyO3's tp_dealloc before it calls tp_free).
        pub(super) unsafe fn free(&self, obj: *mut c_void) {
            let obj = obj.cast::<ffi::PyObject>();
            // SAFETY: GIL held (caller): exclusive access. Only exact-type objects are kept;
            // any other goes back to the allocator as the default tp_free would.
            unsafe {
                let len = &mut *self.len.get();
                if ptr::eq(ffi::Py_TYPE(obj), *self.ty.get()) && *len < CAPACITY {
                    (*self.items.get())[*len] = obj;
                    *len += 1;
                    return;
                }
                ffi::PyObject_GC_Del(obj.cast());
            }
        }

        /// Releases up to `step` pooled objects above `keep`.
        ///
        /// # Safety
        /// The GIL is held.
        pub(super) unsafe fn trim(&self, keep: usize, step: usize) {
            // SAFETY: GIL held (caller): no write runs concurrently with this read. A pool that
            // was never installed (no GIL: `install`) always answers here, by reading only.
            if unsafe { *self.len.get() } <= keep {
                return;
            }
            // SAFETY: GIL held (caller), and the pool is installed, so the GIL serialises every
            // access: exclusive. Every pooled pointer is a whole object of type `ty` whose
            // fields were already dropped (`free`): what the default tp_free, PyObject_GC_Del,
            // releases.
            unsafe {
                let len = &mut *self.len.get();
                let target = len.saturating_sub(step).max(keep);
                while *len > target {
                    *len -= 1;
                    ffi::PyObject_GC_Del((*self.items.get())[*len].cast());
                }
            }
        }

        /// How many objects the pool holds.
        ///
        /// # Safety
        /// The GIL is held.
        pub(super) unsafe fn len(&self) -> usize {
            // SAFETY: GIL held (caller): no write runs concurrently.
            unsafe { *self.len.get() }
        }
    }
}

macro_rules! pooled {
    ($pool:ident, $alloc:ident, $free:ident) => {
        static $pool: imp::Pool = imp::Pool::new();

        unsafe extern "C" fn $alloc(
            subtype: *mut ffi::PyTypeObject,
            nitems: ffi::Py_ssize_t,
        ) -> *mut ffi::PyObject {
            // SAFETY: CPython calls tp_alloc with the GIL held and a live type.
            unsafe { $pool.alloc(subtype, nitems) }
        }

        unsafe extern "C" fn $free(obj: *mut std::ffi::c_void) {
            // SAFETY: CPython (PyO3's tp_dealloc) calls tp_free with the GIL held, on an object
            // being deallocated.
            unsafe { $pool.free(obj) }
        }
    };
}

pooled!(HANDLES, handle_alloc, handle_free);
pooled!(TIMERS, timer_alloc, timer_free);

/// The loop is about to wait with a timeout (it may block: nothing is ready): release part of
/// what a burst left above [`imp::KEEP`] (module docs). Two loads when there is nothing to do.
#[inline]
pub(crate) fn trim_idle(_py: Python<'_>) {
    // SAFETY: the GIL is held (`_py`). A pool that was never installed holds nothing.
    unsafe {
        HANDLES.trim(imp::KEEP, imp::TRIM_STEP);
        TIMERS.trim(imp::KEEP, imp::TRIM_STEP);
    }
}

/// A loop closed: release everything above [`imp::KEEP`] at once. The pools belong to the
/// process, and a process whose last loop is closed makes no more waits that would trim them:
/// without this, up to [`imp::CAPACITY`] objects per type (about 38 MB) would stay pooled for
/// good after a burst. What is kept is the bound of an idle loop, for the next loop (a test
/// suite makes one per test).
pub(crate) fn trim_closed(_py: Python<'_>) {
    // SAFETY: the GIL is held (`_py`). A pool that was never installed holds nothing.
    unsafe {
        HANDLES.trim(imp::KEEP, usize::MAX);
        TIMERS.trim(imp::KEEP, usize::MAX);
    }
}

/// `_native._handle_pools()`, for the tests: `(handles pooled, timer handles pooled, CAPACITY,
/// KEEP, TRIM_STEP)`.
#[pyfunction]
pub(crate) fn _handle_pools(_py: Python<'_>) -> (usize, usize, usize, usize, usize) {
    // SAFETY: the GIL is held (`_py`).
    let (h, t) = unsafe { (HANDLES.len(), TIMERS.len()) };
    (h, t, imp::CAPACITY, imp::KEEP, imp::TRIM_STEP)
}

/// Points the two handle types' `tp_alloc`/`tp_free` at their pools (module import), unless
/// the interpreter runs without a GIL (`sys._is_gil_enabled()` false, 3.13+ free-threaded).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    if let Ok(f) = sys.getattr("_is_gil_enabled") {
        if !f.call0()?.is_truthy()? {
            return Ok(());
        }
    }
    {
        let h = crate::handle::Handle::type_object(py).as_type_ptr();
        let t = crate::handle::TimerHandle::type_object(py).as_type_ptr();
        // SAFETY: the GIL is held (`py`); both are live heap types created by PyO3, whose
        // instances are GC objects allocated by tp_alloc and released by tp_free (the pools'
        // fallbacks are the same PyType_GenericAlloc/PyObject_GC_Del). No instance exists yet,
        // so no object is released by a different tp_free than the one that allocated it.
        // PyType_Modified invalidates the type caches.
        unsafe {
            HANDLES.set_type(h);
            TIMERS.set_type(t);
            (*h).tp_alloc = Some(handle_alloc);
            (*h).tp_free = Some(handle_free);
            (*t).tp_alloc = Some(timer_alloc);
            (*t).tp_free = Some(timer_free);
            ffi::PyType_Modified(h);
            ffi::PyType_Modified(t);
        }
    }
    Ok(())
}
