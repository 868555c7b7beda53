//! `LoopCore`'s Python methods: the native half of `ferroloop.Loop`.
//!
//! Everything done once per callback, timer or fd event lives in Rust: scheduling (`call_soon`,
//! `call_later`, `call_at`, `call_soon_threadsafe`, here), the run loop (`turn.rs`, over the core
//! crate's turn), fd watching (`fd_watch.rs`) and metrics (`stats.rs`). What is done once per run
//! or per setup (running-loop bookkeeping, async-generator hooks, exception handlers, executors,
//! signals) is in `python/ferroloop/_loop.py`, which subclasses this class. The struct and its
//! shared helpers are in `loop_state.rs`.

use crate::cached;
use crate::call_args::CallArgs;
use crate::gc::Owner;
use crate::gil::GilCell;
use crate::handle::{Handle, HandleRef, TimerHandle};
use crate::loop_state::{closed_error, DebugValue, LoopState};
use crate::signals::SignalPipe;
use crate::sock::{Kind, SockOp};
use crate::stats::{Counters, TimeStats};
use crate::turn;
use ferroloop_core::{clock, EventLoop, Events, OffsetClock, Poller};
use pyo3::exceptions::{PyAttributeError, PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyTuple};
use pyo3::PyClassInitializer;
use pyo3::{ffi, intern};
use pyo3::{PyTraverseError, PyVisit};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

// The struct and the error helper live in loop_state.rs; this is their name for the transports.
pub(crate) use crate::loop_state::{os_error, LoopCore};

impl LoopCore {
    /// Wakes the loop out of its wait (`_write_to_self`, `call_soon_threadsafe`).
    pub(crate) fn wake(slf: &Bound<'_, Self>) {
        if let Some(w) = slf.get().waker.borrow(slf.py()).as_ref() {
            // A failed eventfd write can only mean the counter is saturated, i.e. already awake.
            let _ = w.wake();
        }
    }

    /// The body of `_remove_reader_checked`/`_remove_writer_checked`.
    fn remove_checked(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        is_reader: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if fd.is_exact_instance_of::<pyo3::types::PyInt>() {
            if let Ok(n) = fd.extract::<RawFd>() {
                if n >= 0 && !slf.getattr(intern!(py, "_fileobjs"))?.contains(fd)? {
                    let removed = if slf.get().closed.load(Relaxed) {
                        false
                    } else {
                        Self::remove_fd_callback(slf, n, is_reader)?
                    };
                    return Ok(pyo3::types::PyBool::new(py, removed)
                        .to_owned()
                        .into_any()
                        .unbind());
                }
            }
        }
        let native = if is_reader {
            intern!(py, "_native_remove_reader")
        } else {
            intern!(py, "_native_remove_writer")
        };
        Ok(slf
            .call_method1(intern!(py, "_remove_fd"), (fd, slf.getattr(native)?))?
            .unbind())
    }

    /// The debug-mode checks of `call_soon` & co (thread, callback type): in Python, off the hot
    /// path.
    fn debug_check(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<()> {
        slf.call_method1(
            intern!(slf.py(), "_debug_check_call"),
            (callback, method, check_thread),
        )?;
        Ok(())
    }

    pub(crate) fn schedule_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: CallArgs,
        context: Option<Bound<'_, PyAny>>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let debug = this.debug();
        if debug {
            Self::debug_check(slf, &callback, method, check_thread)?;
        }
        let handle = Py::new(py, Self::new_handle(slf, callback, args, context, 0.0)?)?;
        if debug {
            slf.call_method1(intern!(py, "_debug_set_traceback"), (&handle,))?;
        }
        Handle::adopt(handle.bind(py), Owner::Ready);
        this.st
            .borrow_mut(py)
            .ev
            .call_soon(HandleRef::new(handle.clone_ref(py)));
        Ok(handle)
    }

    fn schedule_at(
        slf: &Bound<'_, Self>,
        when: f64,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
        when_obj: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let debug = this.debug();
        if debug {
            Self::debug_check(slf, &callback, "call_at", true)?;
        }
        let handle = Self::new_handle(slf, callback, CallArgs::tuple(args), context, when)?;
        let timer = Py::new(
            py,
            PyClassInitializer::from(handle).add_subclass(TimerHandle),
        )?;
        let base: Py<Handle> = timer.bind(py).as_super().clone().unbind();
        if when_obj.is_some() {
            base.get().st.borrow_mut(py).when_obj = when_obj;
        }
        if debug {
            slf.call_method1(intern!(py, "_debug_set_traceback"), (&timer,))?;
        }
        // In the heap: `_scheduled` is true and a `cancel()` counts towards compaction.
        Handle::adopt(base.bind(py), Owner::Timer);
        this.st
            .borrow_mut(py)
            .ev
            .call_at(when, HandleRef::new(base));
        Ok(timer)
    }
}

/// Gives up the loop's ownership of everything it held (close, clear), before any is dropped.
fn release_all(py: Python<'_>, handles: &[HandleRef]) {
    for h in handles {
        Handle::release(h.0.bind(py));
    }
}

/// Reports a handle a loop container holds, and its contents if that container owns it (gc.rs).
fn visit_owned(
    py: Python<'_>,
    visit: &PyVisit<'_>,
    h: &HandleRef,
    owner: Owner,
) -> Result<(), PyTraverseError> {
    visit.call(&*h.0)?;
    let hd = h.0.get();
    if hd.owner() == owner {
        hd.visit_contents(py, visit)?;
    }
    Ok(())
}

/// PyO3's `tp_traverse` for `LoopCore` (the `__traverse__` below), which [`loop_traverse`] wraps.
static PYO3_TRAVERSE: std::sync::OnceLock<ffi::traverseproc> = std::sync::OnceLock::new();

/// `LoopCore`'s `tp_traverse`: PyO3's (`__traverse__`: the handles and their contents), then
/// the references of the context copies the loop untracked (gc.rs), which need the collector's
/// raw visitor (PyO3's `PyVisit` does not expose it) to be passed to the context's own
/// `tp_traverse`. Each loop-owned handle's context is reported by the container that owns the
/// handle, as its other contents are (`visit_owned`).
unsafe extern "C" fn loop_traverse(
    slf: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    let Some(inner) = PYO3_TRAVERSE.get() else {
        return 0;
    };
    // SAFETY: called by CPython as tp_traverse: `slf` is a live LoopCore (or subclass) instance,
    // the GIL is held, `visit`/`arg` are the collector's.
    let r = unsafe { inner(slf, visit, arg) };
    if r != 0 {
        return r;
    }
    // SAFETY: as above; the token only borrows GilCells (gil.rs, `traverse_token`).
    let py = unsafe { crate::gil::traverse_token() };
    // SAFETY: `slf` is a live instance of LoopCore (tp_traverse of its type), so the unchecked
    // cast holds.
    let this = unsafe { pyo3::Borrowed::from_ptr(py, slf).cast_unchecked::<LoopCore>() };
    let Some(st) = this.get().st.borrow_for_traverse(py) else {
        return 0;
    };
    let ev = &st.ev;
    let owned = ev
        .ready()
        .iter()
        .map(|h| (h, Owner::Ready))
        .chain(ev.timers().iter().map(|h| (h, Owner::Timer)))
        .chain(ev.fds().callbacks().map(|h| (h, Owner::Fd)));
    for (h, owner) in owned {
        let hd = h.0.get();
        if hd.owner() == owner {
            // SAFETY: tp_traverse context (above); the context is alive (the handle holds it).
            let r = unsafe { crate::gc::traverse_context(hd.context.as_ptr(), visit, arg) };
            if r != 0 {
                return r;
            }
        }
    }
    0
}

/// Puts [`loop_traverse`] in front of PyO3's `tp_traverse` for `LoopCore` (module import).
/// Python subclasses (`ferroloop.Loop`) reach it through CPython's `subtype_traverse`, which
/// calls the base type's current slot.
pub(crate) fn install_traverse(py: Python<'_>) {
    use pyo3::PyTypeInfo;
    let ty = LoopCore::type_object(py).as_type_ptr();
    // SAFETY: GIL held; `ty` is LoopCore's live heap type, whose tp_traverse PyO3 set (it
    // declares `__traverse__`). No instance exists yet, and the wrapper calls the saved
    // function first, so nothing PyO3 reports is lost.
    unsafe {
        if let Some(orig) = (*ty).tp_traverse {
            if PYO3_TRAVERSE.set(orig).is_ok() {
                (*ty).tp_traverse = Some(loop_traverse);
                ffi::PyType_Modified(ty);
            }
        }
    }
}

/// `AttributeError: '<class>' object has no attribute '_debug'`, as after `del` on the stock
/// loop.
fn no_debug_attribute(slf: &Bound<'_, LoopCore>) -> PyErr {
    let name = slf
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Loop".to_owned());
    PyAttributeError::new_err(format!("'{name}' object has no attribute '_debug'"))
}

impl LoopCore {
    /// The stdlib's `create_task` (`Loop._create_task_py`) with `kwargs` plus `name` and
    /// `context`: for a task factory, debug mode, or keywords the fast path does not take.
    fn create_task_py<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        kwargs: Bound<'py, PyDict>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        kwargs.set_item(intern!(py, "name"), name)?;
        kwargs.set_item(intern!(py, "context"), context)?;
        slf.call_method(intern!(py, "_create_task_py"), (coro,), Some(&kwargs))
    }

    /// `create_task(coro, name=name, context=context)` (no other keyword): the stdlib's
    /// `BaseEventLoop.create_task` while no task factory is set and debug mode is off, else
    /// that Python implementation itself (`Loop._create_task_py`). Called by the vectorcall
    /// entry (`fastcall.rs`) and by the `#[pymethods]` parser's fallback.
    ///
    /// The class is `asyncio.tasks.Task`, read at each call. The stdlib calls it as
    /// `Task(coro, loop=self, name=name, context=context)`; when it is the C `Task` and both are
    /// `None` (the defaults of its `__init__`), the call is `tp_call` with the loop's kept
    /// `{'loop': self}` (see `create_future`): the C `Task` has no vectorcall entry, so a
    /// keyword call built a three-key dictionary per task, and its argument parser then matched
    /// three keywords instead of one.
    pub(crate) fn create_task_fast<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if this.task_factory.borrow(py).is_some() || this.debug() {
            return Self::create_task_py(slf, coro, PyDict::new(py), name, context);
        }
        this.check_closed()?;
        let cls = cached::module_attr(cached::tasks(py)?, intern!(py, "Task"))?;
        let defaults = name.is_none_or(|n| n.is_none()) && context.is_none_or(|c| c.is_none());
        if defaults && cached::c_task(py).is_some_and(|t| t.is(&cls)) {
            let kwargs = loop_kwargs(slf)?;
            let args = PyTuple::new(py, [coro])?;
            // SAFETY: GIL held; `cls`, `args` and `kwargs` are live for the call; the result is
            // a new reference or NULL with an exception set, which `from_owned_ptr_or_err`
            // handles.
            return unsafe {
                let r = ffi::PyObject_Call(cls.as_ptr(), args.as_ptr(), kwargs.as_ptr());
                Bound::from_owned_ptr_or_err(py, r)
            };
        }
        let none = py.None().into_bound(py);
        vectorcall_kw(
            &cls,
            &[coro],
            cached::kw_loop_name_context(py)?,
            &[
                slf.as_any(),
                name.unwrap_or(&none),
                context.unwrap_or(&none),
            ],
        )
    }
}

/// `{'loop': self}`, made once (see `create_future`).
fn loop_kwargs<'py>(slf: &Bound<'py, LoopCore>) -> PyResult<Bound<'py, PyDict>> {
    let py = slf.py();
    let key = intern!(py, "loop");
    if let Some(d) = slf.get().loop_kwargs.borrow(py).as_ref() {
        let d = d.bind(py);
        let intact = d.len() == 1 && d.get_item(key)?.is_some_and(|v| v.is(slf));
        if intact {
            return Ok(d.clone());
        }
    }
    let d = PyDict::new(py);
    d.set_item(key, slf)?;
    let old = slf
        .get()
        .loop_kwargs
        .borrow_mut(py)
        .replace(d.clone().unbind());
    drop(old);
    Ok(d)
}

/// `cls(*args, **{names[i]: kw[i]})` through vectorcall: no argument tuple or keyword dict.
pub(crate) fn vectorcall_kw<'py>(
    cls: &Bound<'py, PyAny>,
    args: &[&Bound<'py, PyAny>],
    kwnames: &Bound<'py, PyTuple>,
    kw: &[&Bound<'py, PyAny>],
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    debug_assert_eq!(kwnames.len(), kw.len());
    // On the stack: the loop's own calls pass at most a few arguments.
    let mut stack = [std::ptr::null_mut::<ffi::PyObject>(); 8];
    let n = args.len() + kw.len();
    assert!(n <= stack.len(), "vectorcall_kw: too many arguments");
    for (slot, a) in stack.iter_mut().zip(args.iter().chain(kw.iter())) {
        *slot = a.as_ptr();
    }
    // Every pointer in `stack` is borrowed from a `Bound` that outlives the call, the keyword
    // values follow the positional ones as the vectorcall protocol requires, and `kwnames` is a
    // tuple of str with exactly `kw.len()` items.
    // SAFETY: as above; the result is a new reference or NULL with an exception set, which
    // `from_owned_ptr_or_err` handles.
    unsafe {
        let r =
            ffi::PyObject_Vectorcall(cls.as_ptr(), stack.as_ptr(), args.len(), kwnames.as_ptr());
        Bound::from_owned_ptr_or_err(py, r)
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let poller = Poller::new().map_err(os_error)?;
        let waker = poller.waker();
        let clock_resolution = clock::resolution();
        Ok(LoopCore {
            st: GilCell::new(LoopState {
                ev: EventLoop::new(poller, OffsetClock::default(), clock_resolution),
                times: TimeStats::default(),
                signal_pipe: None,
                sock_owners: HashMap::new(),
                sock_sweep_at: crate::fd_watch::SOCK_SWEEP_MIN,
            }),
            events: Mutex::new(Events::new()),
            waker: GilCell::new(Some(waker)),
            stopping: AtomicBool::new(false),
            time_replaced: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            debug_value: GilCell::new(DebugValue::Flag),
            task_factory: GilCell::new(None),
            loop_kwargs: GilCell::new(None),
            clock_resolution,
            counters: Counters::default(),
        })
    }

    /// Reports what the loop holds (ready callbacks, timers, fd callbacks, the task factory) to
    /// the garbage collector: handles refer back to their loop, so an unclosed loop dropped with
    /// callbacks pending is a cycle that only the collector can free.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The loop's own references to its handles, and, for each handle it owns (untracked,
        // gc.rs), the handle's references, exactly once: fd handles through the fd table only.
        // SAFETY: called by CPython's collector as tp_traverse, with the GIL held; the token
        // only borrows GilCells (gil.rs, `traverse_token`).
        let py = unsafe { crate::gil::traverse_token() };
        if let Some(st) = self.st.borrow_for_traverse(py) {
            let ev = &st.ev;
            // Each container reports the contents of the handles it owns: the ready queue also
            // holds fd handles (owned by the fd table) and timers that came due (now `Ready`).
            for h in ev.ready().iter() {
                visit_owned(py, &visit, h, Owner::Ready)?;
            }
            for h in ev.timers().iter() {
                visit_owned(py, &visit, h, Owner::Timer)?;
            }
            for h in ev.fds().callbacks() {
                visit_owned(py, &visit, h, Owner::Fd)?;
            }
        }
        if let Some(f) = self.task_factory.borrow_for_traverse(py) {
            visit.call(&*f)?;
        }
        if let Some(k) = self.loop_kwargs.borrow_for_traverse(py) {
            visit.call(&*k)?;
        }
        if let Some(d) = self.debug_value.borrow_for_traverse(py) {
            if let DebugValue::Object(o) = &*d {
                visit.call(o)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            let taken = self.st.borrow_mut(py).ev.take_callbacks();
            let factory = self.task_factory.borrow_mut(py).take();
            let debug = std::mem::replace(&mut *self.debug_value.borrow_mut(py), DebugValue::Flag);
            let kwargs = self.loop_kwargs.borrow_mut(py).take();
            release_all(py, &taken);
            drop((taken, factory, debug, kwargs));
        });
    }

    /// The loop clock: `time.monotonic()`'s clock, in seconds.
    fn time(&self) -> f64 {
        clock::monotonic()
    }

    // `call_soon` and `call_soon_threadsafe` are raw vectorcall methods: fastcall.rs.

    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: Option<Bound<'_, PyAny>>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        let Some(delay) = delay else {
            return Err(PyTypeError::new_err("delay must not be None"));
        };
        let now = if slf.get().time_replaced.load(Relaxed) {
            // `time` is replaced in Python: `call_at(self.time() + delay)`, as the stdlib.
            slf.call_method0(intern!(py, "time"))?.extract::<f64>()?
        } else {
            clock::monotonic()
        };
        if delay.is_exact_instance_of::<PyFloat>() || delay.is_instance_of::<PyInt>() {
            // float + float, float + int: a float (or the OverflowError of an int too large for
            // one), as the stdlib's `self.time() + delay` gives.
            let delay: f64 = delay.extract()?;
            return Self::schedule_at(slf, now + delay, callback, args, context, None);
        }
        // Any other object: `self.time() + delay` is Python's addition, as in the stdlib (a
        // Fraction gives a float; a Decimal, a str or an object with only `__float__` is the
        // addition's TypeError), and its result is `call_at`'s `when`.
        let when = PyFloat::new(py, now).add(&delay)?;
        Self::call_at(slf, Some(when), callback, args, context)
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: Option<Bound<'_, PyAny>>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let Some(when) = when else {
            return Err(PyTypeError::new_err("when cannot be None"));
        };
        let secs: f64 = match when.extract() {
            Ok(secs) => secs,
            // An int beyond a float's range: the stdlib's heap keeps it as it is, a deadline
            // that never comes (or one already past); on the float clock, +/- infinity.
            Err(e) if e.is_instance_of::<PyOverflowError>(slf.py()) => match when.cast::<PyInt>() {
                Ok(i) if i.lt(0)? => f64::NEG_INFINITY,
                Ok(_) => f64::INFINITY,
                Err(_) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        // `when()` and `_when` give back the object passed, as `asyncio.TimerHandle` keeps it
        // (aiohttp passes an int and checks its type); the heap orders by the float.
        let keep = (!when.is_exact_instance_of::<PyFloat>()).then(|| when.unbind());
        Self::schedule_at(slf, secs, callback, args, context, keep)
    }

    /// Wakes the loop from another thread (the stdlib's name for it).
    fn _write_to_self(slf: &Bound<'_, Self>) {
        Self::wake(slf);
    }

    /// Stops the loop after the current turn (in any state; a stopped loop runs one turn when
    /// started again, as the stdlib's does).
    fn stop(&self) {
        self.stopping.store(true, Relaxed);
    }

    #[getter]
    fn _stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    #[setter(_stopping)]
    fn set_stopping(&self, v: bool) {
        self.stopping.store(v, Relaxed);
    }

    #[getter]
    fn _clock_resolution(&self) -> f64 {
        self.clock_resolution
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    #[getter]
    fn _closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// `return self._debug`, as the stdlib's.
    fn get_debug(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::_debug(slf)
    }

    /// `Loop.__setattr__`/`__delattr__` and `__init__` say whether `time` is replaced in Python.
    fn _set_time_replaced(&self, py: Python<'_>, replaced: bool) {
        self.time_replaced.store(replaced, Relaxed);
        if !replaced {
            self.st.borrow(py).ev.clock().set_offset(0.0);
        }
    }

    /// `loop._debug`, the stdlib's plain attribute (its private code and tests read and assign
    /// it): a native data descriptor, so a read in the accept path or `create_connection` is no
    /// Python frame. It answers the object assigned, as the stdlib's attribute does; the hot
    /// paths read its truth value (`debug`). `del loop._debug` works as on the stock loop, and
    /// so do the `AttributeError`s that follow.
    #[getter]
    fn _debug(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        match &*this.debug_value.borrow(py) {
            DebugValue::Flag => Ok(PyBool::new(py, this.debug()).to_owned().into_any().unbind()),
            DebugValue::Object(o) => Ok(o.clone_ref(py)),
            DebugValue::Deleted => Err(no_debug_attribute(slf)),
        }
    }

    #[setter(_debug)]
    fn set_debug_attr(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let new = if value.is_instance_of::<PyBool>() {
            DebugValue::Flag
        } else {
            DebugValue::Object(value.clone().unbind())
        };
        Self::replace_debug(slf, value.is_truthy()?, new);
        Ok(())
    }

    #[deleter(_debug)]
    fn del_debug_attr(slf: &Bound<'_, Self>) -> PyResult<()> {
        if matches!(
            &*slf.get().debug_value.borrow(slf.py()),
            DebugValue::Deleted
        ) {
            return Err(no_debug_attribute(slf));
        }
        Self::replace_debug(slf, false, DebugValue::Deleted);
        Ok(())
    }

    /// Runs turns until `stop()`; the Python `run_forever` does the setup around it (turn.rs).
    fn _run_native(slf: &Bound<'_, Self>) -> PyResult<()> {
        turn::run_native(slf)
    }

    /// One turn (CPython's `_run_once`; turn.rs).
    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        turn::run_once(slf)
    }

    /// Marks the loop closed and drops what it holds: ready callbacks, timers, watched fds, the
    /// epoll fd, the waker, and the `{'loop': self}` that `create_future`/`create_task` keep (a
    /// reference cycle through the loop: dropped here, a closed loop is freed when its last
    /// reference goes, as before it kept one, not at the collector's next pass).
    fn _close_native(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let this = slf.get();
        this.closed.store(true, Relaxed);
        let kwargs = this.loop_kwargs.borrow_mut(py).take();
        drop(kwargs);
        let taken = {
            let mut st = this.st.borrow_mut(py);
            let owners = std::mem::take(&mut st.sock_owners);
            let closed = st.ev.close();
            (closed, st.signal_pipe.take(), owners)
        };
        let waker = this.waker.borrow_mut(py).take();
        release_all(py, &taken.0 .0);
        drop((taken, waker));
        // The dropped handles went to the pools: give back what is above an idle loop's bound.
        crate::pool::trim_closed(py);
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_fd_handle(slf, fd, callback, args, true)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_fd_handle(slf, fd, callback, args, false)
    }

    fn _remove_reader(slf: &Bound<'_, Self>, fd: RawFd) -> PyResult<bool> {
        if slf.get().closed.load(Relaxed) {
            return Ok(false);
        }
        Self::remove_fd_callback(slf, fd, true)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: RawFd) -> PyResult<bool> {
        if slf.get().closed.load(Relaxed) {
            return Ok(false);
        }
        Self::remove_fd_callback(slf, fd, false)
    }

    /// `Loop._remove_reader(fd)`: what a transport's `close()` passes, an int never registered
    /// by object, goes straight to the native removal; anything else through `Loop._remove_fd`
    /// (file objects, closed ones found by identity, selectors' errors).
    fn _remove_reader_checked(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Self::remove_checked(slf, fd, true)
    }

    /// `Loop._remove_writer(fd)`, as `_remove_reader_checked`.
    fn _remove_writer_checked(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Self::remove_checked(slf, fd, false)
    }

    // The sock_* coroutines (sock/): each returns a native coroutine-like awaitable that does
    // nothing until awaited.

    fn sock_recv(slf: &Bound<'_, Self>, sock: Py<PyAny>, n: Py<PyAny>) -> SockOp {
        SockOp::create(slf, Kind::Recv, sock, Some(n), None)
    }

    fn sock_recv_into(slf: &Bound<'_, Self>, sock: Py<PyAny>, buf: Py<PyAny>) -> SockOp {
        SockOp::create(slf, Kind::RecvInto, sock, Some(buf), None)
    }

    fn sock_recvfrom(slf: &Bound<'_, Self>, sock: Py<PyAny>, bufsize: Py<PyAny>) -> SockOp {
        SockOp::create(slf, Kind::RecvFrom, sock, Some(bufsize), None)
    }

    // The stdlib's signature says `nbytes=0` (None is taken too, as 0: the whole buffer).
    #[pyo3(signature = (sock, buf, nbytes=None), text_signature = "($self, sock, buf, nbytes=0)")]
    fn sock_recvfrom_into(
        slf: &Bound<'_, Self>,
        sock: Py<PyAny>,
        buf: Py<PyAny>,
        nbytes: Option<Py<PyAny>>,
    ) -> PyResult<SockOp> {
        let py = slf.py();
        let nbytes = match nbytes {
            Some(n) => n,
            None => 0i32.into_pyobject(py)?.into_any().unbind(),
        };
        Ok(SockOp::create(
            slf,
            Kind::RecvFromInto,
            sock,
            Some(buf),
            Some(nbytes),
        ))
    }

    fn sock_sendall(slf: &Bound<'_, Self>, sock: Py<PyAny>, data: Py<PyAny>) -> SockOp {
        SockOp::create(slf, Kind::SendAll, sock, Some(data), None)
    }

    fn sock_sendto(
        slf: &Bound<'_, Self>,
        sock: Py<PyAny>,
        data: Py<PyAny>,
        address: Py<PyAny>,
    ) -> SockOp {
        SockOp::create(slf, Kind::SendTo, sock, Some(data), Some(address))
    }

    fn sock_connect(slf: &Bound<'_, Self>, sock: Py<PyAny>, address: Py<PyAny>) -> SockOp {
        SockOp::create(slf, Kind::Connect, sock, Some(address), None)
    }

    fn sock_accept(slf: &Bound<'_, Self>, sock: Py<PyAny>) -> SockOp {
        SockOp::create(slf, Kind::Accept, sock, None, None)
    }

    /// The write end of the loop's signal wakeup pipe (signals.rs), for `signal.set_wakeup_fd()`;
    /// created on first use.
    fn _signal_wakeup_fd(&self, py: Python<'_>) -> PyResult<RawFd> {
        self.check_closed()?;
        let mut st = self.st.borrow_mut(py);
        if st.signal_pipe.is_none() {
            let poller = st.ev.poller().ok_or_else(closed_error)?;
            st.signal_pipe = Some(SignalPipe::new(poller).map_err(os_error)?);
        }
        Ok(st.signal_pipe.as_ref().map_or(-1, SignalPipe::write_fd))
    }

    /// Empties the loop's signal wakeup pipe and returns its bytes (`b""` when it has none or
    /// does not exist): `Loop._install_wakeup_fd` hands what reached it during a swap of
    /// `signal.set_wakeup_fd()` to the fd that was set before (`_loop.py`).
    fn _take_signal_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let data = self
            .st
            .borrow(py)
            .signal_pipe
            .as_ref()
            .map(SignalPipe::take)
            .unwrap_or_default();
        PyBytes::new(py, &data)
    }

    /// The reader and writer handles of `fd` (`(None, None)` when it is not watched).
    fn _fd_callbacks(&self, py: Python<'_>, fd: RawFd) -> (Option<Py<Handle>>, Option<Py<Handle>>) {
        let st = self.st.borrow(py);
        match st.ev.fds().get(fd) {
            Some(e) => (
                e.reader.as_ref().map(|h| h.0.clone_ref(py)),
                e.writer.as_ref().map(|h| h.0.clone_ref(py)),
            ),
            None => (None, None),
        }
    }

    /// What epoll watches `fd` for, as the fd table has registered it: `(read, write)`, or `None`
    /// when it is not registered. Differs from `_fd_callbacks` while a paused transport's read
    /// interest lingers (`ferroloop_core::fd_table`). For tests.
    fn _fd_registration(&self, py: Python<'_>, fd: RawFd) -> Option<(bool, bool)> {
        let st = self.st.borrow(py);
        st.ev.fds().get(fd).map(|e| {
            let i = e.registered();
            (i.read, i.write)
        })
    }

    /// `epoll_ctl` calls made for fds since the loop was created (0 once it is closed). For tests
    /// and the flow-control probe (`bench/flow_probe.py`).
    fn _epoll_ctl_calls(&self, py: Python<'_>) -> u64 {
        self.st.borrow(py).ev.poller().map_or(0, |p| p.ctl_calls())
    }

    /// Zero-timeout waits the readiness hint skipped since the loop was created, and real waits
    /// that found an event the hint had not announced; kept after `close()`. `stats()` reports
    /// the first as `waits_skipped` (`ferroloop_core::ready_hint`).
    fn _wait_hint_stats(&self, py: Python<'_>) -> (u64, u64) {
        self.st.borrow(py).ev.hint_stats()
    }

    /// `asyncio.Future(loop=self)`, without a Python frame. The class is looked up in
    /// `asyncio.futures` at each call, as the stdlib does, so patching it still works.
    ///
    /// The C `Future` has no vectorcall entry, so a keyword call would build a `{'loop': self}`
    /// dictionary at every call (`_PyObject_MakeTpCall`): the loop keeps one and passes it to
    /// `tp_call` itself. A callee never keeps or changes it (a Python `__init__` receives a
    /// copy; the C one only reads it); it is made again if it was changed all the same.
    pub(crate) fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let cls = cached::module_attr(cached::futures(py)?, intern!(py, "Future"))?;
        let kwargs = loop_kwargs(slf)?;
        let empty = pyo3::types::PyTuple::empty(py);
        // SAFETY: GIL held; `cls`, `empty` and `kwargs` are live for the call; the result is a
        // new reference or NULL with an exception set, which `from_owned_ptr_or_err` handles.
        unsafe {
            let r = ffi::PyObject_Call(cls.as_ptr(), empty.as_ptr(), kwargs.as_ptr());
            Bound::from_owned_ptr_or_err(py, r)
        }
    }

    /// `create_task` without a Python frame when no task factory is set, debug mode is off and
    /// only `name`/`context` are given; otherwise the running Python's own implementation
    /// (`Loop._create_task_py`, the stdlib's `BaseEventLoop.create_task`) handles the call, so
    /// other keyword arguments (`eager_start=` where the running version takes it) are accepted
    /// or refused exactly as the stdlib loop accepts or refuses them.
    #[pyo3(signature = (coro, *, name=None, context=None, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, pyo3::types::PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(k) = kwargs.filter(|k| !k.is_empty()) {
            return Self::create_task_py(slf, coro, k.copy()?, name, context);
        }
        Self::create_task_fast(slf, coro, name, context)
    }

    /// The task factory (`set_task_factory` stores it here, so `create_task` reads it without a
    /// dictionary lookup).
    #[getter]
    fn _task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory
            .borrow(py)
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    #[setter(_task_factory)]
    fn set_task_factory_attr(&self, py: Python<'_>, factory: Option<Py<PyAny>>) {
        let factory = factory.filter(|f| !f.is_none(py));
        let old = std::mem::replace(&mut *self.task_factory.borrow_mut(py), factory);
        drop(old);
    }

    /// Compatibility with code written for the stdlib loop; ferroloop counts cancellations itself.
    fn _timer_handle_cancelled(&self, _handle: &Bound<'_, PyAny>) {}

    /// Loop metrics (`Loop.stats()` builds its dict from this): turns, callbacks run, ready now,
    /// timers in the heap, cancelled timers in the heap, watched fds, seconds running, seconds
    /// idle in epoll, longest stall in seconds. Without the `diagnostics` feature the counters and
    /// times read zero.
    fn _native_stats(
        &self,
        py: Python<'_>,
    ) -> (u64, u64, usize, usize, usize, usize, f64, f64, f64) {
        let st = self.st.borrow(py);
        let t = st.times;
        let now = clock::monotonic();
        let running = t.run_total + t.run_started.map_or(0.0, |s| now - s);
        // A stall in progress (stats() called from a slow callback) counts too.
        let current = t.busy_since.map_or(0.0, |s| now - s);
        (
            self.counters.turns.load(Relaxed),
            self.counters.callbacks.load(Relaxed),
            st.ev.ready().len(),
            st.ev.timers().len(),
            st.ev.timers().cancelled(),
            st.ev.fds().len(),
            running,
            t.idle,
            t.longest_stall.max(current),
        )
    }
}
