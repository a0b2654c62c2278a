"""Retention: delete the versioned copies that `spec.governance.retentionDays` no longer allows.

Runs before the source is read, so an expired copy is gone even when the new validation then fails
(the source was deleted, say). Only `<out>/<version>` directories are candidates — names exactly of
the form `version_of` produces — and never one an LLMTrainingJob pins (the operator passes those in
`contract.ENV_PINNED_VERSIONS`): a model's lineage must keep pointing at data that exists. Nothing else
on the claim (reports of other tools, `.tmp-*` leftovers, files) is touched.

A copy's age is its directory's modification time: `pipeline._publish` renames a new version into
place or replaces the files of an existing one, and touches the directory either way, so a copy that
is validated again starts its retention anew.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from maestro.workers.data.contract import MAX_PRUNE_ERRORS, MAX_PRUNED_LISTED

#: A version directory (see pipeline.version_of); anything else on the claim is never deleted.
VERSION_DIR = re.compile(r"^sha256-[0-9a-f]{64}$")
DAY_SECONDS = 86400


@dataclass
class Pruned:
    """What one retention pass did."""

    #: Version directories deleted, sorted.
    versions: list[str] = field(default_factory=list)
    #: "<version>: <why>" for expired copies that could not be deleted (they are tried again next time).
    errors: list[str] = field(default_factory=list)
    #: Expired copies kept because a training job pins them, sorted.
    kept_pinned: list[str] = field(default_factory=list)

    def add_to(self, summary: dict[str, Any]) -> None:
        """Report the pass in the termination summary (`contract.Summary` prune fields)."""
        if self.versions:
            summary["prunedVersions"] = self.versions[:MAX_PRUNED_LISTED]
            summary["prunedCount"] = len(self.versions)
        if self.errors:
            summary["pruneErrors"] = [e[:300] for e in self.errors[:MAX_PRUNE_ERRORS]]


def parse_pinned(text: str | None) -> frozenset[str]:
    """`contract.ENV_PINNED_VERSIONS` → version directory names; `sha256:<hex>` (the status and
    datasetRef form) and `sha256-<hex>` (the directory form) are both accepted."""
    out = set()
    for item in (text or "").split(","):
        item = item.strip()
        if item:
            out.add(item.replace("sha256:", "sha256-", 1))
    return frozenset(out)


def prune(
    output_dir: str,
    retention_days: int,
    pinned: Iterable[str] = (),
    *,
    now: float | None = None,
    log: bool = True,
) -> Pruned:
    """Delete every version directory under `output_dir` last modified more than `retention_days` ago
    that `pinned` does not name. Deletion failures are collected, never raised: retention must not
    stop a validation (the copy is tried again on the next one)."""
    keep = frozenset(pinned)
    cutoff = (time.time() if now is None else now) - retention_days * DAY_SECONDS
    result = Pruned()
    try:
        entries = sorted(os.scandir(output_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return result  # a fresh claim: nothing written yet
    except OSError as exc:
        result.errors.append(f"{output_dir}: cannot list the versions: {exc.strerror or exc}")
        _say(log, result.errors[-1])
        return result
    for entry in entries:
        if not VERSION_DIR.match(entry.name):
            continue
        try:
            # a symlink is not a copy this worker wrote: never follow it, never delete it
            if (
                not entry.is_dir(follow_symlinks=False)
                or entry.stat(follow_symlinks=False).st_mtime >= cutoff
            ):
                continue
        except OSError:
            continue  # vanished meanwhile
        if entry.name in keep:
            result.kept_pinned.append(entry.name)
            continue
        try:
            shutil.rmtree(entry.path)
        except OSError as exc:
            result.errors.append(f"{entry.name}: {exc.strerror or exc}")
            _say(log, f"cannot delete expired version {entry.name}: {exc.strerror or exc}")
            continue
        result.versions.append(entry.name)
        _say(log, f"deleted version {entry.name}: older than retentionDays {retention_days}")
    for name in result.kept_pinned:
        _say(log, f"kept expired version {name}: an LLMTrainingJob pins it")
    return result


def _say(log: bool, line: str) -> None:
    if log:
        print(f"maestro data: retention: {line}", file=sys.stderr, flush=True)
