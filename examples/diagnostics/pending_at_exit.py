"""A task still pending when `run()` returns: cancelled by asyncio.run's cleanup, silently on the
stock loop; ferroloop's debug mode reports it with where it was created.
`python -m ferroloop --debug examples/diagnostics/pending_at_exit.py`."""

import asyncio


async def heartbeat():
    while True:
        await asyncio.sleep(1)


async def main():
    asyncio.create_task(heartbeat(), name="heartbeat")  # never awaited or cancelled
    await asyncio.sleep(0.01)


asyncio.run(main())
