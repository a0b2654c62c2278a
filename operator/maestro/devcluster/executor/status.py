"""Pod status the way a kubelet writes it: container states, phase, conditions, time formats."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
#: kubelet limits: the termination message file is read up to 4096 bytes; the log fallback takes
#: the last 80 lines, at most 2048 bytes.
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


def rfc3339(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


@dataclass
class Conditions:
    """Pod conditions with lastTransitionTime moving only when a status flips."""

    items: dict[str, Obj] = field(default_factory=dict)

    def set(self, type_: str, status: bool, reason: str | None = None, message: str | None = None) -> None:
        value = "True" if status else "False"
        old = self.items.get(type_)
        cond: Obj = {
            "type": type_,
            "status": value,
            "lastTransitionTime": old["lastTransitionTime"] if old and old["status"] == value else rfc3339(),
            "lastProbeTime": None,
        }
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        self.items[type_] = cond

    def as_list(self) -> list[Obj]:
        return list(self.items.values())


def waiting(reason: str, message: str | None = None) -> Obj:
    w: Obj = {"reason": reason}
    if message:
        w["message"] = message
    return {"waiting": w}


def terminated_state(status: Obj, started: float, container_id: str, message: str) -> Obj:
    code = int(status.get("exitCode", 137))
    reason = status.get("reason") or ("Completed" if code == 0 else "Error")
    t: Obj = {
        "exitCode": code,
        "reason": reason,
        "startedAt": rfc3339(status.get("startedAt") or started),
        "finishedAt": rfc3339(status.get("finishedAt")),
        "containerID": container_id,
    }
    if status.get("signal"):
        t["signal"] = int(status["signal"])
    if message:
        t["message"] = message
    return {"terminated": t}


def tail_text(data: bytes, max_lines: int = FALLBACK_LOG_LINES, max_bytes: int = FALLBACK_LOG_BYTES) -> str:
    lines = data.splitlines(keepends=True)[-max_lines:]
    return b"".join(lines)[-max_bytes:].decode(errors="replace")
