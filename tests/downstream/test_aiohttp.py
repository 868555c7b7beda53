"""aiohttp's web server and its ClientSession talking over 127.0.0.1, on the stock loop and on
ferroloop: plain and JSON requests, keep-alive, uploads and downloads larger than the socket
buffers (flow control both ways), a streaming response read chunk by chunk in lockstep, a
websocket echo, and 50 requests in flight at once."""

import asyncio
import contextlib
import hashlib
import json

import aiohttp
import pytest
from aiohttp import web

BIG = bytes(range(256)) * (4 * 1024 * 1024 // 256)  # 4 MiB, several socket buffers
BIG_SHA = hashlib.sha256(BIG).hexdigest()

ACKS = web.AppKey("acks", asyncio.Queue)
BARRIER = web.AppKey("barrier", dict)
WS_CLOSED = web.AppKey("ws_closed", asyncio.Event)


# --------------------------------------------------------------------------
# The server


async def text(request):
    return web.Response(text="hello from aiohttp", headers={"X-Downstream": "text"})


async def hello(request):
    return web.json_response(
        {"hello": request.match_info["name"], "query": dict(request.query)},
        headers={"X-Downstream": "hello"},
    )


async def echo(request):
    data = await request.json()
    return web.json_response({"echo": data, "method": request.method}, status=201)


async def upload(request):
    body = await request.read()
    return web.json_response({"len": len(body), "sha256": hashlib.sha256(body).hexdigest()})


async def download(request):
    return web.Response(body=BIG, content_type="application/octet-stream")


async def slow(request):
    await asyncio.sleep(float(request.query["s"]))
    return web.Response(text="late")


async def peer(request):
    # The client's address: the same port across requests means the connection was kept alive.
    host, port = request.transport.get_extra_info("peername")[:2]
    return web.json_response({"host": host, "port": port})


async def lockstep(request):
    # Each chunk is written only after the client has acknowledged the previous one, so the
    # response must really be streamed (a buffered one would time out).
    n = int(request.query["chunks"])
    acks = request.app[ACKS]
    resp = web.StreamResponse(headers={"Content-Type": "text/plain", "X-Downstream": "stream"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(n):
        await resp.write(f"chunk {i}\n".encode())
        got = await asyncio.wait_for(acks.get(), 5)
        assert got == i
    await resp.write_eof()
    return resp


async def barrier(request):
    # Answers only once `n` requests are in the handler at the same time.
    n = int(request.query["n"])
    state = request.app[BARRIER]
    state["arrived"] += 1
    index = state["arrived"]
    if state["arrived"] == n:
        state["all_in"].set()
    await asyncio.wait_for(state["all_in"].wait(), 10)
    return web.json_response({"index": index, "id": request.query["id"]})


async def websocket(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            if msg.data == "close":
                await ws.close(code=4001, message=b"bye")
                break
            await ws.send_str("echo: " + msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    request.app[WS_CLOSED].set()
    return ws


def make_app():
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[ACKS] = asyncio.Queue()
    app[BARRIER] = {"arrived": 0, "all_in": asyncio.Event()}
    app[WS_CLOSED] = asyncio.Event()
    app.add_routes([
        web.get("/text", text),
        web.get("/hello/{name}", hello),
        web.post("/echo", echo),
        web.post("/upload", upload),
        web.get("/download", download),
        web.get("/peer", peer),
        web.get("/slow", slow),
        web.get("/lockstep", lockstep),
        web.get("/barrier", barrier),
        web.get("/ws", websocket),
    ])
    return app


@contextlib.asynccontextmanager
async def serving():
    """An aiohttp server on 127.0.0.1 (a free port) and a client session; yields
    (session, base url, app, port). Everything is closed on exit."""
    app = make_app()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        assert host == "127.0.0.1" and port > 0
        async with aiohttp.ClientSession() as session:
            yield session, f"http://127.0.0.1:{port}", app, port
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------
# The tests


def test_get_text_and_json(run, not_listening):
    async def main():
        async with serving() as (session, url, app, port):
            async with session.get(url + "/text") as r:
                assert r.status == 200
                assert r.headers["X-Downstream"] == "text"
                assert r.headers["Content-Type"].startswith("text/plain")
                assert await r.text() == "hello from aiohttp"
            async with session.get(url + "/hello/ferro", params={"a": "1", "b": "two"}) as r:
                assert r.status == 200
                assert r.headers["X-Downstream"] == "hello"
                assert await r.json() == {"hello": "ferro", "query": {"a": "1", "b": "two"}}
            async with session.get(url + "/missing") as r:
                assert r.status == 404
                await r.read()
            async with session.post(url + "/text") as r:
                assert r.status == 405
                await r.read()
        return port

    not_listening(run(main))


def test_post_json_echo(run, not_listening):
    payload = {"name": "ferroloop", "numbers": list(range(100)), "nested": {"ok": True, "x": None},
               "text": "héllo ✓"}

    async def main():
        async with serving() as (session, url, app, port):
            async with session.post(url + "/echo", json=payload) as r:
                assert r.status == 201
                assert r.headers["Content-Type"].startswith("application/json")
                assert await r.json() == {"echo": payload, "method": "POST"}
            # an invalid body is the server's error, answered, not a broken connection
            async with session.post(url + "/echo", data=b"{not json",
                                    headers={"Content-Type": "application/json"}) as r:
                assert r.status == 500
                await r.read()
        return port

    not_listening(run(main))


def test_keep_alive_reuses_one_connection(run, not_listening):
    async def main():
        async with serving() as (session, url, app, port):
            peers = []
            for _ in range(5):
                async with session.get(url + "/peer") as r:
                    assert r.status == 200
                    peers.append(await r.json())
            assert len({p["port"] for p in peers}) == 1, peers
            assert peers[0]["host"] == "127.0.0.1"
        return port

    not_listening(run(main))


def test_large_upload_and_download(run, not_listening):
    async def main():
        async with serving() as (session, url, app, port):
            async with session.post(url + "/upload", data=BIG) as r:
                assert r.status == 200
                assert await r.json() == {"len": len(BIG), "sha256": BIG_SHA}

            async def chunks():  # a chunked upload from an async generator
                for i in range(0, len(BIG), 100_000):
                    yield BIG[i:i + 100_000]

            async with session.post(url + "/upload", data=chunks()) as r:
                assert r.status == 200
                assert await r.json() == {"len": len(BIG), "sha256": BIG_SHA}
            async with session.get(url + "/download") as r:
                assert r.status == 200
                assert int(r.headers["Content-Length"]) == len(BIG)
                body = await r.read()
            assert len(body) == len(BIG) and body == BIG
        return port

    not_listening(run(main))


def test_streaming_response_in_lockstep(run, not_listening):
    async def main():
        async with serving() as (session, url, app, port):
            async with session.get(url + "/lockstep", params={"chunks": "6"}) as r:
                assert r.status == 200
                assert r.headers["Transfer-Encoding"] == "chunked"
                assert r.headers["X-Downstream"] == "stream"
                for i in range(6):
                    line = await r.content.readline()
                    assert line == f"chunk {i}\n".encode()
                    app[ACKS].put_nowait(i)
                assert await r.content.read() == b""
        return port

    not_listening(run(main))


def test_websocket_echo(run, not_listening):
    async def main():
        async with serving() as (session, url, app, port):
            async with session.ws_connect(url + "/ws") as ws:
                await ws.send_str("hello")
                assert await ws.receive_str() == "echo: hello"
                await ws.send_bytes(b"\x00\x01\x02abc")
                assert await ws.receive_bytes() == b"cba\x02\x01\x00"
                for i in range(100):  # many small messages, sent before reading
                    await ws.send_str(f"m{i}")
                assert [await ws.receive_str() for _ in range(100)] == [
                    f"echo: m{i}" for i in range(100)]
                big = BIG[:1024 * 1024]
                await ws.send_bytes(big)
                assert await ws.receive_bytes() == big[::-1]
                await ws.send_json({"k": [1, 2, 3]})
                assert json.loads((await ws.receive_str())[len("echo: "):]) == {"k": [1, 2, 3]}
                await ws.send_str("close")  # the server closes with its own code
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.CLOSE, msg
                assert msg.data == 4001 and msg.extra == "bye"
                assert ws.closed
                assert ws.close_code == 4001
            await asyncio.wait_for(app[WS_CLOSED].wait(), 5)
        return port

    not_listening(run(main))


def test_websocket_client_closes(run, not_listening):
    async def main():
        async with serving() as (session, url, app, port):
            ws = await session.ws_connect(url + "/ws")
            await ws.send_str("one")
            assert await ws.receive_str() == "echo: one"
            await ws.close()
            assert ws.closed and ws.close_code == aiohttp.WSCloseCode.OK
            await asyncio.wait_for(app[WS_CLOSED].wait(), 5)
        return port

    not_listening(run(main))


def test_50_concurrent_requests(run, not_listening):
    n = 50

    async def main():
        async with serving() as (session, url, app, port):
            async def one(i):
                async with session.get(url + "/barrier", params={"n": str(n), "id": str(i)}) as r:
                    assert r.status == 200
                    return await r.json()

            # every handler waits until all 50 are in: the requests are really concurrent
            answers = await asyncio.gather(*[one(i) for i in range(n)])
            assert [a["id"] for a in answers] == [str(i) for i in range(n)]
            assert sorted(a["index"] for a in answers) == list(range(1, n + 1))
            assert app[BARRIER]["arrived"] == n

            async def post(i):
                async with session.post(url + "/echo", json={"i": i, "pad": "x" * i}) as r:
                    assert r.status == 201
                    return (await r.json())["echo"]

            echoes = await asyncio.gather(*[post(i) for i in range(n)])
            assert echoes == [{"i": i, "pad": "x" * i} for i in range(n)]
        return port

    not_listening(run(main))


def test_client_timeout_and_server_close(run, not_listening):
    # A request to a server that was just closed is refused; a read timeout fires on time.
    async def main():
        async with serving() as (session, url, app, port):
            timeout = aiohttp.ClientTimeout(total=0.2)
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(asyncio.TimeoutError):
                await session.get(url + "/slow", params={"s": "1.0"}, timeout=timeout)
            elapsed = asyncio.get_running_loop().time() - t0
            assert 0.15 <= elapsed < 0.9, elapsed
            async with session.get(url + "/text") as r:  # the session is still usable
                assert await r.text() == "hello from aiohttp"
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorError):
                await session.get(url + "/text")
        return port

    not_listening(run(main))
