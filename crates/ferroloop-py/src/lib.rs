//! `ferroloop._native`: the Rust half of ferroloop. The Python package (`python/ferroloop`)
//! subclasses `LoopCore` into `ferroloop.Loop`.

mod fd_watch;
mod gc;
mod gil;
mod handle;
mod loop_core;
mod stats;
mod transport;
mod turn;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<loop_core::LoopCore>()?;
    m.add_class::<handle::Handle>()?;
    m.add_class::<handle::TimerHandle>()?;
    m.add_class::<transport::TransportCore>()?;
    m.add_class::<transport::WriteBuffer>()?;
    Ok(())
}
