//! Objects looked up once per process and kept: the modules whose classes the loop instantiates
//! on hot paths (`asyncio.futures` for `create_future`, `asyncio.tasks` for `create_task`) and
//! the keyword-name tuples of the calls the loop makes with keywords.
//!
//! `py.import(...)` costs a trip through `builtins.__import__` (a few hundred nanoseconds) at
//! every call; a module object never changes identity, so it is imported once. The class is
//! still read from the module at each call, so `asyncio.futures.Future = X` (as a test or a
//! library may patch it) takes effect as it does on the stock loop: [`module_attr`] reads it
//! from the module's `__dict__`, as the interpreter's `LOAD_ATTR` of a module does.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDictMethods, PyModule, PyModuleMethods, PyString, PyTuple};

static FUTURES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static TASKS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static COMPAT: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static KW_LOOP_NAME_CONTEXT: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
static C_TASK: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();

fn module<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyModule>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyModule>> {
    Ok(cell
        .get_or_try_init(py, || PyModule::import(py, name).map(Bound::unbind))?
        .bind(py))
}

/// `module.<name>` for one of the modules above: a lookup in the module's `__dict__` (the
/// generic attribute protocol first searches the module type for a descriptor, which a plain
/// `types.ModuleType` does not have under a class's name: 300 instructions against 60); a
/// module of another type, or a name missing from the dictionary (the module's `__getattr__`,
/// or the `AttributeError`), goes through `getattr`.
pub(crate) fn module_attr<'py>(
    m: &Bound<'py, PyModule>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let plain = m.as_any().is_exact_instance_of::<PyModule>();
    if plain {
        if let Some(v) = m.dict().get_item(name)? {
            return Ok(v);
        }
    }
    m.getattr(name)
}

/// `asyncio.futures`.
pub(crate) fn futures(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    module(py, &FUTURES, "asyncio.futures")
}

/// `asyncio.tasks`.
pub(crate) fn tasks(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    module(py, &TASKS, "asyncio.tasks")
}

/// The C `_asyncio.Task` class, `None` where the interpreter has no `_asyncio` (its Python
/// `Task` is then the only one). `create_task` compares `asyncio.tasks.Task` with it to know
/// that the class it calls is one whose `name` and `context` default to `None`.
pub(crate) fn c_task(py: Python<'_>) -> Option<&Bound<'_, PyAny>> {
    C_TASK
        .get_or_init(py, || {
            PyModule::import(py, "_asyncio")
                .and_then(|m| m.getattr("Task"))
                .ok()
                .map(Bound::unbind)
        })
        .as_ref()
        .map(|t| t.bind(py))
}

/// `ferroloop._compat` (the version switches).
pub(crate) fn compat(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    module(py, &COMPAT, "ferroloop._compat")
}

fn names<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyTuple>>,
    items: &[&str],
) -> PyResult<&'py Bound<'py, PyTuple>> {
    Ok(cell
        .get_or_try_init(py, || {
            // Interned, as the callee matches keyword names by identity first.
            PyTuple::new(py, items.iter().map(|s| PyString::intern(py, s))).map(Bound::unbind)
        })?
        .bind(py))
}

/// `("loop", "name", "context")`, the keyword names of `Task(coro, loop=, name=, context=)`.
pub(crate) fn kw_loop_name_context(py: Python<'_>) -> PyResult<&Bound<'_, PyTuple>> {
    names(py, &KW_LOOP_NAME_CONTEXT, &["loop", "name", "context"])
}
