//! `ferroloop._native`: the Rust half of ferroloop. The Python package (`python/ferroloop`)
//! subclasses `LoopCore` into `ferroloop.Loop`.

// Layering, lowest first (no module imports one above it): gil, gc, stats, signals; handle
// (fields and ownership); loop_state (`LoopCore`'s fields); turn (the run loop); handle_api
// (`Handle`'s Python methods); fd_watch; sock (the `sock_*` coroutines); loop_core (`LoopCore`'s
// Python methods); fastcall (its `call_soon`s as raw vectorcalls); pool (handle pooling); cached
// (modules imported once); transport.
mod cached;
mod call_args;
mod fastcall;
mod fd_watch;
mod gc;
mod gil;
mod handle;
mod handle_api;
mod loop_core;
mod loop_state;
mod pool;
mod signals;
mod sock;
mod stats;
mod transport;
mod turn;

use pyo3::prelude::*;

// `gil_used = true`: every piece of loop state is guarded by the GIL (gil.rs, `GilCell`), so a
// free-threaded interpreter must turn the GIL back on when it imports this module (it does, with
// a RuntimeWarning). PyO3 0.30 would otherwise declare the module GIL-free (`Py_mod_gil`).
// The plan for real free-threaded support is in docs/architecture.md.
#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<loop_core::LoopCore>()?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<handle::TimerHandle>()?;
    pool::install(m.py())?;
    m.add_function(wrap_pyfunction!(pool::_handle_pools, m)?)?;
    fastcall::install(m.py())?;
    loop_core::install_traverse(m.py());
    m.add_class::<sock::SockOp>()?;
    m.add_class::<transport::TransportCore>()?;
    m.add_class::<transport::TransportFinalizer>()?;
    m.add_class::<transport::WriteBuffer>()?;
    m.add_class::<transport::DatagramCore>()?;
    m.add_function(wrap_pyfunction!(sock::coroutine_method, m)?)?;
    m.add_function(wrap_pyfunction!(transport::accept_nonblocking, m)?)?;
    m.add_function(wrap_pyfunction!(transport::accept_connections, m)?)?;
    m.add_function(wrap_pyfunction!(transport::configure_accept, m)?)?;
    Ok(())
}
