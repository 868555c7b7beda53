"""loop.stats() as OpenTelemetry metrics (python/ferroloop/_metrics.py). ferroloop-only.

opentelemetry-api and -sdk are pinned in requirements-dev.txt (``make test-py`` installs them);
the SDK's InMemoryMetricReader collects on demand, without a thread.
"""

import asyncio
import time

import pytest

otel_sdk = pytest.importorskip(
    "opentelemetry.sdk.metrics",
    reason="opentelemetry-sdk is not installed (pinned in requirements-dev.txt: make venv)",
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402


def _collect(reader):
    """{metric name: [(value, attributes), ...]}."""
    out = {}
    data = reader.get_metrics_data()
    if data is None:  # nothing observed
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = [(p.value, dict(p.attributes)) for p in m.data.data_points]
                out[m.name + ".unit"] = m.unit
    return out


def test_ferroloop_metrics_export_stats(ferroloop_mod):
    from ferroloop import _metrics

    reader = InMemoryMetricReader()
    provider = otel_sdk.MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    meter = provider.get_meter("test")
    loop = ferroloop_mod.new_event_loop()
    other = ferroloop_mod.new_event_loop()
    try:
        inst = _metrics.instrument(loop, meter=meter, name="main", attributes={"service": "t"})
        _metrics.instrument(other, meter=meter, name="other")

        async def work():
            for _ in range(50):
                await asyncio.sleep(0)
            time.sleep(0.02)  # a stall
            await asyncio.sleep(0.02)  # idle
            loop.call_later(60, int)  # a live timer

        loop.run_until_complete(work())
        stats = loop.stats()
        got = _collect(reader)
        attrs = {"ferroloop.loop": "main", "service": "t"}
        for name, key in [("turns", "turns"), ("callbacks", "callbacks"), ("ready", "ready"),
                          ("timers", "timers"), ("fds", "fds")]:
            points = dict((a["ferroloop.loop"], v) for v, a in got[f"ferroloop.loop.{name}"])
            assert points["main"] == stats[key], name
            assert "other" in points
        assert got["ferroloop.loop.turns"][0][1] in (attrs, {"ferroloop.loop": "other"})
        assert dict((a["ferroloop.loop"], v) for v, a in got["ferroloop.loop.timers"])["main"] == 1
        busy = dict((a["ferroloop.loop"], v) for v, a in got["ferroloop.loop.busy_time"])["main"]
        idle = dict((a["ferroloop.loop"], v) for v, a in got["ferroloop.loop.idle_time"])["main"]
        stall = dict((a["ferroloop.loop"], v) for v, a in got["ferroloop.loop.longest_stall"])["main"]
        assert busy >= 0.02 and idle >= 0.015 and stall >= 0.02
        assert got["ferroloop.loop.busy_time.unit"] == "s"
        assert got["ferroloop.loop.turns.unit"] == "{turn}"
        turns_before = stats["turns"]

        loop.run_until_complete(asyncio.sleep(0))
        got = _collect(reader)
        points = dict((a["ferroloop.loop"], v) for v, a in got["ferroloop.loop.turns"])
        assert points["main"] > turns_before  # cumulative counter moves on

        inst.close()  # this loop stops reporting; the other goes on
        got = _collect(reader)
        assert {a["ferroloop.loop"] for _, a in got["ferroloop.loop.turns"]} == {"other"}
        other.close()  # a closed loop stops reporting
        got = _collect(reader)
        assert not got.get("ferroloop.loop.turns")
    finally:
        loop.close()
        other.close()
        provider.shutdown()


def test_ferroloop_metrics_count_watchdog_stalls(ferroloop_mod):
    from ferroloop import _metrics

    reader = InMemoryMetricReader()
    provider = otel_sdk.MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    loop = ferroloop_mod.new_event_loop()
    try:
        _metrics.instrument(loop, meter=provider.get_meter("test"), name="w")
        loop.set_watchdog(0.05, report_interval=3600)

        async def stall():
            time.sleep(0.2)

        async def main():
            await stall()
            await asyncio.sleep(0.01)
            await stall()  # rate-limited: counted all the same
            await asyncio.sleep(0.01)

        import logging
        logging.getLogger("ferroloop").disabled = True
        try:
            loop.run_until_complete(main())
        finally:
            logging.getLogger("ferroloop").disabled = False
        got = _collect(reader)
        assert got["ferroloop.loop.stalls"] == [(2, {"ferroloop.loop": "w"})]
    finally:
        loop.close()
        provider.shutdown()


def test_ferroloop_metrics_default_meter_and_errors(ferroloop_mod):
    import asyncio as aio

    from ferroloop import _metrics

    loop = ferroloop_mod.new_event_loop()
    try:
        inst = _metrics.instrument(loop)  # the global (no-op unless configured) provider
        assert inst.attributes["ferroloop.loop"].startswith("loop-")
        inst.close()
    finally:
        loop.close()
    stock = aio.new_event_loop()
    try:
        with pytest.raises(TypeError, match="not a ferroloop loop"):
            _metrics.instrument(stock)
    finally:
        stock.close()
