"""A timer whose deadline a test reaches by patching loop.time on the instance (what aiohttp's
test_keepalive_expires_on_time does with mock.patch.object(loop, "time")). The stdlib's
_run_once asks self.time() which timers are due, and call_later is call_at(self.time() + delay);
ferroloop's native turn and call_later read the Rust monotonic clock and never see the patch."""
import asyncio
from unittest import mock
import ferroloop

async def main():
    loop = asyncio.get_running_loop()
    now = loop.time() + 500                                      # a clock set apart
    fired = []
    with mock.patch.object(loop, "time") as t:
        t.return_value = now
        loop.call_at(now + 3600, fired.append, "call_at")       # an hour from now
        h = loop.call_later(3600, fired.append, "call_later")
        later_when = h.when()
        t.return_value = now + 3600                              # "an hour later"
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    return fired, later_when - now

for make in (asyncio.new_event_loop, ferroloop.new_event_loop):
    with asyncio.Runner(loop_factory=make) as r:
        fired, rel = r.run(main())
        print(f"{type(r.get_loop()).__name__:24} fired after patching time forward: {fired}; "
              f"call_later(3600).when() - patched now = {rel:.3f}")
