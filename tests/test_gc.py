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


class _Box:
    pass


def _noop(*args):
    pass


def test_cycles_through_handle_arguments_are_collected(loop_factory):
    """A cycle that runs through a handle's arguments (held without a tuple for up to two,
    call_args.rs) is collected: pending in an unclosed loop, and through a handle kept after
    it ran."""
    import warnings

    for nargs in (1, 2, 3):
        lp = loop_factory()
        box = _Box()
        box.loop = lp                    # lp -> ready queue -> handle -> box -> lp
        lp.call_soon(_noop, *([box] * nargs))
        refs = [weakref.ref(lp), weakref.ref(box)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del lp, box
            gc.collect()
        assert [r() for r in refs] == [None, None], nargs

        lp = loop_factory()
        box = _Box()
        box.h = lp.call_soon(_noop, *([box] * nargs))   # box -> handle -> box
        ref = weakref.ref(box)
        lp.call_soon(lp.stop)
        lp.run_forever()
        lp.close()
        del box
        gc.collect()
        assert ref() is None, nargs


class _Node:
    """Schedules itself again and again, so pending handles form cycles with their owners."""

    def __init__(self, loop, budget):
        self.loop, self.budget, self.h = loop, budget, None

    def step(self, *args):
        self.budget -= 1
        if self.budget % 7 == 0:
            gc.collect(self.budget % 3)  # collections while handles are pending and running
        if self.budget <= 0:
            return
        if self.budget % 2:
            self.h = self.loop.call_soon(self.step, self)
        else:
            self.h = self.loop.call_later(0.0001, self.step)
            if self.budget % 5 == 0:
                self.h.cancel()


def test_collections_while_handles_pending_free_everything(loop_factory):
    """Collections run from inside callbacks, with ready, timer and fd handles pending, cancelled
    and replaced; afterwards every object is freed and nothing crashed (a reference reported
    twice to the collector would free a live object)."""
    import socket

    refs = []
    for close in (True, False):
        lp = loop_factory()
        a, b = socket.socketpair()
        a.setblocking(False)
        nodes = [_Node(lp, 40) for _ in range(50)]
        for n in nodes:
            n.h = lp.call_soon(n.step)
            refs.append(weakref.ref(n))

        def on_readable():
            a.recv(100)
            lp.add_reader(a.fileno(), on_readable)  # replaces (and cancels) the current handle

        lp.add_reader(a.fileno(), on_readable)
        b.send(b"x" * 50)
        lp.call_later(0.05, lp.stop)
        lp.run_forever()
        lp.remove_reader(a.fileno())
        a.close()
        b.close()
        del nodes, n, on_readable
        if close:
            lp.close()
        else:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del lp
                gc.collect()
            continue
        del lp
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
