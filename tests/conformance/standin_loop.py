"""A stand-in "loop under test" with ferroloop's module interface.

It is CPython's own selector loop under another class name, so it must pass
every test that passes on the stock loop.  That makes it the conformance
runner's self-check: if `run.py --loop tests.conformance.standin_loop` reports
a regression or counts zero loops where stock counts some, the runner's
substitution or bookkeeping is wrong, not a loop.

Module interface the runner expects (ferroloop provides the same names):
    new_event_loop()  -> a new loop of the measured type
    Loop              -> the class whose instances are counted
    EventLoopPolicy   -> a DefaultEventLoopPolicy-like policy making Loops
"""

import asyncio

# Captured at import time: the runner replaces asyncio.DefaultEventLoopPolicy
# after importing this module, and our base must stay CPython's policy.
_StockPolicy = asyncio.DefaultEventLoopPolicy


class StandInLoop(asyncio.SelectorEventLoop):
    """CPython's SelectorEventLoop, distinguishable by type."""


def new_event_loop():
    return StandInLoop()


class StandInPolicy(_StockPolicy):
    # BaseDefaultEventLoopPolicy.new_event_loop() calls self._loop_factory().
    _loop_factory = StandInLoop


Loop = StandInLoop
EventLoopPolicy = StandInPolicy
