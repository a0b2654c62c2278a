"""Operator metrics (names fixed: dashboards are built against them) and the health endpoints."""

from __future__ import annotations

import contextlib
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from maestro.reconcile.store import KINDS, Store

RECONCILE_TOTAL = Counter(
    "maestro_reconcile_total", "Reconciles by kind and result (ok, requeue, error).", ["kind", "result"]
)
# every kind's results start at zero: the reconcile-error alert is evaluable before the first error
for _kind in KINDS:
    for _result in ("ok", "requeue", "error"):
        RECONCILE_TOTAL.labels(_kind, _result)
RECONCILE_DURATION = Histogram(
    "maestro_reconcile_duration_seconds",
    "Duration of one reconcile.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TRAINING_PROGRESS = Gauge(
    "maestro_training_progress_ratio", "Training progress (0..1).", ["namespace", "name"]
)
TRAINING_LOSS = Gauge("maestro_training_loss", "Latest training loss.", ["namespace", "name"])
DATASET_GATE = Gauge(
    "maestro_dataset_gate_passed",
    "1 when the quality gate passed, 0 when it failed.",
    ["namespace", "name", "gate"],
)


class ObjectsCollector(Collector):
    """`maestro_objects{kind,phase}`, computed from the cache at scrape time (never stale, no bookkeeping)."""

    def __init__(self, store: Callable[[], Store | None]) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "maestro_objects", "Maestro objects by kind and phase.", labels=["kind", "phase"]
        )
        store = self._store()
        if store is not None:
            for kind in KINDS:
                tally = Tally(((o.get("status") or {}).get("phase") or "Pending") for o in store.list(kind))
                for phase, n in sorted(tally.items()):
                    family.add_metric([kind, phase], n)
        yield family


_collector: ObjectsCollector | None = None


def register_objects(store: Callable[[], Store | None], registry: CollectorRegistry = REGISTRY) -> None:
    global _collector
    if _collector is None:
        _collector = ObjectsCollector(store)
        registry.register(_collector)


def observe_status(obj: dict[str, Any]) -> None:
    """Per-object gauges from a status the operator just saw."""
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    st = obj.get("status") or {}
    if obj.get("kind") == "LLMTrainingJob":
        progress = st.get("progress") or {}
        if progress.get("percent") is not None:
            TRAINING_PROGRESS.labels(ns, name).set(float(progress["percent"]) / 100)
        if progress.get("loss") is not None:
            TRAINING_LOSS.labels(ns, name).set(float(progress["loss"]))
    elif obj.get("kind") == "LLMDataset":
        for gate in st.get("gates") or []:
            DATASET_GATE.labels(ns, name, str(gate.get("name"))).set(1.0 if gate.get("passed") else 0.0)


def forget(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    for gauge in (TRAINING_PROGRESS, TRAINING_LOSS):
        with contextlib.suppress(KeyError):
            gauge.remove(ns, name)
    for gate in (obj.get("status") or {}).get("gates") or []:
        with contextlib.suppress(KeyError):
            DATASET_GATE.remove(ns, name, str(gate.get("name")))


def health_app(ready: Callable[[], bool]) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ready") if ready() else web.Response(status=503, text="starting")

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app
