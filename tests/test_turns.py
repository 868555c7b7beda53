"""How many turns the loop takes: sub-millisecond timers must not make the loop spin.

Mirrors CPython's test_events.test_timeout_rounding, whose failure message reads the stock loop's
`_selector` (so it is excluded from the conformance run); the behaviour is asserted here on both
loops.
"""

import asyncio


def test_timeout_rounding(loop):
    turns = 0
    orig_run_once = loop._run_once

    def _run_once():
        nonlocal turns
        turns += 1
        orig_run_once()

    # Patching _run_once on the instance takes effect on both loops.
    loop._run_once = _run_once

    async def wait():
        await asyncio.sleep(1e-2)
        await asyncio.sleep(1e-4)
        await asyncio.sleep(1e-6)
        await asyncio.sleep(1e-8)
        await asyncio.sleep(1e-10)

    loop.run_until_complete(wait())
    # The ideal is 12 turns; CPython tolerates up to 20 for coarse kernel clocks.
    assert 12 <= turns <= 20


def test_run_once_patch_is_called_each_turn(loop):
    calls = []
    orig = loop._run_once
    loop._run_once = lambda: (calls.append(1), orig())
    loop.call_soon(loop.call_soon, loop.stop)
    loop.run_forever()
    assert len(calls) == 2
    del loop._run_once
    calls.clear()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == []
