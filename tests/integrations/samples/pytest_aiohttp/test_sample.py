"""A pytest-aiohttp suite (on pytest-asyncio, asyncio_mode = auto), unaware of ferroloop: with
`pytest -p ferroloop.pytest_plugin` the app, the test client and the test run on ferroloop."""

import asyncio

from aiohttp import web

import ferroloop


async def hello(request):
    loop = asyncio.get_running_loop()
    return web.json_response({"loop": f"{type(loop).__module__}.{type(loop).__qualname__}"})


async def test_client_and_server(aiohttp_client):
    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)
    app = web.Application()
    app.router.add_get("/", hello)
    client = await aiohttp_client(app)
    resp = await client.get("/")
    assert resp.status == 200
    assert (await resp.json())["loop"] == "ferroloop._loop.Loop"


async def test_raw_server(aiohttp_raw_server, aiohttp_client):
    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)

    async def handler(request):
        return web.Response(text=type(asyncio.get_running_loop()).__module__)

    client = await aiohttp_client(await aiohttp_raw_server(handler))
    resp = await client.get("/")
    assert await resp.text() == "ferroloop._loop"
