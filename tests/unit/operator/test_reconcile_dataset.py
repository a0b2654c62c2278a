"""reconcile.dataset after its validation Job failed: the worker's exit code decides the reason."""

from __future__ import annotations

from typing import Any

import pytest

from maestro.builders.settings import Settings
from maestro.k8s.errors import Invalid
from maestro.reconcile import dataset
from maestro.reconcile.context import Context
from maestro.reconcile.store import Store
from maestro.workers.data import contract

pytestmark = pytest.mark.unit


def summary(reason: str, gates: list[dict[str, Any]] | None = None, code: int = 2) -> str:
    return contract.dump_summary(
        {
            "version": None,
            "passed": False,
            "exitCode": code,
            "records": {"total": 23, "kept": 0, "invalid": 3},
            "stats": {},
            "gates": gates or [],
            "artifact": None,
            "reason": reason,
        }
    )


class FailedJobKube:
    """The API as the dataset sees it once its validation Job failed with `code` and `message`."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message
        self.patches: list[dict[str, Any]] = []

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return manifest

    async def get(self, api: str, kind: str, name: str, ns: str) -> dict[str, Any] | None:
        if kind != "Job":
            return None
        return {
            "metadata": {"name": name, "namespace": ns, "uid": "job-uid"},
            "spec": {},
            "status": {
                "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}],
            },
        }

    async def list(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        term = {"exitCode": self.code, "message": self.message, "finishedAt": "2026-01-01T00:01:00Z"}
        return [
            {
                "metadata": {"name": "validate-pod"},
                "status": {
                    "phase": "Failed",
                    "containerStatuses": [{"name": "validate", "state": {"terminated": term}}],
                },
            }
        ]

    async def patch_status(self, api: str, kind: str, name: str, ns: str, patch: dict[str, Any]) -> Any:
        self.patches.append(patch)
        return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, "status": patch}


async def _ignore(*_: Any) -> None:
    return None


async def ready_after(dataset_obj: dict[str, Any], code: int, message: str) -> tuple[str, dict[str, Any]]:
    kube = FailedJobKube(code, message)
    ctx = Context(kube=kube, settings=Settings(), store=Store(), on_transition=_ignore)  # type: ignore[arg-type]
    result = await dataset.reconcile(ctx, dataset_obj)
    ready = next(c for c in kube.patches[-1]["conditions"] if c["type"] == "Ready")
    return str(result.phase), ready


INVALID_GATE = {"name": "invalidRecords", "passed": False, "value": 0.13, "threshold": 0.0}
PII_GATE = {"name": "piiReject", "passed": False, "value": 2, "threshold": 0}


@pytest.mark.parametrize(
    ("code", "message", "reason", "says"),
    [
        (
            contract.EXIT_CHECKSUM_MISMATCH,
            summary(f"checksum mismatch: spec.source.sha256 is {'0' * 64} but the source has {'a' * 64}"),
            "ChecksumMismatch",
            "0" * 64,
        ),
        (
            contract.EXIT_SCHEMA_MISMATCH,
            summary(
                "invalidRecords: 3 of 23 records are malformed; first: line 5: messages[1].content",
                [INVALID_GATE],
            ),
            "SchemaMismatch",
            "line 5: messages[1].content",
        ),
        (
            contract.EXIT_PII_REJECTED,
            summary("piiReject: processing.pii.action is reject and 2 records hold PII", [PII_GATE]),
            "PIIRejected",
            "2 records hold PII",
        ),
        # the kubelet may show the log tail instead of the summary: the exit code alone decides
        (contract.EXIT_CHECKSUM_MISMATCH, "Traceback ...", "ChecksumMismatch", "exit 5"),
        # a plain gate failure stays GateFailed
        (
            contract.EXIT_GATES_FAILED,
            summary(
                "minRecords: only 3", [{"name": "minRecords", "passed": False, "value": 3, "threshold": 5}]
            ),
            "GateFailed",
            "minRecords",
        ),
    ],
)
async def test_the_workers_exit_code_names_the_failure(
    dataset_obj: dict[str, Any], code: int, message: str, reason: str, says: str
) -> None:
    phase, ready = await ready_after(dataset_obj, code, message)
    assert phase == "Failed"
    assert ready["status"] == "False" and ready["reason"] == reason and says in ready["message"]


def test_the_new_reasons_are_permanent_exit_codes() -> None:
    from maestro.api.conditions import PERMANENT

    for code in (contract.EXIT_CHECKSUM_MISMATCH, contract.EXIT_SCHEMA_MISMATCH, contract.EXIT_PII_REJECTED):
        assert code not in contract.RETRIABLE_EXIT_CODES
        assert dataset._EXIT_REASON[code] in PERMANENT


class RejectingKube(FailedJobKube):
    """No Job yet, and the API server refuses the validation Job (e.g. a bad resource quantity)."""

    async def get(self, *_: Any) -> None:
        return None

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == "Job":
            raise Invalid(
                422, "Invalid", 'Job.batch is invalid: spec.template.spec.containers[0]: Invalid value: "x"'
            )
        return manifest


async def test_a_validation_job_the_api_server_rejects_is_apply_failed(dataset_obj: dict[str, Any]) -> None:
    kube = RejectingKube(0, "")
    ctx = Context(kube=kube, settings=Settings(), store=Store(), on_transition=_ignore)  # type: ignore[arg-type]
    result = await dataset.reconcile(ctx, dataset_obj)
    ready = next(c for c in kube.patches[-1]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ApplyFailed" and "containers[0]: Invalid value" in ready["message"]
    assert result.phase == "Pending" and result.requeue_after  # not terminal: tried again


def test_pinned_versions_are_what_training_jobs_use_from_the_claim(dataset_obj: dict[str, Any]) -> None:
    """Lineage and datasetRef pins of this dataset's training jobs, and, on a claim shared with another
    dataset, that dataset's current version and its jobs' pins; never another claim's."""
    from maestro.api import LLMDatasetSpec

    def v(c: str) -> str:
        return "sha256:" + c * 64

    def tj(name: str, ds: str, pin: str | None = None, lineage: str | None = None) -> dict[str, Any]:
        return {
            "kind": "LLMTrainingJob",
            "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "1"},
            "spec": {"datasetRef": {"name": ds, **({"version": pin} if pin else {})}},
            "status": {"lineage": {"datasetVersion": lineage}} if lineage else {},
        }

    def ds(name: str, claim: str | None, version: str) -> dict[str, Any]:
        storage = {"pvc": {"claimName": claim}} if claim else {}
        return {
            "kind": "LLMDataset",
            "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "1"},
            "spec": {"source": {"uri": "s3://b/k"}, "storage": storage},
            "status": {"version": version},
        }

    store = Store()
    for o in (
        tj("trained", "support-chats", lineage=v("a")),
        tj("pinning", "support-chats", pin=v("b")),
        tj("waiting", "support-chats"),
        tj("other-dataset", "elsewhere", lineage=v("c")),
        tj("sharing-job", "sharing", lineage=v("d")),
        ds("sharing", "support-chats-data", v("e")),
        ds("elsewhere", None, v("f")),
        {**tj("x", "support-chats", lineage=v("9")), "metadata": {"name": "x", "namespace": "b"}},
    ):
        store.put(o)
    spec = LLMDatasetSpec.model_validate(dataset_obj["spec"])
    assert dataset.pinned_versions(store, dataset_obj, spec) == (v("a"), v("b"), v("d"), v("e"))
