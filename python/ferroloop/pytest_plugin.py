"""Run a project's own test suite on ferroloop.

    pytest --ferroloop                   # ferroloop installed: its entry point adds the option
    pytest -p ferroloop.pytest_plugin    # the same, naming the plugin

Once enabled, every asyncio event loop the tests create through the usual routes is a ferroloop
loop:

- pytest-asyncio: through its ``pytest_asyncio_loop_factories`` hook (pytest-asyncio 1.x); a
  project's own implementation of that hook, in a conftest, takes precedence;
- anyio's pytest plugin (backend ``"asyncio"``), aiohttp's pytest plugins (``aiohttp.pytest_plugin``'s
  ``loop`` fixture and pytest-aiohttp), ``unittest.IsolatedAsyncioTestCase``, ``asyncio.run()``,
  ``asyncio.Runner()`` and ``asyncio.new_event_loop()``: through ferroloop's event-loop policy,
  set for the whole run (from Python 3.14, which deprecates the policy system, through
  ``asyncio.new_event_loop`` instead). A suite that sets another policy (uvloop's, say) or
  passes its own loop factory keeps it: this plugin replaces only the default.

The terminal summary says how many tests ran on ferroloop: a test counts when a ferroloop loop
ran (took at least one turn) during its setup, call or teardown. For example::

    ferroloop: 12 tests ran on ferroloop (14 loops)

The pytest11 entry point loads this module in every pytest run of an environment where ferroloop
is installed; what it registers then (``_EntryPoint``) only adds the ``--ferroloop`` option and
does nothing else unless that option is given.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from asyncio import events
from typing import TYPE_CHECKING, Any

import pytest

import ferroloop
from ferroloop import _compat

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Mapping

__all__ = ["entry_point"]

_PLUGIN_NAME = __name__  # "ferroloop.pytest_plugin", the name `-p` registers this module under


def _add_option(parser: pytest.Parser) -> None:
    group = parser.getgroup("ferroloop")
    try:
        group.addoption(
            "--ferroloop",
            action="store_true",
            default=False,
            help="run the tests' asyncio event loops on ferroloop (pytest-asyncio, anyio, "
            "aiohttp, unittest.IsolatedAsyncioTestCase, asyncio.run); same as "
            "-p ferroloop.pytest_plugin",
        )
    except ValueError:  # already added: both the entry point and `-p` loaded this module
        pass


class _EntryPoint:
    """What the ``pytest11`` entry point registers: the ``--ferroloop`` option, and, only when
    it is given, the plugin itself (this module)."""

    def pytest_addoption(self, parser: pytest.Parser) -> None:
        _add_option(parser)

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        if config.getoption("ferroloop", False) and not config.pluginmanager.has_plugin(
            _PLUGIN_NAME
        ):
            config.pluginmanager.register(sys.modules[__name__], _PLUGIN_NAME)


entry_point = _EntryPoint()


# --------------------------------------------------------------------------------------------
# The plugin proper: active when this module is registered (`-p ferroloop.pytest_plugin`,
# `--ferroloop`, or `pytest_plugins = ["ferroloop.pytest_plugin"]` in a conftest).


def pytest_addoption(parser: pytest.Parser) -> None:
    _add_option(parser)


class _Tracker:
    """Counts the ferroloop loops created during the run and the tests during which one ran,
    and makes ferroloop the default loop of the process while the run lasts."""

    def __init__(self) -> None:
        self.loops_created = 0
        self.tests_on_ferroloop = 0
        self._live: weakref.WeakSet[ferroloop.Loop] = weakref.WeakSet()
        self._during_test: list[ferroloop.Loop] | None = None  # strong refs until the test ends
        self._turns_before: list[tuple[weakref.ref[ferroloop.Loop], int]] = []
        self._orig_init: Callable[..., None] | None = None
        self._old_policy: Any = None
        self._policy_saved = False
        self._old_factories: tuple[Any, Any] | None = None

    # Loop accounting: every ferroloop.Loop constructed while the run lasts (through any route:
    # the policy, ferroloop.new_event_loop, Loop(), a subclass).
    def start(self) -> None:
        orig_init = ferroloop.Loop.__init__
        tracker = self

        def __init__(loop: ferroloop.Loop, *args: Any, **kwargs: Any) -> None:
            orig_init(loop, *args, **kwargs)
            tracker._created(loop)

        __init__.__wrapped__ = orig_init  # type: ignore[attr-defined]
        self._orig_init = orig_init
        setattr(ferroloop.Loop, "__init__", __init__)  # noqa: B010 - restored by stop()
        self._install_default()

    def stop(self) -> None:
        if self._orig_init is not None:
            setattr(ferroloop.Loop, "__init__", self._orig_init)  # noqa: B010
            self._orig_init = None
        if self._old_factories is not None:
            events.new_event_loop, asyncio.new_event_loop = self._old_factories
            self._old_factories = None
        elif isinstance(getattr(events, "_event_loop_policy", None), ferroloop.EventLoopPolicy):
            asyncio.set_event_loop_policy(self._old_policy)

    def _created(self, loop: ferroloop.Loop) -> None:
        self.loops_created += 1
        self._live.add(loop)
        if self._during_test is not None:
            self._during_test.append(loop)

    def _install_default(self) -> None:
        if _compat.POLICY_DEPRECATED:
            # 3.14+: asyncio.run()/Runner() and asyncio.new_event_loop() call this factory.
            if self._old_factories is None:
                self._old_factories = (events.new_event_loop, asyncio.new_event_loop)
                ferroloop.install_loop_factory()
        elif _policy_is_default():
            # Unset, the stdlib's default, or reset by a test (set_event_loop_policy(None)):
            # the default is ours. Another policy (uvloop's, say) is the suite's choice.
            if not self._policy_saved:
                self._old_policy = getattr(events, "_event_loop_policy", None)
                self._policy_saved = True
            ferroloop.install()

    # Per test: setup, call and teardown.
    def begin_test(self) -> None:
        self._install_default()
        self._during_test = []
        self._turns_before = [(weakref.ref(lp), _turns(lp)) for lp in list(self._live)]

    def end_test(self) -> None:
        ran = any(_turns(lp) > 0 for lp in self._during_test or ())
        if not ran:
            for ref, before in self._turns_before:
                lp = ref()
                if lp is not None and _turns(lp) > before:
                    ran = True
                    break
        if ran:
            self.tests_on_ferroloop += 1
        self._during_test = None
        self._turns_before = []

    def summary(self) -> str:
        tests = self.tests_on_ferroloop
        loops = self.loops_created
        return (
            f"ferroloop: {tests} test{'' if tests == 1 else 's'} ran on ferroloop "
            f"({loops} loop{'' if loops == 1 else 's'})"
        )


def _policy_is_default() -> bool:
    """Whether the current event-loop policy is unset or exactly the stdlib's default, read
    without creating the default as asyncio.get_event_loop_policy() would."""
    policy = getattr(events, "_event_loop_policy", None)
    return policy is None or type(policy) is _compat.DEFAULT_POLICY_BASE


def _turns(loop: ferroloop.Loop) -> int:
    try:
        return int(loop.stats()["turns"])
    except Exception:  # noqa: BLE001 - a loop in a state stats() refuses counts as not run
        return 0


_tracker: _Tracker | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _tracker
    if _tracker is None:
        _tracker = _Tracker()
        _tracker.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    global _tracker
    if _tracker is not None:
        _tracker.stop()
        _tracker = None


def pytest_report_header(config: pytest.Config) -> str:
    return f"ferroloop {ferroloop.__version__}: the tests' asyncio event loops are ferroloop's"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    tracker = _tracker
    if tracker is None:
        return (yield)
    tracker.begin_test()
    try:
        return (yield)
    finally:
        tracker.end_test()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _tracker is not None:
        terminalreporter.write_line(_tracker.summary())


@pytest.hookimpl(optionalhook=True, trylast=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """pytest-asyncio 1.x: the loop every asyncio test and fixture runs on. trylast: a
    project's own implementation (a conftest's) answers first."""
    return {"ferroloop": ferroloop.new_event_loop}
