"""Kopf wiring: watch events feed the cache and the work queue; the queue runs the reconciles.

Only `on.event` handlers are used for the Maestro kinds: Kopf then stores nothing on the objects
(no annotations, no finalizers), every watch event (including the initial listing after a restart)
simply enqueues the object, and the reconcile decides from the current state what to do. That makes
the operator level-based and restart-safe by construction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import kopf
from aiohttp import web

from maestro import api
from maestro.api import API_VERSION, GROUP, VERSION
from maestro.builders.meta import LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, MANAGED_BY
from maestro.builders.serving import Capabilities
from maestro.controllers import metrics, state
from maestro.controllers.config import OperatorConfig
from maestro.controllers.progress import progress_app
from maestro.controllers.queue import quiet
from maestro.k8s import ApiError, Kube, NotFound
from maestro.reconcile import dataset, deployment, policy, training
from maestro.reconcile.context import Context, InvalidObject, Result
from maestro.reconcile.store import DATASET, DEPLOYMENT, KINDS, POLICY, TRAINING, Store

log = logging.getLogger("maestro")
quiet(ApiError)

RECONCILERS: dict[str, Callable[[Context, dict[str, Any]], Awaitable[Result]]] = {
    DATASET: dataset.reconcile,
    TRAINING: training.reconcile,
    DEPLOYMENT: deployment.reconcile,
    POLICY: policy.reconcile,
}


async def process(rt: state.Runtime, key: Hashable) -> float | None:
    assert isinstance(key, tuple)
    kind, ns, name = key
    obj = rt.ctx.store.get(kind, ns, name)
    if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
        return None
    t0 = time.perf_counter()
    try:
        result: Result = await RECONCILERS[kind](rt.ctx, obj)
    except InvalidObject:
        metrics.RECONCILE_TOTAL.labels(kind, "error").inc()
        return None
    except Exception:
        metrics.RECONCILE_TOTAL.labels(kind, "error").inc()
        raise
    finally:
        metrics.RECONCILE_DURATION.labels(kind).observe(time.perf_counter() - t0)
    metrics.RECONCILE_TOTAL.labels(kind, "requeue" if result.requeue_after else "ok").inc()
    current = rt.ctx.store.get(kind, ns, name)
    if current is not None:
        metrics.observe_status(current)
    return result.requeue_after


async def _capabilities(kube: Kube) -> Capabilities:
    keda, sm = await asyncio.gather(
        kube.crd_exists("scaledobjects.keda.sh"), kube.crd_exists("servicemonitors.monitoring.coreos.com")
    )
    return Capabilities(keda=keda, service_monitor=sm)


async def _resync(rt: state.Runtime) -> None:
    """Every resync period: re-detect optional APIs, forget apply fingerprints, requeue everything."""
    while True:
        await asyncio.sleep(rt.config.resync_seconds)
        try:
            rt.ctx.caps = await _capabilities(rt.ctx.kube)
        except ApiError as exc:
            log.warning("Capability detection failed: %s", exc)
        rt.ctx.applied.clear()
        for obj in list(rt.ctx.store.all()):
            meta = obj["metadata"]
            rt.queue.add((obj["kind"], meta["namespace"], meta["name"]))


async def _serve(rt: state.Runtime, app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port, reuse_address=True).start()
    rt.servers.append(runner)


async def startup(settings: kopf.OperatorSettings, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    cfg = OperatorConfig.from_env()
    for noisy in ("httpx2", "httpcore2", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # One "Handler succeeded" line per watch event is noise at scale; failures still log.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 30
    if cfg.webhook:
        from maestro.controllers import webhook

        webhook.configure(settings, cfg)
    kube = Kube(max_connections=max(32, cfg.workers * 2))
    store = Store()
    # Prime the cache before the first reconcile, so no object is judged against a half-known world
    # (e.g. a deployment reconciled before the policy that governs it was seen).
    try:
        for kind in KINDS:
            for namespace in cfg.namespaces or (None,):
                for obj in await kube.list(API_VERSION, kind, namespace):
                    store.put(obj)
    except NotFound as exc:
        raise kopf.TemporaryError(
            f"the Maestro CRDs are not installed ({exc}); apply them with `kubectl apply -f crds/`", delay=10
        ) from exc
    ctx = Context(
        kube=kube,
        settings=cfg.settings,
        store=store,
        caps=await _capabilities(kube),
        poll_seconds=cfg.poll_seconds,
    )
    rt = state.Runtime(config=cfg, ctx=ctx, worker=process)
    state.attach(memo, rt)
    metrics.register_objects(lambda: rt.ctx.store)
    rt.queue.start()
    for obj in list(store.all()):
        rt.queue.add((obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]))
    if cfg.metrics_port:
        await _serve(rt, metrics.health_app(lambda: rt.ready), cfg.metrics_port)
    if cfg.progress_port:
        await _serve(rt, progress_app(kube, cfg.settings.progress_audience), cfg.progress_port)
    rt.background.append(asyncio.create_task(_resync(rt)))
    rt.ready = True
    logger.info(
        "Maestro started: %d objects cached, %d workers",
        sum(store.count(k) for k in KINDS),
        cfg.workers,
    )


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    rt = state.of(memo)
    if rt is None:
        return
    for task in rt.background:
        task.cancel()
    rt.background.clear()
    for runner in rt.servers:
        await runner.cleanup()
    rt.servers.clear()
    await rt.queue.stop()
    await rt.ctx.kube.close()
    state.attach(memo, None)


def _on_maestro_event(kind: str) -> Callable[..., Awaitable[None]]:
    async def on_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        rt = state.of(memo)
        if rt is None:
            return
        obj: dict[str, Any] = dict(event["object"])
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", API_VERSION)
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        store = rt.ctx.store
        key = (kind, ns, name)
        if event.get("type") == "DELETED":
            rt.seen.pop(key, None)
            store.remove(kind, ns, name)
            rt.ctx.forget(meta.get("uid", ""))
            metrics.forget(obj)
            rt.enqueue(*store.dependents(kind, ns, name), *store.policies_for(kind, ns, name))
            return
        cached = store.get(kind, ns, name)
        echo = cached is not None and (cached.get("metadata") or {}).get("resourceVersion") == meta.get(
            "resourceVersion"
        )
        store.put(obj)  # ignored when a status write already stored a newer version
        if not echo:  # the echo of our own status write needs no reconcile
            rt.enqueue(key)
        # Dependents are compared against what the watch showed last (the cache may already hold our
        # own status write, which dependents have not seen yet).
        previous = rt.seen.get(key)
        observable = _observable(obj)
        rt.seen[key] = observable
        if previous != observable:
            rt.enqueue(*store.dependents(kind, ns, name))
        if previous is None and kind != POLICY:
            rt.enqueue(*store.policies_for(kind, ns, name))

    return on_event


def _observable(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What dependents read of an object: its spec, labels and status."""
    meta = obj.get("metadata") or {}
    return (meta.get("generation"), meta.get("labels"), obj.get("status"))


def slim_deployment(obj: dict[str, Any]) -> dict[str, Any]:
    """What a reconcile reads of a Deployment (status, replicas, template annotations), nothing else."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "generation", "resourceVersion")},
        "spec": {
            "replicas": spec.get("replicas"),
            "template": {"metadata": {"annotations": template_meta.get("annotations") or {}}},
        },
        "status": obj.get("status") or {},
    }


def _owner_key(obj: dict[str, Any]) -> tuple[str, str, str] | None:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    kind, name = labels.get(LABEL_OWNER_KIND), labels.get(LABEL_OWNER_NAME)
    if kind not in RECONCILERS or not name:
        return None
    return (kind, meta.get("namespace", ""), name)


async def on_child_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A child changed: its owner's status may have to follow (and a deleted child be re-created)."""
    obj: dict[str, Any] = dict(event["object"])
    key = _owner_key(obj)
    if key is None:
        return
    rt = state.of(memo)
    if rt is None:
        return
    meta = obj.get("metadata") or {}
    ckey = (str(obj.get("kind") or "Deployment"), meta.get("namespace", ""), meta.get("name", ""))
    if event.get("type") == "DELETED":
        rt.ctx.children.pop(ckey, None)
        for ref in meta.get("ownerReferences") or []:
            rt.ctx.forget(ref.get("uid", ""))
    elif ckey[0] == "Deployment":
        rt.ctx.children[ckey] = slim_deployment(obj)
    rt.queue.add(key)


def register(registry: kopf.OperatorRegistry) -> None:
    """Every handler, on `registry` (Kopf's default one for `kopf run -m maestro.controllers`).

    Nothing is registered at import, and the handlers keep their state in Kopf's memo (`state.Runtime`),
    not in module globals: two operators (e.g. tests) can run in one process with their own registries.
    """
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    for model in api.KINDS:
        info = model.crd
        kopf.on.event(GROUP, VERSION, info.plural, id=f"{info.plural}-event", registry=registry)(
            _on_maestro_event(info.kind)
        )
    child = {LABEL_MANAGED_BY: MANAGED_BY}
    kopf.on.event("batch", "v1", "jobs", labels=child, id="jobs-event", registry=registry)(on_child_event)
    kopf.on.event("apps", "v1", "deployments", labels=child, id="deployments-event", registry=registry)(
        on_child_event
    )
