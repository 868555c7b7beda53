"""`ferroloop.run()` called inside a running loop (as in a notebook or a request handler):
the stdlib's RuntimeError, with what to do instead. `python examples/diagnostics/nested_run.py`."""

import asyncio

import ferroloop


async def helper():
    return 42


async def main():
    coro = helper()
    try:
        ferroloop.run(coro)
    except RuntimeError as exc:
        print(f"RuntimeError: {exc}")
    finally:
        coro.close()


ferroloop.run(main())
