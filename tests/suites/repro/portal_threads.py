"""anyio's TestBlockingPortalProvider::test_single_thread, repeated: after three portals (each an
event loop run with debug=True in a worker thread that anyio joins) it asserts that
threading.active_count() is back to its value before. Counts how often a thread is left over."""
import asyncio, threading
from anyio.from_thread import BlockingPortalProvider
import ferroloop

async def noop(): pass

N = 200
for factory in (asyncio.new_event_loop, ferroloop.new_event_loop):
    extra = 0; names = set()
    for _ in range(N):
        p = BlockingPortalProvider(backend="asyncio", backend_options={"debug": True, "loop_factory": factory})
        before = threading.active_count()
        for _ in range(3):
            with p as portal:
                portal.call(noop)
        if threading.active_count() != before:
            extra += 1
            names.update(t.name for t in threading.enumerate() if t is not threading.main_thread())
        while threading.active_count() != before: pass
    print(f"{factory.__module__:16} thread count off in {extra}/{N} runs; left over: {sorted(names)}")
