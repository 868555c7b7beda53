"""ferroloop: a drop-in asyncio event loop with its core in Rust.

    import ferroloop
    ferroloop.run(main())                                   # like asyncio.run(main())
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)   # 3.11+
    asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())
    python -m ferroloop app.py                              # an unmodified program
"""

import asyncio as _asyncio

from ._loop import Loop
from ._native import Handle, TimerHandle
from ._runner import run

__all__ = ["Loop", "EventLoopPolicy", "new_event_loop", "run", "install", "Handle", "TimerHandle"]
__version__ = "0.1.0"


def new_event_loop():
    """A new ferroloop event loop."""
    return Loop()


class EventLoopPolicy(_asyncio.DefaultEventLoopPolicy):
    """The default asyncio policy, creating ferroloop loops.

    ``asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())`` makes ``asyncio.run()``,
    ``asyncio.new_event_loop()`` and ``asyncio.get_event_loop()`` use ferroloop.
    """

    def _loop_factory(self):
        return Loop()


def install():
    """Make ferroloop the default loop of this process (sets the event-loop policy)."""
    _asyncio.set_event_loop_policy(EventLoopPolicy())
