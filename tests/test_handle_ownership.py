"""Who owns a handle, and what the garbage collector sees of it.

On both loops: a timer's ``_scheduled`` is true exactly while it is in the heap (a cancelled one
stays there until a turn drops it, as the stdlib's does).

On ferroloop only (crates/ferroloop-py/src/gc.rs): while the loop owns a handle (ready queue,
timer heap, fd table) the handle is untracked and the loop's ``__traverse__`` reports the
handle's references exactly once; when the loop lets go (run, dropped, unregistered, replaced,
closed) the handle is tracked again if anyone still holds it.
"""

import gc
import socket


class _Callback:
    """A distinct callable object, to count how often the collector is shown it."""

    def __call__(self, *args):
        pass


def _one_turn(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_timer_scheduled_flag_follows_the_heap(loop):
    t = loop.call_later(3600, _Callback())
    assert t._scheduled
    t.cancel()
    assert t._scheduled, "a cancelled timer stays in the heap until a turn drops it"
    _one_turn(loop)
    assert not t._scheduled

    due = loop.call_later(0, _Callback())
    assert due._scheduled
    _one_turn(loop)
    assert not due._scheduled


def test_ferroloop_ready_and_timer_handles_are_untracked_while_pending(ferroloop_mod):
    loop = ferroloop_mod.new_event_loop()
    try:
        h = loop.call_soon(_Callback())
        t = loop.call_later(3600, _Callback())
        assert not gc.is_tracked(h) and not gc.is_tracked(t)
        _one_turn(loop)
        assert gc.is_tracked(h), "run: the loop let go"
        assert not gc.is_tracked(t), "still in the heap"
        t.cancel()
        _one_turn(loop)
        assert gc.is_tracked(t) and not t._scheduled, "dropped from the heap"

        pending = loop.call_later(3600, _Callback())
        assert not gc.is_tracked(pending)
    finally:
        loop.close()
    assert gc.is_tracked(pending) and not pending._scheduled, "close lets go of everything"


def test_ferroloop_fd_handles_are_owned_by_the_fd_table(ferroloop_mod):
    loop = ferroloop_mod.new_event_loop()
    a, b = socket.socketpair()
    try:
        b.send(b"x")  # readable from the start: the reader runs on every turn
        ran = []
        r1 = loop._add_reader(a.fileno(), ran.append, 1)
        assert not gc.is_tracked(r1)
        _one_turn(loop)
        assert ran == [1]
        assert not gc.is_tracked(r1), "ran, but the fd table still owns it"

        r2 = loop._add_reader(a.fileno(), ran.append, 2)
        assert r1.cancelled() and gc.is_tracked(r1), "replaced: cancelled and let go"
        assert not gc.is_tracked(r2)

        w = loop._add_writer(a.fileno(), ran.append, "w")
        _one_turn(loop)
        assert ran == [1, 2, "w"]
        assert loop.remove_writer(a.fileno())
        assert w.cancelled() and gc.is_tracked(w)
        assert loop._fd_callbacks(a.fileno()) == (r2, None)

        # Cancelled directly: unregistered by the turn in which its fd fires.
        r2.cancel()
        _one_turn(loop)
        assert ran == [1, 2, "w"]
        assert loop._fd_callbacks(a.fileno()) == (None, None)
        assert gc.is_tracked(r2)
    finally:
        loop.close()
        a.close()
        b.close()


def test_ferroloop_loop_reports_pending_handle_contents_once(ferroloop_mod):
    loop = ferroloop_mod.new_event_loop()
    a, b = socket.socketpair()
    try:
        soon_cb, timer_cb, reader_cb = _Callback(), _Callback(), _Callback()
        h = loop.call_soon(soon_cb)
        t = loop.call_later(3600, timer_cb)
        r = loop._add_reader(a.fileno(), reader_cb)
        refs = gc.get_referents(loop)
        for handle, cb in ((h, soon_cb), (t, timer_cb), (r, reader_cb)):
            assert sum(x is handle for x in refs) == 1
            assert sum(x is cb for x in refs) == 1, "the contents of an owned handle, once"
            assert not cb_in(gc.get_referents(handle), cb), "reported by the loop, not the handle"
        _one_turn(loop)
        refs = gc.get_referents(loop)
        assert not any(x is h or x is soon_cb for x in refs), "run: no longer the loop's"
        assert cb_in(gc.get_referents(h), soon_cb), "the handle reports its own references"
    finally:
        loop.close()
        a.close()
        b.close()


def cb_in(refs, cb):
    return any(x is cb for x in refs)
