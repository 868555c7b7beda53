"""unittest.IsolatedAsyncioTestCase and asyncio.run() in a suite unaware of ferroloop: with
`pytest -p ferroloop.pytest_plugin` they run on ferroloop (through the event-loop policy, on
3.11 and 3.12 as on 3.13, whose IsolatedAsyncioTestCase.loop_factory stays None)."""

import asyncio
import unittest

import ferroloop


class TestIsolated(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.setup_loop = asyncio.get_running_loop()
        assert isinstance(self.setup_loop, ferroloop.Loop)

    async def test_running_loop(self):
        assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)
        assert asyncio.get_running_loop() is self.setup_loop
        await asyncio.sleep(0.001)

    async def test_task_group(self):
        assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)
        async with asyncio.TaskGroup() as tg:
            t = tg.create_task(asyncio.sleep(0, result=42))
        self.assertEqual(t.result(), 42)

    def test_sync_method(self):
        self.assertTrue(True)


def test_asyncio_run():
    async def main():
        return isinstance(asyncio.get_running_loop(), ferroloop.Loop)

    assert asyncio.run(main())


def test_new_event_loop():
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, result=1)) == 1
    finally:
        loop.close()
