"""A blocking call inside a coroutine: `python -m ferroloop --debug examples/diagnostics/blocking.py`
names the line while the loop is blocked."""

import asyncio
import time


async def fetch(url):
    time.sleep(0.3)  # a blocking call inside a coroutine
    return url


async def main():
    await asyncio.gather(asyncio.create_task(fetch("a"), name="fetch-a"), asyncio.sleep(0.1))


asyncio.run(main())
