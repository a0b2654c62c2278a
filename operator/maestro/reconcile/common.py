"""The end of every reconcile: merge conditions, patch status only when it changed, record Events."""

from __future__ import annotations

import asyncio
from typing import Any

from maestro.api.conditions import ConditionType
from maestro.k8s.errors import ApiError, NotFound
from maestro.reconcile.context import Context
from maestro.status.conditions import Cond, cond, merge, now_rfc3339, status_diff

Obj = dict[str, Any]

#: Conditions whose transitions get an Event (the others change together with these).
EVENT_CONDITIONS = {ConditionType.READY, ConditionType.DEGRADED, ConditionType.POLICY_ADMITTED}


class ApplyRejected(Exception):
    """The API server refused a child for a reason a retry of the same manifest cannot fix (422 Invalid,
    400, 403 from an admission webhook or quota): reported as ApplyFailed with the server's message.
    Transient errors (409, 429, 5xx, unreachable) are not this: they propagate and the queue retries."""

    def __init__(self, manifest: Obj, error: ApiError) -> None:
        meta = manifest.get("metadata") or {}
        super().__init__(
            f"the API server rejected {manifest.get('kind')} {meta.get('name')!r}: "
            f"{error.code} {error.reason}: {error.message}"
        )
        self.manifest = manifest
        self.error = error


async def apply(ctx: Context, manifest: Obj) -> Obj:
    """Server-side apply one child; ApplyRejected when the server refuses it for good."""
    try:
        return await ctx.kube.apply(manifest)
    except ApiError as exc:
        if exc.retriable:
            raise
        raise ApplyRejected(manifest, exc) from exc


async def apply_all(ctx: Context, *manifests: Obj) -> list[Obj]:
    """Apply independent children concurrently (one round-trip of latency); ApplyRejected as apply."""
    return list(await asyncio.gather(*(apply(ctx, m) for m in manifests)))


async def commit(
    ctx: Context, obj: Obj, fields: Obj, conditions: list[Cond], *, message: str | None = None
) -> Obj:
    """Write `fields` + `conditions` as the object's status when different from what it has now."""
    meta = obj["metadata"]
    old: Obj = obj.get("status") or {}
    generation = meta.get("generation")
    merged, changed = merge(old.get("conditions"), conditions, generation, now_rfc3339())
    ready = next((c for c in conditions if c.type == ConditionType.READY), None)
    new: Obj = {**{k: v for k, v in fields.items() if v is not None}, "conditions": merged}
    if generation is not None:
        new["observedGeneration"] = generation
    summary = message if message is not None else (ready.message if ready else None)
    if summary:
        new["message"] = summary[:4096]
    patch = status_diff(old, new)
    if not patch:
        return obj
    try:
        updated = await ctx.kube.patch_status(
            obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"], patch
        )
    except NotFound:
        return obj  # deleted meanwhile: nothing to report on
    ctx.store.put(updated)
    had = {c.get("type") for c in old.get("conditions") or []}
    for c in changed:
        # A transition, not the first statement of a condition (unless it already reports a failure).
        if (c.type in EVENT_CONDITIONS and c.type in had) or c.warning:
            await ctx.record(updated, c)
    return updated


def standard(
    ready: bool,
    reason: str,
    message: str,
    *,
    progressing: bool,
    degraded: bool = False,
    degraded_reason: str | None = None,
) -> list[Cond]:
    """Ready / Progressing / Degraded, the trio every kind carries."""
    return [
        cond(ConditionType.READY, ready, reason, message),
        cond(ConditionType.PROGRESSING, progressing, reason, message if progressing else ""),
        cond(ConditionType.DEGRADED, degraded, degraded_reason or reason, message if degraded else ""),
    ]
