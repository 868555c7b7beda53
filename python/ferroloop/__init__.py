"""ferroloop: a drop-in asyncio event loop with its core in Rust.

    import ferroloop
    ferroloop.run(main())                                   # like asyncio.run(main())
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)   # 3.11+
    asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())
    python -m ferroloop app.py                              # an unmodified program
"""

import asyncio as _asyncio

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
__version__ = "0.1.0"


def new_event_loop():
    """A new ferroloop event loop."""
    return Loop()


class EventLoopPolicy(_compat.DEFAULT_POLICY_BASE):
    """The default asyncio policy, creating ferroloop loops.

    ``asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())`` makes ``asyncio.run()``,
    ``asyncio.new_event_loop()`` and ``asyncio.get_event_loop()`` use ferroloop.
    """

    def _loop_factory(self):
        return Loop()


def install():
    """Make ferroloop the default loop of this process (sets the event-loop policy)."""
    _asyncio.set_event_loop_policy(EventLoopPolicy())


def install_loop_factory():
    """Make ferroloop the default loop of this process without the policy system (deprecated
    from Python 3.14): ``asyncio.run()``, ``asyncio.Runner()`` and ``asyncio.new_event_loop()``
    create ferroloop loops. ``asyncio.get_event_loop()`` outside a running loop still asks the
    policy (on 3.11 and 3.12 it may create a stock loop there)."""
    from asyncio import events

    events.new_event_loop = new_event_loop  # what asyncio.Runner calls, looked up at call time
    _asyncio.new_event_loop = new_event_loop
