"""Reference cycles through handles are collected, as with asyncio.Handle.

Regression: PyO3's `freelist` re-initialised recycled handle objects without re-tracking them in
the garbage collector, so a cycle through a plain Handle (an object holding the handle of its own
bound method, a very common pattern) was never freed.
"""

import gc
import weakref


class _Holder:
    def __init__(self, loop, later):
        if later:
            self.h = loop.call_later(0, self.cb)
        else:
            self.h = loop.call_soon(self.cb)

    def cb(self):
        pass


def _cycle_survivors(loop, later):
    # Warm up any allocator cache first: recycled handles are where tracking went missing.
    for _ in range(500):
        loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    refs = []
    for _ in range(50):
        h = _Holder(loop, later)
        refs.append(weakref.ref(h))
        del h
    loop.run_until_complete(_sleep_a_bit(loop))  # the handles run and leave the loop
    gc.collect()
    return sum(r() is not None for r in refs)


async def _sleep_a_bit(loop):
    import asyncio

    await asyncio.sleep(0.01)


def test_cycles_through_handles_are_collected(loop):
    assert _cycle_survivors(loop, later=False) == 0


def test_cycles_through_timer_handles_are_collected(loop):
    assert _cycle_survivors(loop, later=True) == 0


def test_unclosed_loop_with_pending_callbacks_is_collected(loop_factory):
    lp = loop_factory()
    lp.call_soon(lp.stop)
    lp.call_later(3600, lambda: None)
    ref = weakref.ref(lp)
    import warnings

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        del lp
        gc.collect()
    assert ref() is None
    assert any("unclosed event loop" in str(x.message) for x in w)
