"""The borrowed stdlib code, as a declared contract (docs/borrowing.md).

ferroloop runs about a hundred of the stdlib's own functions with a ferroloop object as ``self``
(``ferroloop._borrowing.borrow``). ``tests/borrowed_manifest/<major>.<minor>.toml`` records, for
the running Python, every one of them: where it comes from, how it is borrowed, the ``self``
attributes it reads and assigns, the ``self._loop`` attributes it reads and the module globals it
reads, all found with ``dis`` in its code objects (nested functions and comprehensions included).
The test regenerates that record from the installed stdlib and fails with a readable diff when
it differs: a new CPython release shows at once what moved. Then it checks that every private
attribute a borrowed function reads exists on a ferroloop object, or is declared in
``ferroloop/_borrowed.py`` (``PROVIDED_LATER``), and that ``_borrowed.VERSIONED`` is true.

Regenerate after a deliberate change (the diff of the file is the review):

    FERROLOOP_WRITE_MANIFEST=1 .venv/bin/python -m pytest -q tests/test_borrowed_manifest.py

(and the same with .venv-3.12 and .venv-3.13).
"""

import asyncio
import builtins
import difflib
import dis
import inspect
import os
import pathlib
import platform
import socket
import sys
import types

import pytest

import ferroloop
from ferroloop import _borrowed, _compat, _loop, _native, _net, _transport

MANIFEST_DIR = pathlib.Path(__file__).parent / "borrowed_manifest"
MANIFEST = MANIFEST_DIR / f"{sys.version_info[0]}.{sys.version_info[1]}.toml"
ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
WRITE = os.environ.get("FERROLOOP_WRITE_MANIFEST") == "1"

# ferroloop's classes that borrowed functions are put on, and what their self is.
LOOP_CLASSES = [_loop.Loop, _net.NetworkingMixin, _net._SelectorNetworking, _net._BaseNetworking]
TRANSPORT_CLASSES = [_transport._SelectorSocketTransport, _transport._TransportLayer]
# Modules whose globals hold borrowed functions called as f(self, ...), and what self is.
MODULES = ["_compat", "_loop", "_net", "_transport", "_resolve", "_diagnostics", "_runner"]
MODULE_LEVEL_SELF = {
    "_compat._stdlib_repr_info": "handle",
    "_loop._stdlib_set_debug": "loop",
    "_loop._stdlib_call_exception_handler": "loop",
    "_resolve._stdlib_getaddrinfo": "loop",
    "_resolve._stdlib_getnameinfo": "loop",
}
# Interfaces: their methods raise NotImplementedError and read nothing.
INTERFACES = (asyncio.AbstractEventLoop,)

_SELF_LOADS = {"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF", "LOAD_FAST_LOAD_FAST"}
_ATTR_LOADS = {"LOAD_ATTR", "LOAD_METHOD"}
_SKIP = {"CACHE", "EXTENDED_ARG", "NOP"}


# ------------------------------------------------------------------------------------------------
# Reading a function's code


def _is_stdlib(func):
    code = getattr(func, "__code__", None)
    return code is not None and code.co_filename.startswith(ASYNCIO_DIR)


def _codes(code, selfname):
    """``code`` and its nested code objects, each with the name ``self`` has there (or None)."""
    yield code, selfname
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner = selfname if selfname in const.co_freevars else None
            yield from _codes(const, inner)


def _pushes_self(ins, selfname):
    if ins.opname not in _SELF_LOADS:
        return False
    if ins.opname == "LOAD_FAST_LOAD_FAST":
        return ins.argval[1] == selfname
    return ins.argval == selfname


def analyse(func):
    """What ``func`` (a stdlib function run with a ferroloop object as self) reads and assigns."""
    code = func.__code__
    selfname = code.co_varnames[0] if code.co_argcount else None
    reads, writes, loop_reads, globals_ = set(), set(), set(), set()
    for co, name in _codes(code, selfname):
        insns = [i for i in dis.get_instructions(co) if i.opname not in _SKIP]
        augmented = set()
        for k, ins in enumerate(insns):
            if ins.opname == "LOAD_GLOBAL":
                g = ins.argval
                if g in func.__globals__ or not hasattr(builtins, g):
                    globals_.add(g)
                continue
            if ins.opname == "STORE_ATTR" and ins.argval in augmented:
                if k == 0 or not _pushes_self(insns[k - 1], name):
                    writes.add(ins.argval)  # self.x += ...: COPY, LOAD_ATTR x, ..., SWAP, STORE_ATTR x
                    continue
            if name is None or not _pushes_self(ins, name) or k + 1 >= len(insns):
                continue
            nxt = insns[k + 1]
            if nxt.opname in _ATTR_LOADS:
                reads.add(nxt.argval)
                after = insns[k + 2] if k + 2 < len(insns) else None
                if nxt.argval == "_loop" and after is not None and after.opname in _ATTR_LOADS:
                    loop_reads.add(after.argval)
            elif nxt.opname in ("STORE_ATTR", "DELETE_ATTR"):
                writes.add(nxt.argval)
            elif nxt.opname == "COPY" and k + 2 < len(insns) and insns[k + 2].opname in _ATTR_LOADS:
                reads.add(insns[k + 2].argval)
                augmented.add(insns[k + 2].argval)
            elif (
                nxt.opname == "LOAD_CONST"
                and isinstance(nxt.argval, str)
                and k > 0
                and insns[k - 1].opname == "LOAD_GLOBAL"
                and insns[k - 1].argval in ("getattr", "hasattr")
            ):
                reads.add(nxt.argval)  # getattr(self, "_x", default)
    dunder = lambda n: n.startswith("__") and n.endswith("__")  # noqa: E731
    return {
        "self_private_reads": sorted(n for n in reads if n.startswith("_") and not dunder(n)),
        "self_private_writes": sorted(n for n in writes if n.startswith("_") and not dunder(n)),
        "self_public": sorted(n for n in reads | writes if not n.startswith("_")),
        "loop_reads": sorted(loop_reads),
        "globals": sorted(globals_),
    }


def _how(func):
    """How a borrowed function differs from the stdlib's (``_borrowing.borrow``'s variants)."""
    orig = getattr(func, "__wrapped__", func)
    if orig is func:
        return "as is"
    hows = []
    if func.__closure__ is not orig.__closure__:
        hows.append("super_layer")
    changed = sorted(
        n for n, v in func.__globals__.items() if orig.__globals__.get(n, v) is not v
    )
    if changed:
        hows.append("globals=" + ",".join(changed))
    return " ".join(hows) or "copy"


def _source(func):
    orig = getattr(func, "__wrapped__", func)
    return f"{orig.__module__}.{orig.__qualname__}"


# ------------------------------------------------------------------------------------------------
# Finding every borrowed function


def _short(cls):
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__qualname__}"


def collect():
    """{key: entry} for every stdlib function ferroloop runs with its own object as self."""
    found = {}

    def add(key, func, kind, self_kind):
        entry = {"from": _source(func), "how": kind if kind != "borrowed" else _how(func)}
        entry.update(analyse(func))
        entry["_self"] = self_kind
        found[key] = entry

    for classes, self_kind in ((LOOP_CLASSES, "loop"), (TRANSPORT_CLASSES, "transport")):
        for cls in classes:
            for name, value in vars(cls).items():
                # A native descriptor standing over a stdlib function (the transport's __del__).
                if not isinstance(value, types.FunctionType):
                    value = getattr(value, "__wrapped__", value)
                if isinstance(value, types.FunctionType) and _is_stdlib(value):
                    add(f"{_short(cls)}.{name}", value, "borrowed", self_kind)
        # Inherited from a stdlib class (the transports' _FlowControlMixin & co.).
        top = classes[0]
        for name in dir(top):
            owner = next(k for k in top.__mro__ if name in vars(k))
            value = vars(owner)[name]
            if (
                owner.__module__.startswith("asyncio.")
                and not issubclass(owner, INTERFACES)
                and isinstance(value, types.FunctionType)
                and _is_stdlib(value)
            ):
                add(f"{_short(top)}.{name}", value, "inherited from " + _short(owner), self_kind)

    for modname in MODULES:
        module = sys.modules[f"ferroloop.{modname}"]
        for name, value in vars(module).items():
            if isinstance(value, types.FunctionType) and _is_stdlib(value):
                key = f"{modname}.{name}"
                add(key, value, "called as f(self, ...)", MODULE_LEVEL_SELF.get(key))
    return found


# ------------------------------------------------------------------------------------------------
# The manifest file


def _toml_list(values):
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def render(found):
    lines = [
        f"# Generated by tests/test_borrowed_manifest.py from the stdlib of CPython "
        f"{platform.python_version()}. Do not edit by hand:",
        "# FERROLOOP_WRITE_MANIFEST=1 python -m pytest tests/test_borrowed_manifest.py rewrites it.",
        "# One table per stdlib function that ferroloop runs with its own object as self.",
        "# from: the stdlib function; how: as is | super_layer | globals=... (a copy, see",
        "# _borrowing.py) | inherited from <stdlib class> | called as f(self, ...) (module level);",
        "# self_private_reads / self_private_writes / self_public: self.<attr> loaded / assigned;",
        "# loop_reads: self._loop.<attr>; globals: module globals read. Empty lists are left out.",
        f"# {len(found)} functions.",
    ]
    for key in sorted(found):
        entry = found[key]
        lines.append("")
        lines.append(f'["{key}"]')
        lines.append(f'from = "{entry["from"]}"')
        lines.append(f'how = "{entry["how"]}"')
        for field in ("self_private_reads", "self_private_writes", "self_public", "loop_reads",
                      "globals"):
            if entry[field]:
                lines.append(f"{field} = {_toml_list(entry[field])}")
    return "\n".join(lines) + "\n"


def _body(text):
    return [line for line in text.splitlines() if not line.startswith("#")]


def _summary(old_text, new_text):
    """What moved, per function: the readable part of a failure."""
    import tomllib

    old, new = tomllib.loads(old_text), tomllib.loads(new_text)
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(f"  - {key}: no longer borrowed (was {old[key]['from']})")
        elif key not in old:
            out.append(f"  + {key}: newly borrowed from {new[key]['from']}")
        else:
            for field in sorted(set(old[key]) | set(new[key])):
                a, b = old[key].get(field, []), new[key].get(field, [])
                if a == b:
                    continue
                if isinstance(a, list) and isinstance(b, list):
                    plus, minus = sorted(set(b) - set(a)), sorted(set(a) - set(b))
                    change = " ".join([f"+{x}" for x in plus] + [f"-{x}" for x in minus])
                else:
                    change = f"{a!r} -> {b!r}"
                out.append(f"  ~ {key} {field}: {change}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def found():
    return collect()


def test_manifest_matches_the_installed_stdlib(found):
    text = render(found)
    if WRITE:
        MANIFEST_DIR.mkdir(exist_ok=True)
        MANIFEST.write_text(text)
    assert MANIFEST.exists(), (
        f"{MANIFEST} is missing: create it with FERROLOOP_WRITE_MANIFEST=1 (module docstring)"
    )
    old = MANIFEST.read_text()
    if _body(old) != _body(text):
        diff = "\n".join(
            difflib.unified_diff(_body(old), _body(text), str(MANIFEST), "installed stdlib",
                                 lineterm="", n=2)
        )
        pytest.fail(
            f"The borrowed stdlib code changed on CPython {platform.python_version()} "
            f"(+x: the installed stdlib now has it, -x: no longer):\n"
            f"{_summary(old, text)}\n\n{diff}\n\nCheck each change against ferroloop "
            f"(docs/borrowing.md), then regenerate with FERROLOOP_WRITE_MANIFEST=1.",
            pytrace=False,
        )


def test_every_module_level_borrow_is_declared(found):
    unknown = sorted(k for k, e in found.items() if e["_self"] is None)
    assert not unknown, f"add these to MODULE_LEVEL_SELF (what their self is): {unknown}"
    stale = sorted(set(MODULE_LEVEL_SELF) - set(found))
    assert not stale, f"MODULE_LEVEL_SELF names functions that are not borrowed: {stale}"


@pytest.fixture
def instances():
    """A fresh ferroloop loop, one of its stream transports, a native handle."""
    loop = ferroloop.new_event_loop()
    a, b = socket.socketpair()
    try:
        transport = _transport._SelectorSocketTransport(loop, a, asyncio.Protocol())
        handle = loop.call_soon(print)
        yield {"loop": loop, "transport": transport, "handle": handle}
        handle.cancel()
        transport.abort()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
        a.close()
        b.close()


def _has(obj, name):
    try:
        inspect.getattr_static(obj, name)  # instance dict, class attributes, descriptors
    except AttributeError:
        return False
    return True


def _provided_later(self_kind):
    return _borrowed.PROVIDED_LATER.get(self_kind, {})


def test_every_private_attribute_read_exists_on_ferroloop(found, instances):
    missing = {}
    needed = set()
    for key, entry in sorted(found.items()):
        obj = instances[entry["_self"]]
        checks = [(entry["_self"], n) for n in entry["self_private_reads"]]
        if entry["_self"] == "transport":
            checks += [("loop", n) for n in entry["loop_reads"] if n.startswith("_")]
        for self_kind, name in checks:
            target = instances[self_kind] if self_kind != entry["_self"] else obj
            if _has(target, name):
                continue
            if name in _provided_later(self_kind):
                needed.add((self_kind, name))
                continue
            missing.setdefault(key, []).append(f"{self_kind}.{name}")
    assert not missing, (
        "borrowed stdlib functions read private attributes that a fresh ferroloop object does not "
        "have; set them in __init__, or declare them in ferroloop/_borrowed.py (PROVIDED_LATER) "
        "with why the read is safe:\n"
        + "\n".join(f"  {k}: {', '.join(v)}" for k, v in missing.items())
    )
    declared = {(k, n) for k, names in _borrowed.PROVIDED_LATER.items() for n in names}
    stale = sorted(declared - needed)
    assert not stale, f"_borrowed.PROVIDED_LATER lists attributes no longer needed: {stale}"


def test_every_private_attribute_assigned_is_assignable(found, instances):
    """A read-only property on ferroloop's side would make the borrowed assignment raise."""
    readonly = []
    for key, entry in sorted(found.items()):
        obj = instances[entry["_self"]]
        for name in entry["self_private_writes"]:
            try:
                attr = inspect.getattr_static(type(obj), name)
            except AttributeError:
                continue  # a plain instance attribute
            if isinstance(attr, property) and attr.fset is None:
                readonly.append(f"{key}: {entry['_self']}.{name}")
    assert not readonly, "\n".join(readonly)


def test_versioned_declarations_are_true(found):
    sources = {e["from"] for e in found.values()}
    wrong = []
    for where, versions in _borrowed.VERSIONED.items():
        modname, clsname, name = where.rsplit(".", 2)
        cls = getattr(sys.modules[modname], clsname)
        present = name in vars(cls)
        expected = _compat.version_in(**versions)
        if present != expected:
            wrong.append(f"{where}: declared {versions}, but defined={present} on "
                         f"{platform.python_version()}")
        elif expected and where not in sources:
            wrong.append(f"{where}: declared, but nothing borrows it")
    assert not wrong, "\n".join(wrong)


def test_a_missing_name_fails_loudly():
    from ferroloop._borrowing import BorrowError, borrow, borrow_into

    with pytest.raises(AttributeError) as err:
        borrow(asyncio.base_events.BaseEventLoop, "no_such_method")
    assert isinstance(err.value, BorrowError)
    message = str(err.value)
    assert "asyncio.base_events.BaseEventLoop.no_such_method" in message
    assert platform.python_version() in message

    class Layer:
        pass

    with pytest.raises(BorrowError):
        borrow_into(Layer, asyncio.base_events.BaseEventLoop, ["close", "no_such_method"])


def test_super_needs_a_layer():
    from ferroloop._borrowing import BorrowError, borrow

    # A stdlib function that calls zero-argument super() on every supported version.
    source, name = asyncio.selector_events._SelectorSocketTransport, "_call_connection_lost"
    assert "__class__" in vars(source)[name].__code__.co_freevars
    with pytest.raises(BorrowError, match="super"):
        borrow(source, name)

    class Layer:
        pass

    func = borrow(source, name, super_layer=Layer)
    assert func.__wrapped__ is vars(source)[name]
    assert func.__closure__[func.__code__.co_freevars.index("__class__")].cell_contents is Layer


def test_versions_come_from_one_module():
    """No version switch outside _compat.py: no ``sys.version_info``, no code-object inspection."""
    import ast

    pkg = pathlib.Path(ferroloop.__file__).parent
    banned = {"version_info", "co_argcount", "co_names", "co_varnames", "co_freevars"}
    allowed = {"_compat.py", "_borrowing.py"}  # _borrowing reads co_freevars to find super()
    offenders = []
    for path in sorted(pkg.rglob("*.py")):
        if path.name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in banned:
                offenders.append(f"{path.relative_to(pkg)}:{node.lineno}: .{node.attr}")
    assert not offenders, "version switches belong in _compat.py:\n" + "\n".join(offenders)
