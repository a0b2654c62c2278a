"""The shape every reconcile has: observe → decide → apply.

- **observe** (async, per kind) gathers facts: the parsed spec, dependencies from the cache, the
  children that exist. It writes nothing.
- **decide** (pure, per kind) turns spec + facts into a `Plan`: the children that must exist (and
  those that must not), the typed status, the conditions, when to look again.
- **apply** (`execute`, here, for every kind) carries a plan out in one pass: server-side apply of
  the children, deletions, then one status commit (patched only when it changed) and an Event per
  condition transition.

When the API server refuses a child for good (`ApplyRejected`), the kind decides again with that
fact (`redecide`), so the failure is reported like any other decision and nothing half-applied is
mistaken for success.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from maestro.api.common import StatusModel
from maestro.api.conditions import ConditionType, Reason
from maestro.builders.meta import LABEL_OWNER_KIND, LABEL_OWNER_NAME, ChildRef, fingerprint
from maestro.builders.settings import Settings
from maestro.k8s.errors import ApiError, NotFound
from maestro.reconcile.context import Built, Context, InvalidObject, Result
from maestro.status.conditions import Cond, cond, merge, now_rfc3339, status_diff

Obj = dict[str, Any]
S = TypeVar("S", bound=StatusModel)

#: Conditions whose transitions get an Event (the others change together with these).
EVENT_CONDITIONS = {
    ConditionType.READY,
    ConditionType.DEGRADED,
    ConditionType.POLICY_ADMITTED,
    ConditionType.TRACKED,
}


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


@dataclass
class Plan:
    """What one reconcile decided; `execute` carries it out."""

    #: The status to write (without conditions, observedGeneration and message: `execute` adds them).
    status: StatusModel
    conditions: list[Cond]
    #: The one-line status.message; None = the Ready condition's message.
    message: str | None = None
    #: Children keyed by reference: a manifest is server-side applied, None means it must not exist.
    #: A kind the plan does not mention is left alone.
    children: Mapping[ChildRef, Obj | None] = field(default_factory=dict)
    #: A child this plan applies is known to be missing: apply even when the same set was applied before.
    force: bool = False
    #: (apiVersion, kind) → the only name of that kind this object may own (others are deleted).
    exclusive: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: Delete these children now (e.g. a failed Job, before it is re-run).
    delete: tuple[ChildRef, ...] = ()
    requeue_after: float | None = None
    #: Everything `children` was built from, when the kind can say so cheaply (see `Built`): the same
    #: key as the set last applied skips both the build and the fingerprint of the manifests.
    children_key: Hashable | None = None
    #: Events of transitions that are not condition flips (a canary's steps), recorded once the status
    #: that carries the transition is written.
    events: tuple[Cond, ...] = ()

    @property
    def phase(self) -> str | None:
        phase = getattr(self.status, "phase", None)
        return None if phase is None else str(phase)

    def result(self) -> Result:
        return Result(requeue_after=self.requeue_after, phase=self.phase)


M = TypeVar("M", bound=BaseModel)


def spec_of(model: type[M], obj: Obj) -> M:
    """The object's spec through its model; InvalidObject (with pydantic's field-naming message) when it
    does not parse — the webhook normally stops such a spec, reconcile reports it as InvalidSpec."""
    try:
        return model.model_validate(obj.get("spec") or {})
    except ValueError as exc:
        raise InvalidObject(str(exc)) from exc


def status_of(model: type[S], obj: Obj) -> S:
    """The object's current status read through its model (an unreadable one reads as empty: the
    reconcile then rewrites it from facts)."""
    try:
        return model.model_validate(obj.get("status") or {})
    except ValidationError:
        return model()


def dump(status: StatusModel) -> Obj:
    """Status model → wire form (camelCase, no nulls)."""
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


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


def invalid_spec(status: StatusModel, problem: str) -> Plan:
    """The plan for a spec that does not parse (`status` carries the kind's Failed phase): InvalidSpec,
    Degraded, nothing applied."""
    return Plan(
        status,
        standard(False, Reason.INVALID_SPEC, f"spec is invalid: {problem}", progressing=False, degraded=True),
    )


def conditions_of(obj: Obj, *, without: tuple[str, ...] = ()) -> list[Cond]:
    """The conditions an object carries now, to restate them unchanged (terminal objects)."""
    return [
        Cond(c["type"], c["status"], c.get("reason", ""), c.get("message", ""))
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("type") not in without
    ]


# -- apply ------------------------------------------------------------------------------------------


F = TypeVar("F")


async def run(
    ctx: Context,
    obj: Obj,
    observe: Callable[[Context, Obj], Awaitable[F]],
    decide: Callable[[Obj, F, Settings, float], Plan],
) -> Result:
    """One reconcile of any kind: observe, decide, execute; an ApplyRejected is decided again with the
    server's message as a fact (`apply_error` on the kind's Facts dataclass)."""
    facts = await observe(ctx, obj)

    def redecide(error: str) -> Plan:
        return decide(obj, replace(facts, apply_error=error), ctx.settings, ctx.poll_seconds)  # type: ignore[type-var]

    return await execute(ctx, obj, decide(obj, facts, ctx.settings, ctx.poll_seconds), redecide)


async def apply(ctx: Context, manifest: Obj) -> Obj:
    """Server-side apply one child; ApplyRejected when the server refuses it for good."""
    try:
        return await ctx.kube.apply(manifest)
    except ApiError as exc:
        if exc.retriable:
            raise
        raise ApplyRejected(manifest, exc) from exc


async def execute(
    ctx: Context, obj: Obj, plan: Plan, redecide: Callable[[str], Plan] | None = None
) -> Result:
    """Carry out `plan`: children, deletions, then the status. On ApplyRejected, `redecide(message)`
    gives the plan to report instead (its children are not applied)."""
    try:
        await _apply_children(ctx, obj, plan)
    except ApplyRejected as exc:
        if redecide is None:
            raise
        plan = redecide(str(exc))
    updated = await commit(ctx, obj, dump(plan.status), plan.conditions, message=plan.message)
    if updated is not obj:
        for event in plan.events:
            await ctx.record(updated, event)
    return plan.result()


async def _apply_children(ctx: Context, obj: Obj, plan: Plan) -> None:
    meta = obj["metadata"]
    ns, uid = meta["namespace"], meta.get("uid", "")
    for ref in plan.delete:
        await ctx.kube.delete(ref.api_version, ref.kind, ref.name, ns)
    wanted = [m for m in plan.children.values() if m is not None]
    if wanted or plan.exclusive:
        key = plan.children_key
        last = ctx.built.get(uid)
        if key is not None and not plan.force and last is not None and last.key == key and uid in ctx.applied:
            return  # the very inputs of the set last applied: nothing can differ
        children = fingerprint(
            [[(str(r), m) for r, m in plan.children.items()], sorted(plan.exclusive.items())]
        )
        if key is not None:
            ctx.built[uid] = Built(key, plan.children)
        if plan.force or ctx.applied.get(uid) != children:
            # Independent children go concurrently: one round-trip of latency for the whole set.
            await asyncio.gather(*(apply(ctx, m) for m in wanted))
            # A child that must not exist can only be left behind by a spec change (generation > 1).
            if meta.get("generation", 1) > 1:
                for ref, manifest in plan.children.items():
                    if manifest is None:
                        await ctx.kube.delete(ref.api_version, ref.kind, ref.name, ns)
            for (api_version, kind), keep in plan.exclusive.items():
                await _delete_others(ctx, obj, api_version, kind, keep)
            ctx.applied[uid] = children


async def _delete_others(ctx: Context, obj: Obj, api_version: str, kind: str, keep: str) -> None:
    """Delete the children of this kind the object owns other than `keep` (superseded Jobs)."""
    meta = obj["metadata"]
    labels = {LABEL_OWNER_KIND: obj["kind"], LABEL_OWNER_NAME: meta["name"]}
    for child in await ctx.kube.list(api_version, kind, meta["namespace"], labels=labels):
        if child["metadata"]["name"] != keep:
            await ctx.kube.delete(api_version, kind, child["metadata"]["name"], meta["namespace"])


async def commit(
    ctx: Context, obj: Obj, fields: Obj, conditions: list[Cond], *, message: str | None = None
) -> Obj:
    """Write `fields` + `conditions` as the object's status when different from what it has now."""
    meta = obj["metadata"]
    old: Obj = obj.get("status") or {}
    generation = meta.get("generation")
    merged, changed = merge(old.get("conditions"), conditions, generation, now_rfc3339())
    ready = next((c for c in conditions if c.type == ConditionType.READY), None)
    skip = ("conditions", "observedGeneration", "message")
    new: Obj = {
        **{k: v for k, v in fields.items() if v is not None and k not in skip},
        "conditions": merged,
    }
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
