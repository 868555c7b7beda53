"""loop.getaddrinfo / loop.getnameinfo: results identical to socket.getaddrinfo /
socket.getnameinfo on both loops, and ferroloop's fast path for numeric hosts (no executor).

Every host used here is numeric or in /etc/hosts ("localhost"): no test needs DNS.
"""

import asyncio
import itertools
import logging
import socket

import pytest

AF_UNSPEC, AF_INET, AF_INET6 = socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6
STREAM, DGRAM, RAW = socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW
PASSIVE, CANON, NUMHOST = socket.AI_PASSIVE, socket.AI_CANONNAME, socket.AI_NUMERICHOST
NUMSERV, V4MAPPED, ALL = socket.AI_NUMERICSERV, socket.AI_V4MAPPED, socket.AI_ALL
ADDRCONFIG = socket.AI_ADDRCONFIG
NI_NUM = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV

# (host, port, family, type, proto, flags)
GAI_CASES = [
    # IPv4 literals
    ("127.0.0.1", 80, 0, 0, 0, 0),
    ("127.0.0.1", 80, 0, STREAM, 0, 0),
    ("127.0.0.1", 80, AF_INET, DGRAM, 0, 0),
    ("127.0.0.1", None, 0, 0, 0, 0),
    ("127.0.0.1", 0, 0, STREAM, 0, PASSIVE),
    ("0.0.0.0", 8080, AF_INET, STREAM, 0, PASSIVE),
    ("255.255.255.255", 65535, 0, DGRAM, 0, 0),
    ("192.0.2.1", "443", 0, STREAM, socket.IPPROTO_TCP, 0),
    ("192.0.2.1", b"443", 0, 0, socket.IPPROTO_UDP, 0),
    ("192.0.2.1", "0080", 0, STREAM, 0, NUMSERV),
    ("192.0.2.1", 80, 0, STREAM, socket.IPPROTO_UDP, 0),  # EAI_SERVICE / EAI_SOCKTYPE
    (b"127.0.0.1", 80, 0, STREAM, 0, 0),
    ("127.0.0.1", 80, 0, STREAM, 0, NUMHOST | NUMSERV),
    ("127.0.0.1", 80, AF_INET6, STREAM, 0, 0),  # EAI_ADDRFAMILY
    ("127.0.0.1", 80, AF_INET6, STREAM, 0, V4MAPPED),
    ("127.0.0.1", 80, AF_INET6, 0, 0, V4MAPPED | ALL),
    ("127.0.0.1", 80, socket.AF_UNIX, 0, 0, 0),  # EAI_FAMILY
    ("127.0.0.1", 80, 12345, 0, 0, 0),
    ("127.0.0.1", 80, 0, 12345, 0, 0),  # EAI_SOCKTYPE
    ("127.0.0.1", 80, 0, RAW, 0, 0),  # EAI_SERVICE
    ("127.0.0.1", None, 0, RAW, 0, 0),
    ("127.0.0.1", 80, 0, 0, 0, 0x4000),  # an unknown flag: EAI_BADFLAGS (slow path)
    ("127.0.0.1", 80, 0, STREAM, 0, CANON),  # canonname (slow path)
    ("127.0.0.1", 80, 0, STREAM, 0, ADDRCONFIG),  # (slow path)
    # IPv6 literals, with and without scope ids
    ("::1", 80, 0, 0, 0, 0),
    ("::1", "80", AF_INET6, STREAM, 0, 0),
    ("::1", 80, AF_INET, STREAM, 0, 0),  # EAI_ADDRFAMILY
    ("::", 0, AF_INET6, STREAM, 0, PASSIVE),
    ("::ffff:192.0.2.1", 80, 0, STREAM, 0, 0),
    ("::ffff:192.0.2.1", 80, AF_INET, STREAM, 0, 0),  # v4-mapped with AF_INET: an AF_INET
    ("2001:DB8::1", 80, 0, STREAM, 0, 0),
    ("2001:db8:0:0:0:0:0:1", 80, 0, DGRAM, 0, 0),
    (b"::1", b"80", 0, STREAM, 0, 0),
    ("fe80::1%lo", 80, 0, STREAM, 0, 0),
    ("fe80::1%1", 80, AF_INET6, STREAM, 0, 0),
    ("fe80::1%4294967295", 80, 0, STREAM, 0, 0),
    ("fe80::1%no-such-if", 80, 0, STREAM, 0, 0),  # EAI_NONAME
    ("fe80::1%", 80, 0, STREAM, 0, 0),
    ("fe80::1%lo%lo", 80, 0, STREAM, 0, 0),
    ("2001:db8::1%1", 80, 0, STREAM, 0, 0),
    ("fe80::1%" + "x" * 70, 80, 0, STREAM, 0, 0),  # the idna codec: UnicodeError
    ("::1", 80, 0, STREAM, 0, CANON),
    # ports: edge values
    ("127.0.0.1", 65535, 0, STREAM, 0, 0),
    ("127.0.0.1", 65536, 0, STREAM, 0, 0),  # (slow path)
    ("127.0.0.1", -1, 0, STREAM, 0, 0),  # (slow path)
    ("127.0.0.1", "-1", 0, STREAM, 0, 0),
    ("127.0.0.1", "65536", 0, STREAM, 0, 0),
    ("127.0.0.1", " 80", 0, STREAM, 0, 0),
    ("127.0.0.1", "", 0, STREAM, 0, 0),
    ("127.0.0.1", 2**70, 0, STREAM, 0, 0),  # OverflowError
    ("127.0.0.1", True, 0, STREAM, 0, 0),  # OSError('Int or String expected')
    ("127.0.0.1", 80.0, 0, STREAM, 0, 0),
    ("127.0.0.1", "http", 0, STREAM, 0, 0),  # a service name (slow path)
    ("127.0.0.1", "no-such-service", 0, STREAM, 0, 0),
    ("127.0.0.1", "80", 0, STREAM, 0, NUMSERV),
    ("127.0.0.1", "http", 0, STREAM, 0, NUMSERV),  # EAI_NONAME
    # not numeric: the executor
    ("localhost", 80, AF_INET, STREAM, 0, 0),
    ("localhost", 80, AF_INET, STREAM, 0, NUMHOST),  # EAI_NONAME
    (None, 80, AF_INET, STREAM, 0, PASSIVE),
    (None, 80, 0, STREAM, 0, 0),
    (None, None, 0, 0, 0, 0),  # EAI_NONAME
    ("", 80, AF_INET, STREAM, 0, 0),
    ("127.1", 80, 0, STREAM, 0, 0),  # legacy IPv4 forms: numeric to libc, slow path here
    ("0x7f.0.0.1", 80, 0, STREAM, 0, 0),
    ("1.2.3", 80, 0, STREAM, 0, 0),
    ("127.0.0.1\0", 80, 0, STREAM, 0, 0),
    ("127.0.0.1", 80, "x", 0, 0, 0),  # TypeError
    ("127.0.0.1", 80, 0, 0, 0, None),
    (127, 80, 0, 0, 0, 0),  # OSError: argument 1 must be str or None
    (bytearray(b"127.0.0.1"), 80, 0, 0, 0, 0),
]


def _ids(cases):
    return [repr(c)[:60] for c in cases]


def _call(func, *args, **kwargs):
    """('ok', result) or ('err', exception type, args)."""
    try:
        return ("ok", func(*args, **kwargs))
    except Exception as exc:
        return ("err", type(exc), exc.args)


async def _acall(coro_func, *args, **kwargs):
    try:
        return ("ok", await coro_func(*args, **kwargs))
    except Exception as exc:
        return ("err", type(exc), exc.args)


# --------------------------------------------------------------------------------------------
# Identical to socket.getaddrinfo, on both loops


@pytest.mark.parametrize("case", GAI_CASES, ids=_ids(GAI_CASES))
def test_getaddrinfo_matches_socket(loop, case):
    host, port, family, type_, proto, flags = case
    expected = _call(socket.getaddrinfo, host, port, family, type_, proto, flags)
    got = loop.run_until_complete(
        _acall(loop.getaddrinfo, host, port, family=family, type=type_, proto=proto, flags=flags)
    )
    assert got == expected


# Every combination of these, for numeric hosts (all on the fast path except the ones with
# AI_CANONNAME): one loop run per loop.
HOSTS = ["127.0.0.1", "::1", "0.0.0.0", "::", "::ffff:10.0.0.1", "fe80::1%lo", b"10.1.2.3"]
PORTS = [None, 0, 443, "8080", b"53"]
FAMILIES = [AF_UNSPEC, AF_INET, AF_INET6]
TYPES = [0, STREAM, DGRAM]
PROTOS = [0, socket.IPPROTO_TCP, socket.IPPROTO_UDP]
FLAGS = [0, PASSIVE, CANON, NUMHOST, NUMSERV, V4MAPPED, V4MAPPED | ALL, PASSIVE | NUMHOST]


def test_getaddrinfo_matches_socket_combinations(loop):
    async def main():
        mismatches = []
        n = 0
        for combo in itertools.product(HOSTS, PORTS, FAMILIES, TYPES, PROTOS, FLAGS):
            host, port, family, type_, proto, flags = combo
            expected = _call(socket.getaddrinfo, *combo)
            got = await _acall(
                loop.getaddrinfo, host, port, family=family, type=type_, proto=proto,
                flags=flags,
            )
            n += 1
            if got != expected:
                mismatches.append((combo, got, expected))
        return n, mismatches

    n, mismatches = loop.run_until_complete(main())
    assert n == 7 * 5 * 3 * 3 * 3 * 8
    assert mismatches == []


def test_getaddrinfo_results_are_socket_types(loop):
    # Enum members, exactly as socket.getaddrinfo returns them.
    (info,) = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, type=STREAM))
    assert type(info[0]) is socket.AddressFamily and type(info[1]) is socket.SocketKind


def test_getaddrinfo_keyword_only(loop):
    coro_func = loop.getaddrinfo
    with pytest.raises(TypeError):
        loop.run_until_complete(coro_func("127.0.0.1", 80, AF_INET))


def test_getaddrinfo_on_closed_loop(loop):
    loop.close()
    coro = loop.getaddrinfo("127.0.0.1", 80)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        coro.send(None)
    coro.close()


def test_getaddrinfo_after_executor_shutdown(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
            loop.run_until_complete(loop.getaddrinfo(host, 80))


def test_getaddrinfo_debug_logs(loop, caplog):
    loop.set_debug(True)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        res = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, type=STREAM))
    assert res == socket.getaddrinfo("127.0.0.1", 80, type=STREAM)
    msgs = [r.getMessage() for r in caplog.records if "address info" in r.getMessage()]
    assert msgs[0] == "Get address info 127.0.0.1:80, type=<SocketKind.SOCK_STREAM: 1>"
    assert msgs[1].startswith(
        "Getting address info 127.0.0.1:80, type=<SocketKind.SOCK_STREAM: 1> took "
    )
    assert msgs[1].endswith(f"ms: {res!r}")
    assert len(msgs) == 2
    loop.set_debug(False)


# --------------------------------------------------------------------------------------------
# getnameinfo

NI_CASES = [
    (("127.0.0.1", 80), NI_NUM),
    (("127.0.0.1", 80), NI_NUM | socket.NI_DGRAM),
    (("127.0.0.1", 80), NI_NUM | socket.NI_NAMEREQD),  # EAI_NONAME, without a lookup
    (("127.0.0.1", 80), NI_NUM | socket.NI_NOFQDN),
    (("::1", 443, 0, 0), NI_NUM),
    (("::1", 443), NI_NUM),
    (("fe80::1", 443, 0, 1), NI_NUM),
    (("fe80::1%lo", 443, 0, 0), NI_NUM),
    (("::ffff:10.0.0.1", 53, 0, 0), NI_NUM),
    (("127.0.0.1", 80, 0, 0), NI_NUM),  # OSError: IPv4 sockaddr must be 2 tuple
    (("127.0.0.1", 70000), NI_NUM),  # OverflowError
    (("127.0.0.1", "80"), NI_NUM),  # TypeError
    (("127.0.0.1",), NI_NUM),
    (["127.0.0.1", 80], NI_NUM),
    (("localhost", 80), NI_NUM),  # EAI_NONAME (slow path)
    (("127.0.0.1", 80), socket.NI_NUMERICHOST),  # the service name: slow path
    # a reverse lookup (slow path), answered by /etc/hosts ("files" comes before "dns")
    (("127.0.0.1", 80), socket.NI_NUMERICSERV | socket.NI_NAMEREQD),
    (("127.0.0.1", 80), NI_NUM | 0x4000),  # unknown flag: slow path
]


@pytest.mark.parametrize("case", NI_CASES, ids=_ids(NI_CASES))
def test_getnameinfo_matches_socket(loop, case):
    sockaddr, flags = case
    expected = _call(socket.getnameinfo, sockaddr, flags)
    got = loop.run_until_complete(_acall(loop.getnameinfo, sockaddr, flags))
    assert got == expected


# --------------------------------------------------------------------------------------------
# ferroloop's fast path


def _fast_cases():
    from ferroloop import _resolve

    return [c for c in GAI_CASES if _resolve.is_numeric_getaddrinfo(c[0], c[1], c[5])]


def test_ferroloop_fast_path_rule():
    from ferroloop._resolve import is_numeric_getaddrinfo as fast

    for host in ("127.0.0.1", b"127.0.0.1", "::1", "fe80::1%lo", "fe80::1%", "::ffff:1.2.3.4"):
        assert fast(host, 80, 0), host
    for host in (None, "", "localhost", b"localhost", "127.1", "0x7f.0.0.1", "1.2.3",
                 "127.0.0.1%lo", "127.0.0.1\0", "127.0.0.1 ", " ::1", "[::1]", "\udc80",
                 "١٢٧.0.0.1", b"\xff", bytearray(b"127.0.0.1"), 2130706433):
        assert not fast(host, 80, 0), host
    for port in (None, 0, 80, 65535, "80", "0080", b"80", "65535"):
        assert fast("127.0.0.1", port, 0), port
    for port in (-1, 65536, 2**63 - 1, "-1", "+80", " 80", "80 ", "", "65536", "1" * 40,
                 "http", b"http", "٣", True, 80.0):
        assert not fast("127.0.0.1", port, 0), port
    for flags in (0, PASSIVE, NUMHOST, NUMSERV, V4MAPPED | ALL, PASSIVE | NUMHOST | NUMSERV):
        assert fast("127.0.0.1", 80, flags), flags
    for flags in (CANON, ADDRCONFIG, PASSIVE | CANON, 0x4000, -1, None, "0"):
        assert not fast("127.0.0.1", 80, flags), flags


def test_ferroloop_fast_path_cases_are_numeric_to_libc():
    # Evidence for the rule: for every fast-path case, forbidding libc any host or service
    # lookup (AI_NUMERICHOST|AI_NUMERICSERV) changes nothing, so libc never consulted a name
    # service for them.
    cases = _fast_cases()
    assert len(cases) > 30
    for host, port, family, type_, proto, flags in cases:
        assert _call(socket.getaddrinfo, host, port, family, type_, proto, flags) == _call(
            socket.getaddrinfo, host, port, family, type_, proto, flags | NUMHOST | NUMSERV
        ), (host, port, family, type_, proto, flags)


def test_ferroloop_fast_path_uses_no_executor(ferroloop_mod):
    from ferroloop._resolve import is_numeric_getnameinfo

    ni_cases = [c for c in NI_CASES if is_numeric_getnameinfo(*c)]
    assert len(ni_cases) == 12
    loop = ferroloop_mod.new_event_loop()
    try:
        calls = []

        def no_executor(*args):
            calls.append(args)
            raise AssertionError(f"run_in_executor{args!r}")

        loop.run_in_executor = no_executor

        async def main():
            results = []
            for host, port, family, type_, proto, flags in _fast_cases():
                results.append(await _acall(
                    loop.getaddrinfo, host, port, family=family, type=type_, proto=proto,
                    flags=flags,
                ))
            for sockaddr, flags in ni_cases:
                results.append(await _acall(loop.getnameinfo, sockaddr, flags))
            return results

        results = loop.run_until_complete(main())
        assert calls == []
        assert loop._default_executor is None
        assert [r[0] for r in results].count("ok") > 30
    finally:
        loop.close()


def test_ferroloop_fast_path_does_not_suspend(ferroloop_mod):
    loop = ferroloop_mod.new_event_loop()
    try:
        coro = loop.getaddrinfo("::1", 80, type=STREAM)
        with pytest.raises(StopIteration) as exc:
            coro.send(None)
        assert exc.value.value == socket.getaddrinfo("::1", 80, type=STREAM)
        coro = loop.getaddrinfo("::1", 80, family=AF_INET)
        with pytest.raises(socket.gaierror) as exc:
            coro.send(None)
        assert exc.value.errno == socket.EAI_ADDRFAMILY
        coro = loop.getnameinfo(("::1", 80), NI_NUM)
        with pytest.raises(StopIteration) as exc:
            coro.send(None)
        assert exc.value.value == ("::1", "80")
        assert loop._default_executor is None
    finally:
        loop.close()


@pytest.mark.parametrize(
    "call",
    [
        ("getaddrinfo", ("localhost", 80), {"type": STREAM}),
        ("getaddrinfo", (None, 80), {"flags": PASSIVE}),
        ("getaddrinfo", ("127.0.0.1", "http"), {}),
        ("getaddrinfo", ("127.0.0.1", 80), {"flags": CANON}),
        ("getaddrinfo", ("127.1", 80), {}),
        ("getnameinfo", (("127.0.0.1", 80), socket.NI_NUMERICHOST), {}),
        ("getnameinfo", (("localhost", 80), NI_NUM), {}),
    ],
    ids=lambda c: f"{c[0]}{c[1]!r}{c[2]!r}",
)
def test_ferroloop_slow_path_uses_executor(ferroloop_mod, call):
    name, args, kwargs = call
    loop = ferroloop_mod.new_event_loop()
    try:
        calls = []
        real = loop.run_in_executor

        def spy(executor, func, *fargs):
            calls.append((executor, func, fargs))
            return real(executor, func, *fargs)

        loop.run_in_executor = spy
        got = loop.run_until_complete(_acall(getattr(loop, name), *args, **kwargs))
        assert got == _call(getattr(socket, name), *args, **kwargs)
        assert len(calls) == 1 and calls[0][0] is None
        assert loop._default_executor is not None
    finally:
        loop.close()


def test_ferroloop_debug_fast_path_logs_on_loop_thread(ferroloop_mod, caplog):
    loop = ferroloop_mod.new_event_loop()
    try:
        loop.set_debug(True)
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, flags=PASSIVE))
        records = [r for r in caplog.records if "address info" in r.getMessage()]
        assert [r.getMessage().split(" took ")[0] for r in records] == [
            "Get address info 127.0.0.1:80, flags=<AddressInfo.AI_PASSIVE: 1>",
            "Getting address info 127.0.0.1:80, flags=<AddressInfo.AI_PASSIVE: 1>",
        ]
        assert all(r.threadName == "MainThread" for r in records)
        assert loop._default_executor is None
        loop.set_debug(False)
    finally:
        loop.close()


def test_ferroloop_create_connection_numeric_host(ferroloop_mod):
    # create_connection resolves through loop.getaddrinfo (when _ipaddr_info cannot).
    loop = ferroloop_mod.new_event_loop()
    try:

        async def main():
            server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            async with server:
                # type=0 defeats base_events._ipaddr_info: this goes through getaddrinfo.
                infos = await loop.getaddrinfo("127.0.0.1", str(port))
                reader, writer = await asyncio.open_connection("127.0.0.1", str(port))
                assert await reader.read() == b""
                writer.close()
                await writer.wait_closed()
            return infos

        infos = loop.run_until_complete(main())
        assert infos[0][4][0] == "127.0.0.1"
        assert loop._default_executor is None
    finally:
        loop.close()
