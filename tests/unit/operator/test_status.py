"""Conditions bookkeeping, child-state readers and the worker-summary mappings (no cluster)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from maestro.controllers.queue import WorkQueue
from maestro.reconcile import admission, dataset, training
from maestro.reconcile.progress import Rejected, progress_patch
from maestro.reconcile.store import Store
from maestro.status import deployments, jobs
from maestro.status.conditions import cond, merge, status_diff

pytestmark = pytest.mark.unit


def test_transition_time_moves_only_when_status_flips() -> None:
    first, changed = merge(None, [cond("Ready", False, "DatasetNotReady", "waiting")], 3, "t1")
    assert (
        first[0]["lastTransitionTime"] == "t1" and first[0]["observedGeneration"] == 3 and len(changed) == 1
    )
    second, changed = merge(first, [cond("Ready", False, "DatasetNotFound", "gone")], 3, "t2")
    assert second[0]["lastTransitionTime"] == "t1" and [c.reason for c in changed] == ["DatasetNotFound"]
    third, changed = merge(second, [cond("Ready", True, "Succeeded")], 4, "t3")
    assert third[0]["lastTransitionTime"] == "t3" and third[0]["status"] == "True"
    same, changed = merge(third, [cond("Ready", True, "Succeeded")], 4, "t4")
    assert same == third and changed == []


def test_status_diff_patches_only_changes() -> None:
    assert status_diff({"a": 1, "b": 2}, {"a": 1, "b": 2}) == {}
    assert status_diff({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"c": 3, "b": None}


def test_permanent_failures_are_warnings() -> None:
    assert cond("Ready", False, "GateFailed").warning
    assert not cond("Ready", False, "DatasetNotReady").warning
    assert cond("Degraded", True, "CrashLoopBackOff").warning


def job(conditions: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    return {"spec": {}, "status": {"conditions": conditions or [], **status}}


def test_job_view() -> None:
    assert jobs.view(None).state == jobs.JobState.MISSING
    assert jobs.view(job(active=1, ready=0)).state == jobs.JobState.PENDING
    assert jobs.view(job(active=1, ready=1)).state == jobs.JobState.RUNNING
    assert jobs.view(job([{"type": "Complete", "status": "True"}])).state == jobs.JobState.SUCCEEDED
    failed = jobs.view(job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]))
    assert failed.state == jobs.JobState.FAILED and failed.failure_reason == "DeadlineExceeded"
    assert jobs.view({"spec": {"suspend": True}, "status": {}}).state == jobs.JobState.SUSPENDED


def pod(
    name: str, phase: str, code: int, message: str, finished: str, index: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if index is not None:
        meta["annotations"] = {"batch.kubernetes.io/job-completion-index": index}
    term = {"exitCode": code, "message": message, "finishedAt": finished}
    return {
        "metadata": meta,
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": {"terminated": term}}]},
    }


def test_termination_prefers_success_then_latest_failure() -> None:
    pods = [
        pod("a", "Failed", 4, "io", "2026-01-01T00:00:01Z"),
        pod("b", "Failed", 5, "nan", "2026-01-01T00:00:02Z"),
    ]
    assert jobs.termination(pods, "trainer").pod == "b"  # type: ignore[union-attr]
    pods.append(pod("c", "Succeeded", 0, "{}", "2026-01-01T00:00:00Z"))
    assert jobs.termination(pods, "trainer").pod == "c"  # type: ignore[union-attr]
    ranked = [pod("r1", "Succeeded", 0, "x", "t", "1"), pod("r0", "Succeeded", 0, "y", "t", "0")]
    assert jobs.termination(ranked, "trainer", index="0").message == "y"  # type: ignore[union-attr]
    assert jobs.termination(ranked, "other") is None


def test_rollout_view_never_ready_while_progressing_or_crashing() -> None:
    dep = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 1,
            "replicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "updatedReplicas": 2,
        },
    }
    assert not deployments.view(dep).complete  # type: ignore[union-attr]
    dep["status"]["observedGeneration"] = 2
    assert deployments.view(dep).complete  # type: ignore[union-attr]
    crash = {
        "metadata": {"name": "p"},
        "status": {
            "containerStatuses": [
                {
                    "name": "vllm",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "CUDA out of memory"}},
                }
            ]
        },
    }
    v = deployments.view(dep, [crash])
    assert v is not None and v.stuck_reason == "CrashLoopBackOff" and "CUDA out of memory" in v.stuck_message


def test_dataset_summary_maps_to_status() -> None:
    summary: Any = {
        "version": "sha256-" + "a" * 64,
        "passed": True,
        "exitCode": 0,
        "records": {
            "total": 10,
            "kept": 8,
            "duplicates": 1,
            "nearDuplicates": 1,
            "piiRedacted": 2,
            "piiDropped": 1,
            "piiByType": {"EMAIL": 2},
            "filtered": 0,
            "invalid": 0,
            "train": 7,
            "validation": 1,
        },
        "stats": {
            "languages": {"en": 0.75, "de": 0.25},
            "lengthChars": {"p50": 10, "p95": 20, "max": 30},
            "estimatedTokens": 60,
        },
        "gates": [{"name": "minRecords", "passed": True, "value": 8, "threshold": 5}],
        "artifact": {"uri": "pvc://c/sha256-x", "reportUri": "pvc://c/sha256-x/report.json"},
    }
    st = dataset.summary_status(summary).model_dump(by_alias=True, exclude_none=True, mode="json")
    assert st["version"] == "sha256:" + "a" * 64
    assert st["records"]["duplicates"] == 2 and st["stats"]["languages"] == {"en": 6, "de": 2}
    assert st["stats"]["piiByEntity"] == {"EMAIL": 2}
    assert st["records"]["piiDropped"] == 1 and st["stats"]["estimatedTokens"] == 60
    assert st["gates"] == [{"name": "minRecords", "passed": True, "value": "8", "threshold": "5"}]


def test_training_model_uri_points_into_the_output_claim() -> None:
    assert training.model_uri("/mnt/maestro/output/model", "out") == "pvc://out/model"
    assert training.model_uri("file:///mnt/maestro/output/merged", "out") == "pvc://out/merged"
    assert training.model_uri("s3://b/m", "out") == "s3://b/m"
    assert training.model_format("peft-lora", False) == "adapter"


def test_progress_patch_validates_numbers() -> None:
    assert progress_patch({"step": 5, "totalSteps": 20, "loss": 2.0}) == {
        "step": 5,
        "totalSteps": 20,
        "percent": 25,
        "loss": 2.0,
    }
    with pytest.raises(Rejected):
        progress_patch({"step": "five"})
    assert progress_patch({"step": 30, "phase": "evaluating"})["stage"] == "evaluating"
    with pytest.raises(Rejected):
        progress_patch({"phase": "done"})


def policy(
    name: str, admission_rules: dict[str, Any], selector: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"admission": admission_rules}
    if selector:
        spec["selector"] = selector
    return {"kind": "LLMPolicy", "metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def test_admission_rules_name_policy_and_rule() -> None:
    store = Store()
    store.put(policy("gpus", {"maxGPUsPerJob": 4}))
    store.put(policy("teams", {"allowedModelSources": ["hf://acme/"]}, {"matchLabels": {"team": "a"}}))
    tj = {
        "kind": "LLMTrainingJob",
        "metadata": {"name": "t", "namespace": "ns", "labels": {"team": "a"}},
        "spec": {"baseModel": {"uri": "hf://other/m"}, "resources": {"gpus": 4, "nodes": 2}},
    }
    policies, missing = admission.governing_policies(store, tj)
    assert [p["metadata"]["name"] for p in policies] == ["gpus", "teams"] and missing is None
    found = {str(v) for v in admission.check(tj, policies, store)}
    assert any('LLMPolicy "gpus" rule admission.maxGPUsPerJob' in v and "8 GPUs" in v for v in found)
    assert any('LLMPolicy "teams" rule admission.allowedModelSources' in v for v in found)
    tj["metadata"]["labels"] = {}
    assert [p["metadata"]["name"] for p in admission.governing_policies(store, tj)[0]] == ["gpus"]
    dep = {
        "kind": "LLMDeployment",
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {"model": {"uri": "hf://x/y"}, "policyRef": {"name": "missing"}},
    }
    assert admission.governing_policies(store, dep) == ([], "missing")
    ds = {
        "kind": "LLMDataset",
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {"governance": {"containsPersonalData": True}},
    }
    (v,) = admission.check(ds, [policy("p", {})], store)
    assert v.rule == "admission.requireConsentForPersonalData"


def test_store_ignores_older_versions_and_finds_dependents() -> None:
    store = Store()
    ds = {"kind": "LLMDataset", "metadata": {"name": "d", "namespace": "ns", "resourceVersion": "5"}}
    assert store.put(ds)
    assert not store.put({**ds, "metadata": {**ds["metadata"], "resourceVersion": "4"}})
    store.put(
        {
            "kind": "LLMTrainingJob",
            "metadata": {"name": "t", "namespace": "ns"},
            "spec": {"datasetRef": {"name": "d"}},
        }
    )
    store.put(
        {
            "kind": "LLMDeployment",
            "metadata": {"name": "x", "namespace": "ns"},
            "spec": {"model": {"trainingJobRef": {"name": "t"}}},
        }
    )
    assert store.dependents("LLMDataset", "ns", "d") == [("LLMTrainingJob", "ns", "t")]
    assert store.dependents("LLMTrainingJob", "ns", "t") == [("LLMDeployment", "ns", "x")]


async def test_queue_dedups_serialises_and_retries() -> None:
    calls: list[str] = []
    running: set[str] = set()
    overlap = False
    fail_once = {"b"}

    async def process(key: Any) -> float | None:
        nonlocal overlap
        overlap = overlap or key in running
        running.add(key)
        calls.append(key)
        await asyncio.sleep(0.01)
        running.discard(key)
        if key in fail_once:
            fail_once.discard(key)
            raise RuntimeError("transient")
        return None

    q = WorkQueue(process, workers=4, base_backoff=0.01)
    q.start()
    for _ in range(5):
        q.add("a")
    q.add("b")
    await asyncio.sleep(0.005)
    q.add("a")  # while "a" runs: exactly one more run afterwards
    await asyncio.sleep(0.2)
    await q.stop()
    assert calls.count("a") == 2 and calls.count("b") == 2 and not overlap


async def test_queue_an_earlier_requeue_replaces_a_later_one() -> None:
    """A retention expiry days away must not hold back a retry due in seconds (and vice versa the
    earlier of two requeues wins, whichever came first)."""
    calls: list[str] = []

    async def process(key: Any) -> float | None:
        calls.append(key)
        return None

    q = WorkQueue(process, workers=1)
    q.start()
    q.add("a", delay=3600)
    q.add("a", delay=0.01)
    q.add("b", delay=0.01)
    q.add("b", delay=3600)
    await asyncio.sleep(0.1)
    await q.stop()
    assert sorted(calls) == ["a", "b"]
