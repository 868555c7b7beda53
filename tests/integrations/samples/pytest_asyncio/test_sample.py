"""A pytest-asyncio suite, unaware of ferroloop: `pytest -p ferroloop.pytest_plugin` (or
`--ferroloop`) must run each of its tests and fixtures on a ferroloop loop."""

import asyncio

import pytest
import pytest_asyncio

import ferroloop


@pytest_asyncio.fixture
async def server():
    async def handle(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


@pytest.mark.asyncio
async def test_running_loop():
    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)
    await asyncio.sleep(0.001)


@pytest.mark.asyncio
async def test_echo_over_loopback(server):
    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server), 5)
    writer.write(b"ping\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"ping\n"
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scoped_loop_first():
    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scoped_loop_second():
    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)


def test_sync_test_runs_no_loop():
    assert asyncio.get_event_loop_policy() is not None
