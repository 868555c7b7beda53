//! A transport's state, declared once.
//!
//! `transport_state!` below is the only list of the fields. Each line of its `python` part is
//! one of the stdlib's private attributes (`"_closing" closing: bool = false`); from it come the
//! field of `TState`, its initial value, its Python attribute on the transport class (a
//! [`TransportAttribute`] descriptor: `transport._closing` reads and assigns the core's field),
//! and, for an object field, its place in the garbage collector's `__traverse__`/`__clear__`.
//! The `internal` part holds fields Python does not see. Adding an attribute is one line (with
//! its doc comment) here: nothing else in Rust, Python or the stub names the fields.

use super::names;
use super::TransportCore;
use crate::gil::GilCell;
use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::IntoPyObjectExt;
use pyo3::{PyTraverseError, PyVisit};
use std::os::fd::RawFd;

/// The kinds of value a field holds: how it crosses to Python and back, and what the collector
/// sees of it.
pub(super) trait FieldValue: Sized {
    fn to_object(&self, py: Python<'_>) -> PyResult<Py<PyAny>>;
    fn from_object(value: &Bound<'_, PyAny>) -> PyResult<Self>;
    /// Reports the object held, if any, to the collector.
    fn traverse(&self, _visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        Ok(())
    }
    /// Gives up the object held, if any (`__clear__`).
    fn take_object(&mut self) -> Option<Py<PyAny>> {
        None
    }
}

impl FieldValue for Option<Py<PyAny>> {
    fn to_object(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self {
            Some(o) => o.clone_ref(py),
            None => py.None(),
        })
    }
    fn from_object(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok((!value.is_none()).then(|| value.clone().unbind()))
    }
    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(self)
    }
    fn take_object(&mut self) -> Option<Py<PyAny>> {
        self.take()
    }
}

macro_rules! scalar_field_value {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn to_object(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                (*self).into_py_any(py)
            }
            fn from_object(value: &Bound<'_, PyAny>) -> PyResult<Self> {
                value.extract()
            }
        }
    )*};
}
scalar_field_value!(bool, u64, usize, RawFd);

macro_rules! transport_state {
    (
        python { $( $(#[$pdoc:meta])* $pyname:literal $pfield:ident: $pty:ty = $pinit:expr, )* }
        internal { $( $(#[$idoc:meta])* $ifield:ident: $ity:ty = $iinit:expr, )* }
    ) => {
        /// The state of one transport (the fields are listed in `transport_state!`).
        pub(super) struct TState {
            $( $(#[$pdoc])* pub(super) $pfield: $pty, )*
            $( $(#[$idoc])* pub(super) $ifield: $ity, )*
        }

        /// A field that Python sees, by name (`FIELDS` maps the attribute names onto them).
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy)]
        pub(super) enum Field { $( $pfield, )* }

        /// Each Python-visible field under the stdlib's attribute name.
        const FIELDS: &[(&str, Field)] = &[ $( ($pyname, Field::$pfield), )* ];

        impl TState {
            /// A transport's state before it is given its socket and loop.
            pub(super) fn initial() -> Self {
                TState { $( $pfield: $pinit, )* $( $ifield: $iinit, )* }
            }

            fn get(&self, py: Python<'_>, field: Field) -> PyResult<Py<PyAny>> {
                match field { $( Field::$pfield => self.$pfield.to_object(py), )* }
            }

            /// Assigns a field. The old value is dropped after the borrow ends: dropping an
            /// object can run Python code (`__del__`), which may read this transport.
            fn set(
                cell: &GilCell<TState>,
                py: Python<'_>,
                field: Field,
                value: &Bound<'_, PyAny>,
            ) -> PyResult<()> {
                match field {
                    $( Field::$pfield => {
                        let new = <$pty as FieldValue>::from_object(value)?;
                        // The borrow ends with this statement; `_old` is dropped after it.
                        let _old = std::mem::replace(&mut cell.borrow_mut(py).$pfield, new);
                    } )*
                }
                Ok(())
            }

            /// Reports every object held to the collector (`__traverse__`).
            pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
                $( self.$pfield.traverse(visit)?; )*
                $( self.$ifield.traverse(visit)?; )*
                Ok(())
            }

            /// Gives up every object held (`__clear__`); the caller drops them after the borrow.
            pub(super) fn take_objects(&mut self) -> Vec<Py<PyAny>> {
                let mut taken = Vec::new();
                $( taken.extend(self.$pfield.take_object()); )*
                $( taken.extend(self.$ifield.take_object()); )*
                taken
            }
        }
    };
}

transport_state! {
    python {
        /// The event loop; `None` once `connection_lost` was called.
        "_loop" loop_: Option<Py<PyAny>> = None,
        /// The `socket.socket`; `None` once `connection_lost` was called (and closed it).
        "_sock" sock: Option<Py<PyAny>> = None,
        /// The socket's fd at creation; kept after close (repr, `loop._transports`' key).
        "_sock_fd" fd: RawFd = -1,
        /// The protocol; `None` once `connection_lost` was called.
        "_protocol" protocol: Option<Py<PyAny>> = None,
        /// The future `loop.sendfile` waits on until the write buffer is empty.
        "_empty_waiter" empty_waiter: Option<Py<PyAny>> = None,
        /// The `asyncio.Server` that accepted the connection, if any.
        "_server" server: Option<Py<PyAny>> = None,
        /// `connection_lost` is due to the protocol (`set_protocol` sets it).
        "_protocol_connected" protocol_connected: bool = false,
        /// `close()` or `abort()` was called.
        "_closing" closing: bool = false,
        /// `write_eof()` was called.
        "_eof" eof: bool = false,
        /// Reading is paused (`pause_reading()`).
        "_paused" paused: bool = false,
        /// `protocol.pause_writing()` was called and `resume_writing()` not yet.
        "_protocol_paused" protocol_paused: bool = false,
        /// Nonzero once the connection is lost; then counts the writes attempted since.
        "_conn_lost" conn_lost: u64 = 0,
        /// The write buffer's high-water mark (`set_write_buffer_limits`).
        "_high_water" high_water: usize = 64 * 1024,
        /// The write buffer's low-water mark.
        "_low_water" low_water: usize = 16 * 1024,
    }
    internal {
        /// The Python transport object this core serves (`_transport.py`).
        transport: Option<Py<PyAny>> = None,
        /// The protocol is an `asyncio.BufferedProtocol` (reads go through `get_buffer`).
        buffered: bool = false,
        /// The last read filled `max_size`: the next one receives straight into a new `bytes`
        /// (read.rs, `read_data_received`).
        bulk: bool = false,
    }
}

/// What a [`TransportAttribute`] gives access to.
#[derive(Clone, Copy)]
enum Target {
    Field(Field),
    /// `_buffer`: the native write buffer, read-only.
    Buffer,
}

/// One of the stdlib's private attributes on the Python transport class (`_closing`, ...): a
/// data descriptor over the field of the instance's core (`transport._core`), so the stdlib
/// functions borrowed onto that class and the Rust hot paths share one state.
#[pyclass(frozen, module = "ferroloop._native", name = "TransportAttribute")]
pub struct TransportAttribute {
    name: &'static str,
    target: Target,
}

impl TransportAttribute {
    /// The core of a Python transport; `None` before its constructor created one.
    pub(super) fn core_of<'py>(
        instance: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, TransportCore>>> {
        let py = instance.py();
        match instance.getattr(names::core(py)) {
            Ok(core) => Ok(Some(core.cast_into::<TransportCore>()?)),
            Err(e) if e.is_instance_of::<PyAttributeError>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every attribute, by name (`TransportCore._attributes()`).
    pub(super) fn all(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let attributes = PyDict::new(py);
        let targets = FIELDS
            .iter()
            .map(|&(name, field)| (name, Target::Field(field)))
            .chain([("_buffer", Target::Buffer)]);
        for (name, target) in targets {
            attributes.set_item(name, TransportAttribute { name, target })?;
        }
        Ok(attributes)
    }
}

#[pymethods]
impl TransportAttribute {
    fn __get__(
        slf: &Bound<'_, Self>,
        instance: &Bound<'_, PyAny>,
        _owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if instance.is_none() {
            return Ok(slf.clone().into_any().unbind()); // looked up on the class
        }
        let target = slf.get().target;
        // A transport whose constructor failed before creating its core (its `__del__` still
        // reads `_sock`) answers the initial values.
        match (Self::core_of(instance)?, target) {
            (Some(core), Target::Field(f)) => core.get().st.borrow(py).get(py, f),
            (Some(core), Target::Buffer) => Ok(core.get().buffer.clone_ref(py).into_any()),
            (None, Target::Field(f)) => TState::initial().get(py, f),
            (None, Target::Buffer) => Ok(PyBytes::new(py, b"").into_any().unbind()),
        }
    }

    fn __set__(&self, instance: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = instance.py();
        match (self.target, Self::core_of(instance)?) {
            (Target::Field(Field::loop_), Some(core)) if value.is_none() => {
                TState::set(&core.get().st, py, Field::loop_, value)?;
                // `_loop = None` is the last thing the stdlib's `_call_connection_lost` does,
                // after letting go of the socket, protocol and server: the transport is
                // finished. The core and the transport reference each other (the core calls
                // back into the transport's stdlib functions); dropping the core's side now lets
                // reference counting free both as soon as the protocol lets go of the
                // transport, as it frees the stdlib's transport, instead of leaving every
                // finished connection to the cyclic collector. Nothing calls back into the
                // transport after that: reads, writes and the writer return early once
                // `_conn_lost` is set, pause/resume once `_closing` is.
                let old = core.get().st.borrow_mut(py).transport.take();
                drop(old); // outside the borrow: a `__del__` may run
                Ok(())
            }
            (Target::Field(f), Some(core)) => TState::set(&core.get().st, py, f, value),
            (Target::Buffer, _) => Err(PyAttributeError::new_err(format!(
                "the transport attribute '{}' is read-only",
                self.name
            ))),
            (_, None) => Err(PyAttributeError::new_err(format!(
                "cannot set '{}': the transport was not initialised",
                self.name
            ))),
        }
    }

    fn __delete__(&self, _instance: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyAttributeError::new_err(format!(
            "the transport attribute '{}' cannot be deleted",
            self.name
        )))
    }

    #[getter]
    fn __name__(&self) -> &'static str {
        self.name
    }

    fn __repr__(&self) -> String {
        format!("<transport attribute '{}'>", self.name)
    }
}
