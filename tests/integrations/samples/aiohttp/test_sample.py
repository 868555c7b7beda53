"""A suite using aiohttp's own pytest plugin (`loop`, `aiohttp_client`), unaware of ferroloop:
with `pytest -p ferroloop.pytest_plugin` the `loop` fixture is a ferroloop loop."""

import asyncio

from aiohttp import web

import ferroloop


async def hello(request):
    loop = asyncio.get_running_loop()
    return web.json_response({"loop": f"{type(loop).__module__}.{type(loop).__qualname__}"})


def make_app():
    app = web.Application()
    app.router.add_get("/", hello)
    return app


def test_loop_fixture(loop):
    assert isinstance(loop, ferroloop.Loop)


async def test_client_and_server(aiohttp_client):
    assert isinstance(asyncio.get_running_loop(), ferroloop.Loop)
    client = await aiohttp_client(make_app())
    resp = await client.get("/")
    assert resp.status == 200
    assert (await resp.json())["loop"] == "ferroloop._loop.Loop"


async def test_running_loop(loop):
    assert asyncio.get_running_loop() is loop
    assert isinstance(loop, ferroloop.Loop)
