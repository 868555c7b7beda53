"""uvicorn serving a plain ASGI app in the loop under test, hit by httpx's AsyncClient over
127.0.0.1: on the stock loop and on ferroloop, with uvicorn's two HTTP implementations
(httptools, the C parser, and h11, pure Python). Plain GETs, request bodies (one piece and
chunked, larger than uvicorn's flow-control high-water mark), a streaming response read in
lockstep, keep-alive, concurrent requests, and a clean shutdown."""

import asyncio
import contextlib
import hashlib
import json
import logging
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn

BIG = bytes(range(256)) * (4 * 1024 * 1024 // 256)  # 4 MiB: uvicorn pauses reading past 64 KiB
BIG_SHA = hashlib.sha256(BIG).hexdigest()

HTTP_IMPLS = ("httptools", "h11")


@pytest.fixture(params=HTTP_IMPLS, ids=HTTP_IMPLS)
def http_impl(request):
    return request.param


class App:
    """A plain ASGI 3 application (no framework) with a little state the tests can reach."""

    def __init__(self):
        self.acks = asyncio.Queue()
        self.arrived = 0
        self.all_in = asyncio.Event()

    async def __call__(self, scope, receive, send):
        assert scope["type"] == "http", scope["type"]
        path, method = scope["path"], scope["method"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        if path == "/" and method == "GET":
            await self.respond(send, 200, b"hello from uvicorn", b"text/plain",
                               [(b"x-downstream", b"root")])
        elif path == "/info":
            await self.respond_json(send, {
                "http_version": scope["http_version"],
                "client": list(scope["client"]),
                "server": list(scope["server"]),
                "query": query,
                "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            })
        elif path == "/upload" and method == "POST":
            digest, size, pieces = hashlib.sha256(), 0, 0
            while True:
                message = await receive()
                assert message["type"] == "http.request", message
                digest.update(message["body"])
                size += len(message["body"])
                pieces += 1
                if not message.get("more_body", False):
                    break
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            await self.respond_json(send, {
                "len": size, "sha256": digest.hexdigest(), "pieces": pieces,
                "content_length": headers.get("content-length"),
                "transfer_encoding": headers.get("transfer-encoding"),
            }, status=201)
        elif path == "/stream":
            # Each chunk only after the client acknowledged the previous one.
            n = int(query["chunks"])
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            for i in range(n):
                await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(),
                            "more_body": True})
                got = await asyncio.wait_for(self.acks.get(), 5)
                assert got == i
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif path == "/barrier":
            n = int(query["n"])
            self.arrived += 1
            index = self.arrived
            if self.arrived == n:
                self.all_in.set()
            await asyncio.wait_for(self.all_in.wait(), 10)
            await self.respond_json(send, {"index": index, "id": query["id"]})
        elif path == "/download":
            await self.respond(send, 200, BIG, b"application/octet-stream")
        else:
            await self.respond(send, 404, b"not found", b"text/plain")

    @staticmethod
    async def respond(send, status, body, content_type, extra=()):
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
            *extra]})
        await send({"type": "http.response.body", "body": body})

    async def respond_json(self, send, obj, status=200):
        await self.respond(send, status, json.dumps(obj).encode(), b"application/json")


@contextlib.asynccontextmanager
async def serving(http_impl):
    """uvicorn in a task of the running loop, on 127.0.0.1 (a free port), and an httpx client;
    yields (client, app, port). On exit: the client is closed, uvicorn is told to exit and its
    serve() task must end."""
    app = App()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="none", lifespan="off",
                            http=http_impl, ws="none", log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        while not server.started:
            assert not task.done(), f"uvicorn.Server.serve() ended before it started: {task!r}"
            await asyncio.sleep(0.01)
        assert len(server.servers) == 1
        sock = server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False,
                                     timeout=10) as client:
            yield client, app, port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)  # re-raises whatever serve() raised
    assert not server.servers[0].is_serving()
    assert not server.server_state.connections, server.server_state.connections


@pytest.fixture(autouse=True)
def _quiet_uvicorn():
    # log_config=None leaves logging alone; keep uvicorn's own loggers at warning
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def test_get(run, http_impl, not_listening):
    async def main():
        async with serving(http_impl) as (client, app, port):
            r = await client.get("/")
            assert r.status_code == 200
            assert r.text == "hello from uvicorn"
            assert r.headers["content-type"] == "text/plain"
            assert r.headers["x-downstream"] == "root"
            assert r.headers["server"] == "uvicorn"
            assert r.http_version == "HTTP/1.1"

            r = await client.get("/info", params={"q": "ferro", "n": "3"},
                                 headers={"X-Custom": "yes"})
            assert r.status_code == 200
            info = r.json()
            assert info["http_version"] == "1.1"
            assert info["query"] == {"q": "ferro", "n": "3"}
            assert info["headers"]["x-custom"] == "yes"
            assert info["server"] == ["127.0.0.1", port]
            assert info["client"][0] == "127.0.0.1"

            r = await client.get("/nope")
            assert r.status_code == 404 and r.text == "not found"
        return port

    not_listening(run(main))


def test_keep_alive(run, http_impl, not_listening):
    async def main():
        async with serving(http_impl) as (client, app, port):
            clients = set()
            for _ in range(5):
                r = await client.get("/info")
                assert r.status_code == 200
                clients.add(tuple(r.json()["client"]))
            assert len(clients) == 1, clients  # one connection, kept alive
        return port

    not_listening(run(main))


def test_upload(run, http_impl, not_listening):
    async def main():
        async with serving(http_impl) as (client, app, port):
            r = await client.post("/upload", content=b"small body")
            assert r.status_code == 201
            small = r.json()
            assert small["len"] == 10
            assert small["sha256"] == hashlib.sha256(b"small body").hexdigest()
            assert small["content_length"] == "10"

            r = await client.post("/upload", content=BIG)
            assert r.status_code == 201
            big = r.json()
            assert (big["len"], big["sha256"]) == (len(BIG), BIG_SHA)
            assert big["content_length"] == str(len(BIG))
            assert big["pieces"] > 1  # delivered in pieces, with flow control

            async def chunks():  # no length: chunked transfer encoding
                for i in range(0, len(BIG), 100_000):
                    yield BIG[i:i + 100_000]
                    await asyncio.sleep(0)

            r = await client.post("/upload", content=chunks())
            assert r.status_code == 201
            chunked = r.json()
            assert (chunked["len"], chunked["sha256"]) == (len(BIG), BIG_SHA)
            assert chunked["transfer_encoding"] == "chunked"
            assert chunked["content_length"] is None
        return port

    not_listening(run(main))


def test_download(run, http_impl, not_listening):
    async def main():
        async with serving(http_impl) as (client, app, port):
            r = await client.get("/download")
            assert r.status_code == 200
            assert int(r.headers["content-length"]) == len(BIG)
            assert len(r.content) == len(BIG) and r.content == BIG
        return port

    not_listening(run(main))


def test_streaming_response_in_lockstep(run, http_impl, not_listening):
    async def main():
        async with serving(http_impl) as (client, app, port):
            async with client.stream("GET", "/stream", params={"chunks": "6"}) as r:
                assert r.status_code == 200
                assert r.headers["transfer-encoding"] == "chunked"
                buf, lines = b"", []
                async for piece in r.aiter_raw():
                    buf += piece
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        assert line == f"chunk {len(lines)}".encode()
                        app.acks.put_nowait(len(lines))
                        lines.append(line)
                assert buf == b""
                assert len(lines) == 6
        return port

    not_listening(run(main))


def test_concurrent_requests(run, http_impl, not_listening):
    n = 20

    async def main():
        async with serving(http_impl) as (client, app, port):
            # every request waits in the app until all are in: really concurrent connections
            rs = await asyncio.gather(*[
                client.get("/barrier", params={"n": str(n), "id": str(i)}) for i in range(n)])
            assert [r.status_code for r in rs] == [200] * n
            assert [r.json()["id"] for r in rs] == [str(i) for i in range(n)]
            assert sorted(r.json()["index"] for r in rs) == list(range(1, n + 1))

            payloads = [bytes([i]) * (1000 * (i + 1)) for i in range(n)]
            rs = await asyncio.gather(*[client.post("/upload", content=p) for p in payloads])
            assert [r.json()["sha256"] for r in rs] == [
                hashlib.sha256(p).hexdigest() for p in payloads]
        return port

    not_listening(run(main))


def test_shutdown_with_idle_keep_alive_connection(run, http_impl, not_listening):
    # uvicorn must close a kept-alive idle connection at shutdown; the client then sees it gone.
    async def main():
        async with serving(http_impl) as (client, app, port):
            r = await client.get("/")
            assert r.status_code == 200
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert await reader.readexactly(len(b"hello from uvicorn")) == b"hello from uvicorn"
        # serving() waited for uvicorn's shutdown: the raw connection was closed by the server
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
        return port

    not_listening(run(main))
