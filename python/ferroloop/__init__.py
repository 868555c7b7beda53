"""ferroloop: a drop-in asyncio event loop with its core in Rust.

    import ferroloop
    ferroloop.run(main())                                   # like asyncio.run(main())
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)   # 3.11+
    asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())
    python -m ferroloop app.py                              # an unmodified program
"""

import asyncio as _asyncio
from typing import TYPE_CHECKING

from . import _compat
from ._loop import Loop
from ._native import Handle, TimerHandle
from ._runner import run

__all__ = [
    "Loop",
    "EventLoopPolicy",
    "new_event_loop",
    "run",
    "install",
    "install_loop_factory",
    "Handle",
    "TimerHandle",
]

if TYPE_CHECKING:
    # What _compat.DEFAULT_POLICY_BASE is on every version, as typeshed spells it (3.14 deprecates
    # the public asyncio.DefaultEventLoopPolicy name).
    from asyncio.unix_events import _UnixDefaultEventLoopPolicy as _PolicyBase

    __version__: str
else:
    _PolicyBase = _compat.DEFAULT_POLICY_BASE

    def __getattr__(name):
        # __version__ is the installed distribution's version, which maturin takes from Cargo's
        # workspace version: Cargo.toml is the one place it is written. Looked up on first use:
        # importing importlib.metadata costs about half as much as importing asyncio.
        if name == "__version__":
            from importlib.metadata import PackageNotFoundError, version

            try:
                value = version("ferroloop")
            except PackageNotFoundError:  # imported from a source tree that was never installed
                value = "0+unknown"
            globals()["__version__"] = value
            return value
        if name == "metrics":  # ferroloop.metrics.instrument(loop): OpenTelemetry export
            from . import _metrics

            return _metrics
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def new_event_loop() -> Loop:
    """A new ferroloop event loop."""
    return Loop()


class EventLoopPolicy(_PolicyBase):
    """The default asyncio policy, creating ferroloop loops.

    ``asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())`` makes ``asyncio.run()``,
    ``asyncio.new_event_loop()`` and ``asyncio.get_event_loop()`` use ferroloop.
    """

    def _loop_factory(self) -> Loop:
        return Loop()


def install() -> None:
    """Make ferroloop the default loop of this process (sets the event-loop policy)."""
    _asyncio.set_event_loop_policy(EventLoopPolicy())


def install_loop_factory() -> None:
    """Make ferroloop the default loop of this process without the policy system (deprecated
    from Python 3.14): ``asyncio.run()``, ``asyncio.Runner()`` and ``asyncio.new_event_loop()``
    create ferroloop loops. ``asyncio.get_event_loop()`` outside a running loop still asks the
    policy (on 3.11 and 3.12 it may create a stock loop there)."""
    from asyncio import events

    events.new_event_loop = new_event_loop  # what asyncio.Runner calls, looked up at call time
    _asyncio.new_event_loop = new_event_loop
