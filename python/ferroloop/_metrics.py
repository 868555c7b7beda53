"""``loop.stats()`` as OpenTelemetry metrics (``pip install ferroloop[otel]``).

    from ferroloop import _metrics
    _metrics.instrument(loop)                    # the global MeterProvider's meter "ferroloop"
    _metrics.instrument(loop, meter=my_meter, attributes={"service.name": "api"})

Observable instruments, read from ``loop.stats()`` whenever the SDK collects (no cost on the
loop between collections). Every observation carries the attribute ``ferroloop.loop`` (the
name given to ``instrument``, by default ``loop-1``, ``loop-2``, ... in creation order), plus
the caller's attributes:

=================================  ======================  =====  ==============================
instrument                         kind                    unit   from ``stats()``
=================================  ======================  =====  ==============================
``ferroloop.loop.turns``           ObservableCounter       {turn}     turns
``ferroloop.loop.callbacks``       ObservableCounter       {callback} callbacks
``ferroloop.loop.busy_time``       ObservableUpDownCounter s      busy (see below)
``ferroloop.loop.idle_time``       ObservableCounter       s      idle
``ferroloop.loop.longest_stall``   ObservableGauge         s      longest_stall
``ferroloop.loop.ready``           ObservableUpDownCounter {callback} ready
``ferroloop.loop.timers``          ObservableUpDownCounter {timer}    timers
``ferroloop.loop.fds``             ObservableUpDownCounter {fd}       fds
``ferroloop.loop.stalls``          ObservableCounter       {stall}    production mode's stalls seen
=================================  ======================  =====  ==============================

``busy_time`` is an up-down counter, not a counter: ``stats()`` counts a wait for I/O as idle
only when the wait ends, so during a long wait ``busy`` grows and then drops back.

The instruments are created once per meter; each instrumented loop adds its observations. A
closed or garbage-collected loop stops reporting; ``Instrumentation.close()`` stops earlier.
``stats()`` is read from the SDK's collection thread: it only reads counters, under the GIL.
"""

import itertools
import threading
import weakref

__all__ = ["instrument", "Instrumentation"]

# (name, kind, unit, description, value from stats() or None for a computed one)
INSTRUMENTS = [
    ("ferroloop.loop.turns", "counter", "{turn}", "Turns of the event loop", "turns"),
    ("ferroloop.loop.callbacks", "counter", "{callback}", "Callbacks and task steps run",
     "callbacks"),
    # stats()["busy"] is the run time minus the idle time, and a wait in progress is counted as
    # idle only when it ends: during a long wait busy grows, then drops back. Not monotonic, so
    # not a counter.
    ("ferroloop.loop.busy_time", "updown", "s", "Seconds the loop spent running callbacks",
     "busy"),
    ("ferroloop.loop.idle_time", "counter", "s", "Seconds the loop spent waiting for I/O or timers",
     "idle"),
    ("ferroloop.loop.longest_stall", "gauge", "s",
     "Longest time the loop went without polling for I/O", "longest_stall"),
    ("ferroloop.loop.ready", "updown", "{callback}", "Callbacks ready to run", "ready"),
    ("ferroloop.loop.timers", "updown", "{timer}", "Scheduled timers (not cancelled)", "timers"),
    ("ferroloop.loop.fds", "updown", "{fd}", "File descriptors the loop watches", "fds"),
    ("ferroloop.loop.stalls", "counter", "{stall}",
     "Stalls longer than the production-mode watchdog threshold", None),
]

_lock = threading.Lock()
_registries: "dict[int, _Registry]" = {}  # id(meter) -> _Registry
_names = itertools.count(1)


class _Registry:
    """The instruments of one meter and the loops observed through them."""

    def __init__(self, meter):
        from opentelemetry.metrics import Observation

        self.meter = meter
        self.loops = {}  # token -> (weakref to the loop, attributes)
        self._observation = Observation
        create = {
            "counter": meter.create_observable_counter,
            "gauge": meter.create_observable_gauge,
            "updown": meter.create_observable_up_down_counter,
        }
        self.instruments = [
            create[kind](name, callbacks=[self._callback(key)], unit=unit, description=desc)
            for name, kind, unit, desc, key in INSTRUMENTS
        ]

    def _callback(self, key):
        def observe(options):
            return list(self._observe(key))

        return observe

    def _observe(self, key):
        for token, (ref, attrs) in list(self.loops.items()):
            loop = ref()
            if loop is None or loop.is_closed():
                self.loops.pop(token, None)
                continue
            if key is None:
                cfg = getattr(loop, "_prod_config", None)
                value = cfg.stalls if cfg is not None else 0
            else:
                value = loop.stats()[key]
            yield self._observation(value, attrs)


class Instrumentation:
    """What ``instrument()`` returns: ``close()`` stops reporting the loop."""

    def __init__(self, registry, token, attributes):
        self._registry = registry
        self._token = token
        self.attributes = attributes

    def close(self):
        self._registry.loops.pop(self._token, None)


def instrument(loop, meter=None, *, name=None, attributes=None):
    """Report ``loop.stats()`` through OpenTelemetry observable instruments of ``meter`` (by
    default ``opentelemetry.metrics.get_meter("ferroloop")`` from the global MeterProvider).
    Raises ImportError with the install command when ``opentelemetry-api`` is missing."""
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ImportError(
            "ferroloop metrics need OpenTelemetry's API: pip install 'ferroloop[otel]' "
            "(or opentelemetry-api)"
        ) from exc
    if not hasattr(loop, "stats"):
        raise TypeError(f"not a ferroloop loop (no stats()): {loop!r}")
    if meter is None:
        import ferroloop

        meter = metrics.get_meter("ferroloop", ferroloop.__version__)
    attrs = {"ferroloop.loop": name or f"loop-{next(_names)}"}
    attrs.update(attributes or {})
    with _lock:
        registry = _registries.get(id(meter))
        if registry is None or registry.meter is not meter:
            registry = _registries[id(meter)] = _Registry(meter)
        token = object()
        registry.loops[token] = (weakref.ref(loop), attrs)
    return Instrumentation(registry, token, attrs)
