//! `CoroutineMethod`: a native method that asyncio and `inspect` take for a coroutine function.
//!
//! The stdlib's `sock_*` methods are `async def`s, so `asyncio.iscoroutinefunction(loop.sock_recv)`
//! is true and `unittest.mock.patch.object(loop, 'sock_recv')` makes an `AsyncMock`. ferroloop's
//! are native methods (`LoopCore.sock_recv`, sock/), and a native method cannot carry the
//! markers those checks read (`_is_coroutine`, and on 3.12+ `_is_coroutine_marker`). A Python
//! `def` in front of each would, at a Python call per operation (about 700 instructions, 13 % of
//! a `sock_recv`/`sock_sendall` echo request's user-space work, measured with callgrind).
//!
//! This type wraps the method descriptor instead, for about 50 instructions per call (one more
//! vectorcall, and the interpreter's call specialisation for plain method descriptors lost):
//!
//! - it is a *method descriptor* (`Py_TPFLAGS_METHOD_DESCRIPTOR`) with a vectorcall entry, so
//!   `loop.sock_recv(sock, n)` is still loaded without binding and called with `loop` as the
//!   first argument, which the entry hands to the wrapped descriptor as it is;
//! - `loop.sock_recv` as a value is a bound method (`types.MethodType`, as for a `def`), whose
//!   `__func__` is this object;
//! - its attributes are the two markers, then the wrapped descriptor's (`__name__`,
//!   `__qualname__`, `__doc__`, `__text_signature__`, so `inspect.signature` reads the same
//!   signature).

use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use std::ffi::{c_int, c_uint, c_void};
use std::mem::offset_of;
use std::ptr;

/// The object's layout (a heap type made by `PyType_FromSpec`, below).
#[repr(C)]
struct Raw {
    ob_base: ffi::PyObject,
    /// Read by CPython through `__vectorcalloffset__`.
    vectorcall: Option<ffi::vectorcallfunc>,
    /// The wrapped method descriptor (strong reference).
    inner: *mut ffi::PyObject,
    /// `asyncio.coroutines._is_coroutine` (strong reference).
    is_coroutine: *mut ffi::PyObject,
    /// The object `inspect.markcoroutinefunction` stores (3.12+), or NULL (strong reference).
    marker: *mut ffi::PyObject,
}

extern "C" {
    // classobject.h: a bound method, `types.MethodType(func, self)`.
    fn PyMethod_New(func: *mut ffi::PyObject, slf: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

unsafe extern "C" fn call(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this entry only for objects of this type (its `__vectorcalloffset__`),
    // whose `inner` was set at creation and is kept alive by the object; the arguments are the
    // caller's vectorcall arguments, passed on unchanged (with the GIL held, as they came).
    unsafe { ffi::PyObject_Vectorcall((*callable.cast::<Raw>()).inner, args, nargsf, kwnames) }
}

unsafe extern "C" fn descr_get(
    slf: *mut ffi::PyObject,
    obj: *mut ffi::PyObject,
    _owner: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: `slf` is a live object of this type and the GIL is held (a `tp_descr_get` call);
    // on the class (`obj` NULL or None) the descriptor itself is returned with a new reference,
    // on an instance a new bound method (PyMethod_New takes its own references).
    unsafe {
        if obj.is_null() || obj == ffi::Py_None() {
            ffi::Py_INCREF(slf);
            slf
        } else {
            PyMethod_New(slf, obj)
        }
    }
}

unsafe extern "C" fn getattro(
    slf: *mut ffi::PyObject,
    name: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: `slf` is a live object of this type, `name` a str, the GIL held (a `tp_getattro`
    // call). Only an AttributeError of the generic lookup is replaced by the wrapped
    // descriptor's lookup (which sets its own error on failure).
    unsafe {
        let found = ffi::PyObject_GenericGetAttr(slf, name);
        if !found.is_null() || ffi::PyErr_ExceptionMatches(ffi::PyExc_AttributeError) == 0 {
            return found;
        }
        ffi::PyErr_Clear();
        ffi::PyObject_GetAttr((*slf.cast::<Raw>()).inner, name)
    }
}

unsafe extern "C" fn get_is_coroutine(
    slf: *mut ffi::PyObject,
    _closure: *mut c_void,
) -> *mut ffi::PyObject {
    // SAFETY: a getter of this type: `slf` is live and its `is_coroutine` set at creation.
    unsafe {
        let v = (*slf.cast::<Raw>()).is_coroutine;
        ffi::Py_INCREF(v);
        v
    }
}

unsafe extern "C" fn get_marker(
    slf: *mut ffi::PyObject,
    _closure: *mut c_void,
) -> *mut ffi::PyObject {
    // SAFETY: as above; `marker` is NULL before 3.12, which is the AttributeError a plain
    // function without the marker gives.
    unsafe {
        let v = (*slf.cast::<Raw>()).marker;
        if v.is_null() {
            ffi::PyErr_SetString(ffi::PyExc_AttributeError, c"_is_coroutine_marker".as_ptr());
            return ptr::null_mut();
        }
        ffi::Py_INCREF(v);
        v
    }
}

unsafe extern "C" fn repr(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `slf` is a live object of this type with the GIL held.
    unsafe { ffi::PyObject_Repr((*slf.cast::<Raw>()).inner) }
}

unsafe extern "C" fn dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: the object's last reference is gone (`tp_dealloc`): its three references are
    // released once, its memory goes back through the type's `tp_free`, and the reference to
    // its heap type that the allocation took is released last.
    unsafe {
        let raw = slf.cast::<Raw>();
        ffi::Py_XDECREF((*raw).inner);
        ffi::Py_XDECREF((*raw).is_coroutine);
        ffi::Py_XDECREF((*raw).marker);
        let tp = ffi::Py_TYPE(slf);
        if let Some(free) = (*tp).tp_free {
            free(slf.cast());
        }
        ffi::Py_DECREF(tp.cast());
    }
}

/// The static tables `PyType_FromSpec` reads (it copies what it keeps, but the members and
/// getsets tables are referenced by the descriptors it makes, so they stay static).
struct Tables {
    members: [ffi::PyMemberDef; 2],
    getset: [ffi::PyGetSetDef; 3],
}
// SAFETY: never written after their constant initialisation; CPython only reads them.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables {
    members: [
        ffi::PyMemberDef {
            name: c"__vectorcalloffset__".as_ptr(),
            type_code: ffi::Py_T_PYSSIZET,
            offset: offset_of!(Raw, vectorcall) as ffi::Py_ssize_t,
            flags: ffi::Py_READONLY,
            doc: ptr::null(),
        },
        ffi::PyMemberDef {
            name: ptr::null(),
            type_code: 0,
            offset: 0,
            flags: 0,
            doc: ptr::null(),
        },
    ],
    getset: [
        ffi::PyGetSetDef {
            name: c"_is_coroutine".as_ptr(),
            get: Some(get_is_coroutine),
            set: None,
            doc: ptr::null(),
            closure: ptr::null_mut(),
        },
        ffi::PyGetSetDef {
            name: c"_is_coroutine_marker".as_ptr(),
            get: Some(get_marker),
            set: None,
            doc: ptr::null(),
            closure: ptr::null_mut(),
        },
        ffi::PyGetSetDef {
            name: ptr::null(),
            get: None,
            set: None,
            doc: ptr::null(),
            closure: ptr::null_mut(),
        },
    ],
};

static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn slot(slot: c_int, pfunc: *mut c_void) -> ffi::PyType_Slot {
    ffi::PyType_Slot { slot, pfunc }
}

fn the_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    TYPE.get_or_try_init(py, || {
        let mut slots = [
            slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
            slot(ffi::Py_tp_descr_get, descr_get as *mut c_void),
            slot(ffi::Py_tp_call, ffi::PyVectorcall_Call as *mut c_void),
            slot(ffi::Py_tp_getattro, getattro as *mut c_void),
            slot(ffi::Py_tp_repr, repr as *mut c_void),
            slot(
                ffi::Py_tp_members,
                TABLES.members.as_ptr().cast_mut().cast(),
            ),
            slot(ffi::Py_tp_getset, TABLES.getset.as_ptr().cast_mut().cast()),
            slot(0, ptr::null_mut()),
        ];
        let flags = ffi::Py_TPFLAGS_DEFAULT
            | ffi::Py_TPFLAGS_HAVE_VECTORCALL
            | ffi::Py_TPFLAGS_METHOD_DESCRIPTOR
            | ffi::Py_TPFLAGS_IMMUTABLETYPE
            | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION;
        let mut spec = ffi::PyType_Spec {
            name: c"ferroloop.CoroutineMethod".as_ptr(),
            basicsize: std::mem::size_of::<Raw>() as c_int,
            itemsize: 0,
            flags: flags as c_uint,
            slots: slots.as_mut_ptr(),
        };
        // SAFETY: the spec and its slots are valid for the call (CPython copies what it keeps;
        // the member and getset tables it references are static); the GIL is held.
        let tp = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&mut spec))? };
        Ok(tp.cast_into::<PyType>()?.unbind())
    })
    .map(|t| t.bind(py))
}

/// `coroutine_method(method, is_coroutine, marker)`: `method` (a method descriptor) as a
/// coroutine function for asyncio and `inspect` (module docs). `is_coroutine` is
/// `asyncio.coroutines._is_coroutine`; `marker` what `inspect.markcoroutinefunction` stores
/// (3.12+), or None.
#[pyfunction]
pub(crate) fn coroutine_method(
    py: Python<'_>,
    method: &Bound<'_, PyAny>,
    is_coroutine: &Bound<'_, PyAny>,
    marker: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let tp = the_type(py)?;
    // SAFETY: `tp` is this module's heap type, whose `tp_alloc` (the generic one) returns a
    // zeroed object with its type set and referenced, or NULL with an exception; each field
    // then takes a new reference of its own, released by `dealloc`.
    unsafe {
        let ty = tp.as_type_ptr();
        let alloc = (*ty)
            .tp_alloc
            .ok_or_else(|| PySystemError::new_err("CoroutineMethod has no tp_alloc"))?;
        let obj = Bound::from_owned_ptr_or_err(py, alloc(ty, 0))?;
        let raw = obj.as_ptr().cast::<Raw>();
        (*raw).vectorcall = Some(call);
        (*raw).inner = method.clone().into_ptr();
        (*raw).is_coroutine = is_coroutine.clone().into_ptr();
        (*raw).marker = if marker.is_none() {
            ptr::null_mut()
        } else {
            marker.clone().into_ptr()
        };
        Ok(obj.unbind())
    }
}
