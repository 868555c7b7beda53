//! `call_soon` and `call_soon_threadsafe` as raw vectorcall (`METH_FASTCALL | METH_KEYWORDS`)
//! methods of `LoopCore`.
//!
//! The C `Task` wakes itself with `loop.call_soon(step, context=ctx)` and futures schedule their
//! done callbacks the same way: one keyword call per task step. PyO3's generic argument parser
//! matches keyword names by converting each to UTF-8 and comparing strings, and builds the
//! `*args` tuple through its general machinery; in a profile that was a tenth of `call_soon`'s
//! cost. These two entries take the vectorcall arguments as they come: `callback` is the first
//! positional, the rest become the handle's arguments (up to two without a tuple:
//! `call_args.rs`), and the only keyword, `context`, is recognised by identity (the caller's interned
//! name) before falling back to a string comparison. Errors are PyO3's messages, word for word.
//!
//! `create_task` is the third: `create_task(coro)` and `create_task(coro, name=..., context=...)`
//! are parsed here (the keyword names by identity, then by value) and go to
//! `LoopCore::create_task_fast`; any other call (`coro=` by keyword, more positionals, other
//! keywords such as 3.13's `eager_start=`) goes to the `#[pymethods]` `create_task`, kept as
//! the descriptor it was, so its parser accepts or refuses the call with its own messages.
//! A PyO3 method with `**kwargs` takes its arguments as a tuple and a dictionary (PyO3's
//! `METH_VARARGS` entry), so every `create_task` built both before parsing them.
//!
//! [`install`] puts them in `LoopCore`'s type dictionary at module import (the `#[pymethods]`
//! block no longer declares `call_soon` and `call_soon_threadsafe`; its `create_task` is
//! replaced, and kept for the fallback), with the same `__text_signature__`.

use crate::call_args::CallArgs;
use crate::gil::GilCell;
use crate::loop_core::LoopCore;
use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple};
use pyo3::PyTypeInfo;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

/// The arguments of one call, borrowed from the caller's vectorcall array.
struct Args<'py> {
    callback: Bound<'py, PyAny>,
    args: CallArgs,
    context: Option<Bound<'py, PyAny>>,
}

/// Parses `(callback, *args, context=None)` from a vectorcall.
///
/// # Safety
/// `args` points to `nargs + len(kwnames)` live object pointers (the vectorcall protocol) and
/// `kwnames` is NULL or a tuple of str.
unsafe fn parse<'py>(
    py: Python<'py>,
    name: &str,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Args<'py>> {
    // SAFETY: the vectorcall protocol (caller): `nargsf` encodes the positional count.
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) } as usize;
    // SAFETY: `args[..nargs]` are live borrowed references (caller).
    let positional = unsafe { std::slice::from_raw_parts(args, nargs) };
    // SAFETY: as above; each pointer is a live object.
    let mut callback = positional
        .first()
        .map(|&p| unsafe { Bound::from_borrowed_ptr(py, p) });
    let mut context = None;
    if !kwnames.is_null() {
        // SAFETY: `kwnames` is a tuple of str (caller).
        let names =
            unsafe { Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>() };
        let want = pyo3::intern!(py, "context");
        for (i, kw) in names.iter().enumerate() {
            // SAFETY: the keyword values follow the positionals (vectorcall protocol).
            let value = || unsafe { Bound::from_borrowed_ptr(py, *args.add(nargs + i)) };
            if kw.is(want) || is_context_name(&kw) {
                if context.is_some() {
                    return Err(multiple_values(name, "context"));
                }
                context = Some(value());
            } else if kw.cast::<PyString>().is_ok_and(|s| s == "callback") {
                // `call_soon(callback=cb)`: the stdlib's `callback` is an ordinary parameter.
                if callback.is_some() {
                    return Err(multiple_values(name, "callback"));
                }
                callback = Some(value());
            } else {
                return Err(PyTypeError::new_err(format!(
                    "LoopCore.{name}() got an unexpected keyword argument '{kw}'"
                )));
            }
        }
    }
    let Some(callback) = callback else {
        return Err(PyTypeError::new_err(format!(
            "LoopCore.{name}() missing 1 required positional argument: 'callback'"
        )));
    };
    // Made last: a `CallArgs` holds references that only its owner releases (`release`), so no
    // error may follow it here.
    let rest = if nargs <= 1 {
        CallArgs::Zero // a task's step: the common case, kept to a constant
    } else {
        // SAFETY: as above: each pointer is a live borrowed object.
        unsafe { CallArgs::from_borrowed(py, &positional[1..])? }
    };
    Ok(Args {
        callback,
        args: rest,
        context,
    })
}

fn multiple_values(name: &str, arg: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "LoopCore.{name}() got multiple values for argument '{arg}'"
    ))
}

/// The last keyword name other than the interned `"context"` found to spell `context`: the C
/// `Task` and `Future` pass their own static string (`_Py_ID(context)`), which is not the object
/// `intern!` returns, so without this every wake-up would compare the name's characters.
static CONTEXT_NAME: GilCell<Option<Py<PyString>>> = GilCell::new(None);

/// True when `kw` is the keyword name `context` (by identity with the name seen last, else by
/// value, remembering it).
fn is_context_name(kw: &Bound<'_, PyAny>) -> bool {
    let py = kw.py();
    if CONTEXT_NAME
        .borrow(py)
        .as_ref()
        .is_some_and(|c| c.as_ptr() == kw.as_ptr())
    {
        return true;
    }
    let Ok(s) = kw.cast::<PyString>() else {
        return false;
    };
    if s != "context" {
        return false;
    }
    let old = CONTEXT_NAME.borrow_mut(py).replace(s.clone().unbind());
    drop(old);
    true
}

/// Runs `f` as a Python method body: its error is raised, a panic becomes PanicException.
fn trampoline(f: impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
    // SAFETY: CPython calls methods with the calling thread attached (GIL held).
    let py = unsafe { Python::assume_attached() };
    let res = catch_unwind(AssertUnwindSafe(|| f(py))).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic in ferroloop".to_owned());
        Err(pyo3::panic::PanicException::new_err(msg))
    });
    match res {
        Ok(obj) => obj.into_ptr(),
        Err(e) => {
            // Raised under `Python::attach`: this entry came straight from CPython, so PyO3's
            // thread-local count does not know the thread is attached, and the `Py` objects a
            // lazy error owns (its message) would otherwise go to PyO3's deferred-release pool
            // instead of being released here (measured: 120 bytes held per failed call until
            // the next PyO3 entry drained the pool). Only the error path pays for it.
            Python::attach(|py| e.restore(py));
            ptr::null_mut()
        }
    }
}

/// # Safety
/// A vectorcall method entry: `slf` is a `LoopCore` instance (the method descriptor checks it).
unsafe fn entry(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
    threadsafe: bool,
) -> *mut ffi::PyObject {
    trampoline(|py| {
        // SAFETY: `slf` is a live instance of LoopCore or a subclass (descriptor check).
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<LoopCore>() };
        let name = if threadsafe {
            "call_soon_threadsafe"
        } else {
            "call_soon"
        };
        // SAFETY: the vectorcall arguments as CPython passed them.
        let a = unsafe { parse(py, name, args, nargsf, kwnames)? };
        let handle =
            LoopCore::schedule_soon(&slf, a.callback, a.args, a.context, name, !threadsafe)?;
        if threadsafe {
            LoopCore::wake(&slf);
        }
        Ok(handle.into_any())
    })
}

unsafe extern "C" fn call_soon(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by CPython as a METH_FASTCALL|METH_KEYWORDS method of LoopCore.
    unsafe { entry(slf, args, nargsf, kwnames, false) }
}

unsafe extern "C" fn call_soon_threadsafe(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by CPython as a METH_FASTCALL|METH_KEYWORDS method of LoopCore.
    unsafe { entry(slf, args, nargsf, kwnames, true) }
}

/// The `#[pymethods]` `create_task` descriptor that [`install`] replaced: the fallback parser.
static CREATE_TASK_FULL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether `kw` is the keyword `want` (interned): by identity, else by value.
fn is_name(kw: &Bound<'_, PyAny>, want: &Bound<'_, PyString>, text: &str) -> bool {
    kw.is(want) || kw.cast::<PyString>().is_ok_and(|s| s == text)
}

unsafe extern "C" fn create_task(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    trampoline(|py| {
        // SAFETY: `slf` is a live instance of LoopCore or a subclass (descriptor check).
        let this = unsafe { Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<LoopCore>() };
        // SAFETY: the vectorcall protocol (caller): `nargsf` encodes the positional count.
        let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) } as usize;
        let nkw = if kwnames.is_null() {
            0
        } else {
            // SAFETY: `kwnames` is a tuple (caller).
            unsafe { ffi::PyTuple_GET_SIZE(kwnames) as usize }
        };
        let (mut name, mut context) = (None, None);
        let mut simple = nargs == 1;
        if simple && nkw > 0 {
            // SAFETY: `kwnames` is a tuple of str (caller).
            let names =
                unsafe { Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>() };
            let (want_name, want_context) = (intern!(py, "name"), intern!(py, "context"));
            for (i, kw) in names.iter().enumerate() {
                // SAFETY: the keyword values follow the positionals (vectorcall protocol).
                let value = unsafe { Bound::from_borrowed_ptr(py, *args.add(nargs + i)) };
                let slot = if is_name(&kw, want_name, "name") {
                    &mut name
                } else if is_name(&kw, want_context, "context") {
                    &mut context
                } else {
                    simple = false;
                    break;
                };
                if slot.replace(value).is_some() {
                    simple = false;
                    break;
                }
            }
        }
        if simple {
            // SAFETY: `args[0]` is a live borrowed reference (caller; `nargs == 1`).
            let coro = unsafe { Bound::from_borrowed_ptr(py, *args) };
            return Ok(
                LoopCore::create_task_fast(&this, &coro, name.as_ref(), context.as_ref())?.unbind(),
            );
        }
        // Any other call: the `#[pymethods]` parser, with `self` first.
        let full = CREATE_TASK_FULL
            .get(py)
            .ok_or_else(|| PySystemError::new_err("create_task is not installed"))?;
        let mut stack = Vec::with_capacity(1 + nargs + nkw);
        stack.push(slf);
        // SAFETY: `args[..nargs + nkw]` are live borrowed references (vectorcall protocol).
        stack.extend_from_slice(unsafe { std::slice::from_raw_parts(args, nargs + nkw) });
        // SAFETY: `stack` holds `self`, the positionals and the keyword values, all borrowed
        // from the caller for this call, `kwnames` is the caller's (NULL or a tuple of str
        // with `nkw` names), and the result is a new reference or NULL with an exception set.
        unsafe {
            let r = ffi::PyObject_Vectorcall(full.as_ptr(), stack.as_ptr(), 1 + nargs, kwnames);
            Bound::from_owned_ptr_or_err(py, r).map(Bound::unbind)
        }
    })
}

const CREATE_TASK_DOC: &CStr = c"create_task($self, coro, *, name=None, context=None, **kwargs)\n--\n\n\
Schedules the coroutine `coro` as a Task of this loop and returns the Task: without a Python frame when no task factory is set, debug mode is off and only `name`/`context` are given; otherwise the running Python's own implementation (`Loop._create_task_py`, the stdlib's `BaseEventLoop.create_task`) handles the call, so other keyword arguments (`eager_start=` where the running version takes it) are accepted or refused exactly as the stdlib loop accepts or refuses them.";

const CALL_SOON_DOC: &CStr = c"call_soon($self, callback, *args, context=None)\n--\n\n\
Arranges for `callback(*args)` to be called on the next turn of the loop, in `context` (default: a copy of the current one). Returns a Handle.";
const THREADSAFE_DOC: &CStr = c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\n\
Like call_soon(), from any thread: the loop is woken up if it is waiting.";

/// The method table: static, as `PyDescr_NewMethod` keeps a pointer to its entry.
struct Defs([ffi::PyMethodDef; 3]);
// SAFETY: the table is never written after its constant initialisation; CPython only reads it.
unsafe impl Sync for Defs {}

static DEFS: Defs = Defs([
    ffi::PyMethodDef {
        ml_name: c"call_soon".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: call_soon,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: CALL_SOON_DOC.as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"call_soon_threadsafe".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: call_soon_threadsafe,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: THREADSAFE_DOC.as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"create_task".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: create_task,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: CREATE_TASK_DOC.as_ptr(),
    },
]);

/// Adds the three methods to `LoopCore` (module import), keeping the `#[pymethods]`
/// `create_task` it replaces as the fallback parser.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let ty = LoopCore::type_object(py);
    let full = ty.getattr("create_task")?.unbind();
    let _ = CREATE_TASK_FULL.set(py, full);
    for def in &DEFS.0 {
        // SAFETY: `def` is a static, never-mutated method definition (CPython keeps the
        // pointer, it never writes through it; the cast to *mut is what the C signature asks);
        // `ty` is a live type object and the GIL is held.
        let descr = unsafe {
            let p = ffi::PyDescr_NewMethod(ty.as_type_ptr(), ptr::from_ref(def).cast_mut());
            Bound::from_owned_ptr_or_opt(py, p)
        }
        .ok_or_else(|| PyErr::take(py).unwrap_or_else(|| PySystemError::new_err("descr")))?;
        // SAFETY: `ml_name` is a static NUL-terminated ASCII string.
        let name = unsafe { CStr::from_ptr(def.ml_name as *const c_char) };
        ty.setattr(name.to_string_lossy().as_ref(), descr)?;
    }
    Ok(())
}
