"""ferroloop runs under valgrind (and other tools that rewrite the process's auxiliary vector).

rustix finds the vDSO's `clock_gettime` through the auxiliary vector. Reading it from
`/proc/self/auxv` (rustix's default) gives the kernel's vDSO address, which valgrind does not map
into the program it runs: the first `loop.time()` then crashed with SIGSEGV inside
`rustix::backend::param::auxv::check_elf_base`. With rustix's `use-libc-auxv` feature the address
comes from glibc's `getauxval`, which sees valgrind's adjusted vector (no vDSO: rustix falls back
to the syscall). This runs a small program on ferroloop under `valgrind --tool=none`.
"""

import shutil
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import asyncio, socket, ferroloop

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(0.01)
        a, b = socket.socketpair()
        a.setblocking(False); b.setblocking(False)
        await loop.sock_sendall(a, b"ping")
        data = await loop.sock_recv(b, 4)
        a.close(); b.close()
        return loop.time() > t0, data

    print(ferroloop.run(main()))
""")


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_runs_under_valgrind():
    p = subprocess.run(["valgrind", "--tool=none", "--error-exitcode=99", sys.executable, "-c", PROGRAM],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "(True, b'ping')"
