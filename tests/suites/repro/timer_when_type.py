"""call_at() with an int deadline: the stdlib's TimerHandle keeps the object it was given
(TimerHandle.__init__: self._when = when), so handle._when and handle.when() are that int;
aiohttp's TimeoutHandle.start() passes ceil(loop.time() + timeout), an int, and its test
test_when_timeout_smaller_second_with_low_threshold asserts isinstance(handle._when, int)."""
import asyncio, math
import ferroloop

for make in (asyncio.new_event_loop, ferroloop.new_event_loop):
    loop = make()
    when = math.ceil(loop.time() + 0.1)
    h = loop.call_at(when, print)
    h2 = loop.call_later(1, print)
    print(f"{type(loop).__name__:24} call_at(int).when() -> {h.when()!r} ({type(h.when()).__name__}), "
          f"_when {type(getattr(h, '_when', None)).__name__}; call_later(1)._when type "
          f"{type(getattr(h2, '_when', None)).__name__}")
    h.cancel(); h2.cancel(); loop.close()
