"""Retention (spec.governance.retentionDays): the worker deletes expired, unpinned version directories
before it reads the source, touches nothing else, and reports what it did in the summary."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import data_helpers
import pytest
from data_helpers import Run, chat, write_jsonl

from maestro.reconcile.dataset import summary_status
from maestro.workers.data import contract, retention
from maestro.workers.data.pipeline import _publish

pytestmark = pytest.mark.unit
run_validate = data_helpers.run_validate  # the fixture, shared without a conftest.py

RunFn = Callable[..., Run]
DAY = 86400


def version(tag: str) -> str:
    return "sha256-" + hashlib.sha256(tag.encode()).hexdigest()


def copy_of(out: Path, name: str, age_days: float) -> Path:
    """A version directory with a file in it, last modified `age_days` ago."""
    d = out / name
    d.mkdir(parents=True)
    (d / "train.jsonl").write_text("{}\n")
    then = time.time() - age_days * DAY
    os.utime(d, (then, then))
    return d


def test_prune_deletes_only_expired_unpinned_versions(tmp_path: Path) -> None:
    out = tmp_path / "claim"
    old, pinned, fresh = version("old"), version("pinned"), version("fresh")
    copy_of(out, old, 3)
    copy_of(out, pinned, 3)
    copy_of(out, fresh, 0.5)
    # not versions: never touched, however old
    for name in ("notes", "sha256-short", "sha256-" + "G" * 64, ".tmp-abc"):
        copy_of(out, name, 30)
    (out / "README.txt").write_text("keep me")
    os.utime(out / "README.txt", (0, 0))
    os.symlink(out / "notes", out / version("link"))  # a link named like a version is not a copy

    got = retention.prune(str(out), 1, retention.parse_pinned(f"sha256:{pinned.removeprefix('sha256-')}"))

    assert got.versions == [old] and got.errors == [] and got.kept_pinned == [pinned]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            pinned,
            fresh,
            "notes",
            "sha256-short",
            "sha256-" + "G" * 64,
            ".tmp-abc",
            "README.txt",
            version("link"),
        ]
    )
    assert (out / "notes" / "train.jsonl").exists()  # the link was not followed


def test_prune_reports_failures_and_carries_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "claim"
    a, b = sorted([version("a"), version("b")])
    copy_of(out, a, 5)
    copy_of(out, b, 5)
    real_rmtree = retention.shutil.rmtree

    def rmtree(path: str) -> None:
        if path.endswith(a):
            raise PermissionError(13, "Permission denied")
        real_rmtree(path)

    monkeypatch.setattr(retention.shutil, "rmtree", rmtree)
    got = retention.prune(str(out), 2, log=False)
    assert got.versions == [b] and got.errors == [f"{a}: Permission denied"]
    assert (out / a).exists() and not (out / b).exists()
    assert retention.prune(str(tmp_path / "missing"), 1).versions == []  # a fresh claim


def test_publish_gives_a_revalidated_copy_a_fresh_mtime(tmp_path: Path) -> None:
    out = tmp_path / "claim"
    name = version("same")
    copy_of(out, name, 10)
    tmp = out / ".tmp-1"
    tmp.mkdir()
    (tmp / "train.jsonl").write_text("{}\n")
    _publish(str(tmp), str(out), name)
    assert time.time() - (out / name).stat().st_mtime < 60 and not tmp.exists()
    assert retention.prune(str(out), 1).versions == []
    # a new version renamed into place is fresh too (mkdtemp's time is when the run started)
    tmp2 = out / ".tmp-2"
    tmp2.mkdir()
    os.utime(tmp2, (0, 0))
    _publish(str(tmp2), str(out), version("new"))
    assert time.time() - (out / version("new")).stat().st_mtime < 60


def test_validation_prunes_first_and_reports_it(
    tmp_path: Path, run_validate: RunFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "claim"
    expired = [version(f"e{i}") for i in range(contract.MAX_PRUNED_LISTED + 5)]
    for name in expired:
        copy_of(out, name, 3)
    pinned = version("pinned")
    copy_of(out, pinned, 3)
    monkeypatch.setenv(contract.ENV_PINNED_VERSIONS, "sha256:" + pinned.removeprefix("sha256-"))
    src = write_jsonl(
        tmp_path / "d.jsonl", [chat(f"question {i} here", f"answer {i} there") for i in range(5)]
    )
    run = run_validate(src, {"governance": {"retentionDays": 1}}, out=out)
    assert run.code == contract.EXIT_OK
    assert run.summary["prunedCount"] == len(expired)
    assert set(run.summary["prunedVersions"]) <= set(expired) and run.summary["prunedVersions"]
    assert sorted(p.name for p in out.iterdir()) == sorted([pinned, str(run.summary["version"])])
    status = summary_status(run.summary)
    assert status.pruned_count == len(expired)
    assert status.pruned_versions and status.pruned_versions[0] == "sha256:" + sorted(expired)[
        0
    ].removeprefix("sha256-")
    assert len(status.pruned_versions) <= contract.MAX_PRUNED_LISTED


def test_an_expired_copy_is_pruned_even_when_the_source_is_gone(tmp_path: Path, run_validate: RunFn) -> None:
    out = tmp_path / "claim"
    old = version("old")
    copy_of(out, old, 3)
    run = run_validate(tmp_path / "gone.jsonl", {"governance": {"retentionDays": 1}}, out=out)
    assert run.code == contract.EXIT_BAD_INPUT and "source not found" in run.summary["reason"]
    assert run.summary["prunedVersions"] == [old] and not (out / old).exists()


def test_without_retention_nothing_is_pruned(tmp_path: Path, run_validate: RunFn) -> None:
    out = tmp_path / "claim"
    old = version("old")
    copy_of(out, old, 3000)
    run = run_validate(tmp_path / "gone.jsonl", out=out)
    assert "prunedVersions" not in run.summary and (out / old).exists()


def test_prune_fields_fit_the_termination_message() -> None:
    summary = {
        "version": None,
        "passed": False,
        "exitCode": 2,
        "records": {"total": 0, "kept": 0},
        "stats": {"languages": {f"l{i:03d}": i for i in range(40)}},
        "gates": [],
        "artifact": None,
        "reason": "r" * 1000,
    }
    pruned = retention.Pruned(
        versions=[version(str(i)) for i in range(60)],
        errors=[f"{version(str(i))}: " + "e" * 400 for i in range(9)],
    )
    pruned.add_to(summary)
    text = contract.dump_summary(summary)
    assert len(text.encode()) <= contract.MAX_SUMMARY_BYTES
    parsed = json.loads(text)
    assert parsed["prunedCount"] == 60 and parsed["pruneErrors"]
    status = summary_status(contract.parse_summary(text))
    assert status.pruned_count == 60 and len(status.pruned_versions or []) < 60


def test_a_validation_without_pruning_adds_nothing_to_status() -> None:
    summary = contract.parse_summary(
        json.dumps(
            {
                "version": None,
                "passed": False,
                "exitCode": 2,
                "records": {},
                "stats": {},
                "gates": [],
                "artifact": None,
            }
        )
    )
    dumped = summary_status(summary).model_dump(by_alias=True, exclude_none=True)
    assert not {"prunedVersions", "prunedCount", "pruneErrors", "expiresAt"} & set(dumped)
