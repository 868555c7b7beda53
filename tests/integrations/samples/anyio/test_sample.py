"""An anyio suite (anyio's own pytest plugin), unaware of ferroloop: with
`pytest -p ferroloop.pytest_plugin` its "asyncio" backend runs on ferroloop."""

import asyncio

import anyio
import pytest

import ferroloop

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", pytest.param(("asyncio", {"debug": False}), id="asyncio+opts")])
def anyio_backend(request):
    return request.param


async def test_running_loop(anyio_backend):
    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)
    await anyio.sleep(0.001)


async def test_task_group_and_streams(anyio_backend):
    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)
    send, receive = anyio.create_memory_object_stream(1)
    got = []

    async def consumer():
        async with receive:
            async for item in receive:
                got.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        async with send:
            for i in range(3):
                await send.send(i)
    assert got == [0, 1, 2]


async def test_tcp_over_loopback(anyio_backend):
    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)

    async def handle(client):
        async with client:
            await client.send(await client.receive())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        with anyio.fail_after(5):
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(b"ping")
                assert await client.receive() == b"ping"
        tg.cancel_scope.cancel()
