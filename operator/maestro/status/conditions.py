"""Condition bookkeeping with `meta.SetStatusCondition` semantics.

`lastTransitionTime` changes only when a condition's status flips, so a reason or message update
does not look like a transition; transitions are returned so the caller can record an Event for
each one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from maestro.api.conditions import ConditionType, Reason, is_permanent

Obj = dict[str, Any]

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class Cond:
    type: str
    status: str
    reason: str
    message: str = ""

    @property
    def warning(self) -> bool:
        """An Event for this condition is a Warning: a permanent failure, or Degraded turning True."""
        if self.type == ConditionType.DEGRADED:
            return self.status == TRUE
        if self.type == ConditionType.TRACKED:  # best effort, never permanent, but a person should know
            return self.status == FALSE
        return self.status != TRUE and is_permanent(self.reason)


def cond(type_: str, ok: bool | None, reason: str | Reason, message: str = "") -> Cond:
    status = UNKNOWN if ok is None else (TRUE if ok else FALSE)
    return Cond(str(type_), status, str(reason), message)


def now_rfc3339(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(
    old: list[Obj] | None, new: list[Cond], generation: int | None, now: str
) -> tuple[list[Obj], list[Cond]]:
    """New conditions list (order of `new`) and the conditions whose status or reason changed.

    Conditions in `old` but not in `new` are dropped: each reconcile states every condition it owns.
    """
    previous = {c.get("type"): c for c in (old or [])}
    out: list[Obj] = []
    changed: list[Cond] = []
    for c in new:
        prev = previous.get(c.type)
        flipped = prev is None or prev.get("status") != c.status
        if flipped or prev is None or prev.get("reason") != c.reason:
            changed.append(c)
        entry: Obj = {
            "type": c.type,
            "status": c.status,
            "reason": c.reason,
            "message": c.message[:32768],
            "lastTransitionTime": now if flipped or prev is None else prev.get("lastTransitionTime", now),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        out.append(entry)
    return out, changed


def find(conditions: list[Obj] | None, type_: str) -> Obj | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: list[Obj] | None, type_: str) -> bool:
    c = find(conditions, type_)
    return bool(c and c.get("status") == TRUE)


def status_diff(old: Obj | None, new: Obj) -> Obj:
    """Top-level merge-patch from `old` to `new` (removed keys become None); empty when equal."""
    old = old or {}
    patch: Obj = {k: v for k, v in new.items() if old.get(k) != v}
    for k in old:
        if k not in new:
            patch[k] = None
    return patch
