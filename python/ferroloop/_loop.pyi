"""ferroloop.Loop as type checkers see it.

``Loop`` is declared a subclass of ``asyncio.BaseEventLoop``, which typeshed types as a concrete
class. Every event-loop method then has the stdlib's signature and return type (``call_soon``
returns an ``asyncio.Handle``, ``call_later`` and ``call_at`` an ``asyncio.TimerHandle``,
``create_task`` an ``asyncio.Task``) and nothing is abstract, so ``ferroloop.Loop()``
type-checks where an ``asyncio.AbstractEventLoop`` is expected.

Two things here are not what happens at runtime, on purpose:

- The base class. At runtime ``Loop`` derives from ``ferroloop._native.LoopCore`` and
  ``asyncio.AbstractEventLoop``, not from ``asyncio.BaseEventLoop``:
  ``isinstance(loop, asyncio.BaseEventLoop)`` is False, where a type checker deems it True. Every
  public attribute of ``BaseEventLoop`` exists on ``Loop`` with the stdlib's meaning (many are
  the stdlib's own functions, see ``_loop.py``), which ``mypy.stubtest`` checks against this
  stub; the private ones a type checker sees through ``BaseEventLoop`` are the stdlib's
  internals and mostly absent.
- The handles. ``call_soon`` & co return ``ferroloop.Handle`` and ``ferroloop.TimerHandle``,
  native classes with the public methods of ``asyncio.Handle`` and ``asyncio.TimerHandle``
  (``cancel``, ``cancelled``, ``get_context``, ``when``) that do not derive from them. Typing
  them as the stdlib's handles is what every caller of ``asyncio.get_running_loop().call_soon()``
  already sees when ferroloop runs the program; ``ferroloop._native`` types them as they are.
"""

import asyncio
from typing import TypedDict, type_check_only

__all__ = ["Loop"]

@type_check_only
class _Stats(TypedDict):
    turns: int
    callbacks: int
    busy: float
    idle: float
    longest_stall: float
    ready: int
    timers: int
    cancelled_timers: int
    fds: int
    waits_skipped: int

class Loop(asyncio.BaseEventLoop):
    """An asyncio event loop whose scheduling core is written in Rust."""

    stall_threshold: float
    def __init__(self) -> None: ...
    def set_keep_tasks(self, enabled: bool) -> None: ...
    def get_keep_tasks(self) -> bool: ...
    # Production mode (_production.py)
    def set_watchdog(self, threshold: float | None, *, report_interval: float = 60.0) -> None: ...
    def get_watchdog(self) -> float | None: ...
    def stats(self) -> _Stats: ...
