//! Every Python name the transport calls, reads or passes by string, interned once.
//!
//! Each function is `intern!` of its own name: the first call creates the interned `str`, later
//! calls return it. Rust code calls `protocol.call_method1(names::data_received(py), ...)`, so
//! the set of Python entry points the native half depends on is this file.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;

macro_rules! interned {
    ($($(#[$doc:meta])* $name:ident = $text:literal;)*) => {
        $(
            $(#[$doc])*
            #[inline]
            pub(super) fn $name(py: Python<'_>) -> &Bound<'_, PyString> {
                intern!(py, $text)
            }
        )*
    };
}

interned! {
    // The protocol's callbacks.
    data_received = "data_received";
    get_buffer = "get_buffer";
    buffer_updated = "buffer_updated";
    pause_writing = "pause_writing";
    resume_writing = "resume_writing";

    // The Python transport's rare paths (the stdlib's functions, _transport.py).
    fatal_error = "_fatal_error";
    read_ready_on_eof = "_read_ready__on_eof";
    call_connection_lost = "_call_connection_lost";
    /// The attribute of the Python transport that holds its `TransportCore`.
    core = "_core";

    // The core's own callbacks, registered with the loop.
    write_ready = "_write_ready";
    read_ready = "_read_ready";

    // The socket object.
    fileno = "fileno";
    shutdown = "shutdown";
    socket = "socket";
    shut_wr = "SHUT_WR";

    // Futures (the sendfile waiter).
    set_result = "set_result";
    set_exception = "set_exception";

    // The loop's exception handler and its context keys, the stdlib's logger.
    call_exception_handler = "call_exception_handler";
    message = "message";
    exception = "exception";
    transport = "transport";
    protocol = "protocol";
    asyncio_log = "asyncio.log";
    logger = "logger";
    warning = "warning";
    debug = "debug";
}
