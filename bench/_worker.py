"""One (loop, benchmark) measurement, run in a fresh interpreter by bench/run.py.

    python bench/_worker.py --loop uvloop --bench call_soon [--quick] [--repeat 3]
    python bench/_worker.py --loop ferroloop --probe

It prints exactly one JSON object on the last line of stdout:
    {"ok": true, "ops": N, "times": [s, ...], "best": s, "ops_per_s": x, "ns_per_op": y, "extra": {...}}
or  {"ok": false, "error": "..."}.

Every benchmark is the *same* Python code for every loop; only the loop factory differs.  Each
benchmark is a function ``bench(loop, n) -> (ops, seconds)`` that times just the loop running
(loop creation, thread joins, verification happen outside the timed region).  A warm-up run
with n/10 ops comes first (and checks the work was really done), then ``--repeat`` timed runs,
each on a brand-new loop; the fastest one is the process's result (as ``timeit`` does: noise
only ever adds time).  run.py then takes the median across processes/rounds.
"""

import argparse
import asyncio
import gc
import json
import os
import sys
import threading
import time
import traceback
from itertools import repeat

perf_counter = time.perf_counter

# --------------------------------------------------------------------------------------------
# Loop factories.  Optional peers (rloop, rsloop) are imported lazily; run.py probes them and
# skips them silently when they are not installed.
# --------------------------------------------------------------------------------------------


def _factory(name):
    if name == "asyncio":
        return asyncio.new_event_loop          # the stock selector loop on Linux
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    if name == "ferroloop":
        import ferroloop
        return ferroloop.new_event_loop
    if name == "rloop":
        import rloop
        return rloop.new_event_loop
    if name == "rsloop":
        import rsloop
        return rsloop.new_event_loop
    raise ValueError(f"unknown loop {name!r}")


def _version(name):
    if name == "asyncio":
        return sys.version.split()[0]
    mod = sys.modules.get(name)
    try:
        from importlib.metadata import version
        v = version(name)
    except Exception:
        v = getattr(mod, "__version__", "?")
    native = sys.modules.get("ferroloop._native") if name == "ferroloop" else None
    if native is not None:  # the version does not change between rebuilds; the binary's age does
        v += time.strftime(" (built %H:%M:%S)", time.localtime(os.path.getmtime(native.__file__)))
    return v


# --------------------------------------------------------------------------------------------
# The benchmarks.  Harness loops use ``for _ in repeat(None, k)`` and pre-bound methods so that
# the Python-side overhead is as small as plain asyncio code can make it.
# --------------------------------------------------------------------------------------------

BATCH = 1000  # callbacks / timers per loop iteration in the batched benchmarks


def noop():
    pass


def noop2(a, b):
    pass


def _batched(loop, n, schedule_batch):
    """Run ``schedule_batch()`` from inside the loop n/BATCH times, one batch per loop iteration;
    the driver re-schedules itself with call_soon behind the batch it just queued, so the loop
    alternates: run 1000 handles, run the driver, ..., then stop."""
    batches = max(1, n // BATCH)
    left = batches

    def driver():
        nonlocal left
        if left == 0:
            loop.stop()
            return
        left -= 1
        schedule_batch()
        loop.call_soon(driver)

    loop.call_soon(driver)
    t0 = perf_counter()
    loop.run_forever()
    dt = perf_counter() - t0
    assert left == 0, f"driver stopped early ({left} batches left)"
    return batches * BATCH, dt


def bench_call_soon(loop, n, cb=noop):
    """call_soon(cb) with no arguments: BATCH calls per loop iteration, then they all run."""
    call_soon = loop.call_soon

    def batch():
        for _ in repeat(None, BATCH):
            call_soon(cb)
    return _batched(loop, n, batch)


def bench_call_soon_2args(loop, n, cb=noop2):
    """call_soon(cb, 1, 2): same as above, the handle carries and unpacks two arguments."""
    call_soon = loop.call_soon

    def batch():
        for _ in repeat(None, BATCH):
            call_soon(cb, 1, 2)
    return _batched(loop, n, batch)


def bench_call_later_cancel(loop, n):
    """Timeouts that never fire: schedule BATCH timers (call_later(60, cb)), cancel them all, let
    the loop iterate (that is where asyncio purges cancelled timers from its heap), repeat."""
    call_later = loop.call_later

    def batch():
        handles = [call_later(60.0, noop) for _ in repeat(None, BATCH)]
        for h in handles:
            h.cancel()
    return _batched(loop, n, batch)


def bench_sleep0(loop, n):
    """One task doing ``await asyncio.sleep(0)`` n times: each turn is a task step re-scheduled
    through the ready queue (the cheapest possible context switch)."""
    sleep = asyncio.sleep

    async def main():
        for _ in repeat(None, n):
            await sleep(0)
    t0 = perf_counter()
    loop.run_until_complete(main())
    return n, perf_counter() - t0


async def _trivial():
    pass


def bench_gather(loop, n):
    """create_task + gather of n trivial coroutines (task creation, first step, completion
    callbacks into the gather future).  Reported as coroutines/s."""
    async def main():
        create_task = loop.create_task
        tasks = [create_task(_trivial()) for _ in repeat(None, n)]
        await asyncio.gather(*tasks)
    t0 = perf_counter()
    loop.run_until_complete(main())
    return n, perf_counter() - t0


def bench_pingpong(loop, n):
    """Future ping-pong between two tasks: the pinger resolves the ponger's future with a reply
    future and awaits it; the ponger wakes up, resolves the reply and waits on a fresh future.
    One round trip = 2 create_future, 2 set_result, 2 task wake-ups."""
    create_future = loop.create_future
    box = [None]  # the future the ponger is currently waiting on

    async def ponger():
        for _ in repeat(None, n):
            box[0] = waiter = create_future()
            reply = await waiter
            reply.set_result(None)

    async def pinger():
        while box[0] is None:          # let the ponger park itself first
            await asyncio.sleep(0)
        for _ in repeat(None, n):
            reply = create_future()
            waiter, box[0] = box[0], None
            waiter.set_result(reply)
            await reply

    async def main():
        await asyncio.gather(ponger(), pinger())
    t0 = perf_counter()
    loop.run_until_complete(main())
    return n, perf_counter() - t0


def bench_threadsafe(loop, n):
    """Another thread calls loop.call_soon_threadsafe(cb) n times as fast as it can; timed until
    the loop has run the n-th callback (includes the wake-up of a loop blocked in its poller and
    GIL hand-offs between the two threads, as in real thread -> loop hand-off)."""
    left = n

    def cb():
        nonlocal left
        left -= 1
        if not left:
            loop.stop()

    def produce():
        cst = loop.call_soon_threadsafe
        try:
            for _ in repeat(None, n):
                cst(cb)
        except BaseException as e:  # the loop would wait forever for the missing callbacks
            _emit({"ok": False, "error": f"producer thread: {type(e).__name__}: {e}"})

    th = threading.Thread(target=produce)
    loop.call_soon(th.start)           # start the producer once the loop is running
    t0 = perf_counter()
    loop.run_forever()
    dt = perf_counter() - t0
    th.join()
    assert left == 0
    return n, dt


def _with_idle_fd(bench):
    """The same benchmark with one idle socket watched by add_reader, as in any real server: a
    loop can no longer skip polling on turns that must not block."""
    def wrapped(loop, n):
        import socket
        a, b = socket.socketpair()
        loop.add_reader(a.fileno(), noop)   # an int: every loop accepts it
        try:
            return bench(loop, n)
        finally:
            loop.remove_reader(a.fileno())
            a.close()
            b.close()
    wrapped.__doc__ = bench.__doc__
    return wrapped


def bench_floor(_loop, n):
    """The physical floor: an empty Python function called n times in the same kind of tight
    loop the harness uses (no event loop involved).  extra: the same with 2 arguments."""
    f, f2 = noop, noop2
    t0 = perf_counter()
    for _ in repeat(None, n):
        f()
    dt = perf_counter() - t0
    t0 = perf_counter()
    for _ in repeat(None, n):
        f2(1, 2)
    _EXTRA.setdefault("ns_2args", []).append((perf_counter() - t0) / n * 1e9)
    return n, dt


_EXTRA = {}

# name -> (function, n for a full run, unit).  n is chosen so asyncio needs ~0.1-0.4 s per run.
BENCHES = {
    "call_soon":        (bench_call_soon,        500_000, "callbacks/s"),
    "call_soon_2args":  (bench_call_soon_2args,  500_000, "callbacks/s"),
    "call_later_cancel": (bench_call_later_cancel, 200_000, "timers/s"),
    "sleep0":           (bench_sleep0,           200_000, "turns/s"),
    "gather":           (bench_gather,           100_000, "coroutines/s"),
    "pingpong":         (bench_pingpong,         100_000, "round trips/s"),
    "sleep0_fd":        (_with_idle_fd(bench_sleep0),   200_000, "turns/s"),
    "pingpong_fd":      (_with_idle_fd(bench_pingpong), 100_000, "round trips/s"),
    "threadsafe":       (bench_threadsafe,       200_000, "callbacks/s"),
    "floor":            (bench_floor,          5_000_000, "calls/s"),
}
LOOPLESS = {"floor"}  # benchmarks that do not use a loop (run once per round, not per loop)


def _verify(loop_factory):
    """Cheap semantic check on the loop under test, so a loop that drops callbacks cannot look
    fast: 3 batches of counting callbacks must all run, in FIFO order, with their arguments."""
    loop = loop_factory()
    try:
        seen = []
        for i in range(3 * BATCH):
            loop.call_soon(seen.append, i)
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert seen == list(range(3 * BATCH)), "call_soon callbacks lost or out of order"
    finally:
        loop.close()


def run(loop_name, bench_name, quick, repeat_n, no_gc=False):
    func, n, _unit = BENCHES[bench_name]
    if quick:
        n //= 10
    factory = (lambda: None) if bench_name in LOOPLESS else _factory(loop_name)
    if bench_name not in LOOPLESS:
        _verify(factory)

    def once(k):
        loop = factory()
        if loop is not None:
            asyncio.set_event_loop(loop)
        try:
            gc.collect()
            if no_gc:                    # diagnosis only: the loop's cost without the collector
                gc.disable()
            return func(loop, k)
        finally:
            gc.enable()
            if loop is not None:
                asyncio.set_event_loop(None)
                loop.close()

    once(max(BATCH, n // 10))           # warm-up (caches, allocator, lazy imports)
    _EXTRA.clear()
    times = []
    for _ in range(repeat_n):
        ops, dt = once(n)
        times.append(dt)
    best = min(times)
    extra = {k: min(v) for k, v in _EXTRA.items()}
    return {"ok": True, "ops": ops, "times": times, "best": best,
            "ops_per_s": ops / best, "ns_per_op": best / ops * 1e9, "extra": extra}


def _emit(res):
    """Print the one JSON result line and exit at once.  os._exit: a broken loop may leave
    threads behind or be blocked in its poller; the worker must never hang the harness."""
    sys.stdout.write("\n" + json.dumps(res) + "\n")
    sys.stdout.flush()
    os._exit(0 if res["ok"] else 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop", required=True)
    ap.add_argument("--bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--probe", action="store_true", help="only check the loop can be created")
    ap.add_argument("--no-gc", action="store_true", help="disable the cyclic GC while timing")
    ap.add_argument("--timeout", type=float, default=60, help="watchdog: give up after this many s")
    ap.add_argument("--ferroloop-from", metavar="DIR",
                    help="import ferroloop from DIR (an A/B baseline: run.py --baseline)")
    a = ap.parse_args()
    if a.ferroloop_from:
        sys.path.insert(0, os.path.abspath(a.ferroloop_from))
    # Watchdog: a loop that deadlocks (a lost wake-up, a callback never run) reports a timeout.
    dog = threading.Timer(a.timeout, _emit, [{"ok": False, "error": f"timeout: no result after {a.timeout:g}s"}])
    dog.daemon = True
    dog.start()
    try:
        if a.probe:
            loop = _factory(a.loop)()
            loop.close()
            res = {"ok": True, "version": _version(a.loop)}
            if a.loop == "ferroloop":
                import ferroloop
                res["file"] = os.path.realpath(ferroloop.__file__)
        else:
            res = run(a.loop, a.bench, a.quick, a.repeat, a.no_gc)
    except BaseException as e:  # report, never crash without a JSON line
        tb = traceback.format_exc(limit=-3)
        res = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": tb}
    _emit(res)


if __name__ == "__main__":
    main()
