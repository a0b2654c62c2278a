"""LLMDataset -> the claim holding versioned copies + one validation Job per spec.

The Job name carries a hash of the spec, so a new generation with a new spec runs a new validation
while earlier versions' artifacts stay on the claim.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from maestro.api.common import ComputeResources
from maestro.api.dataset import LLMDatasetSpec
from maestro.builders import pods
from maestro.builders.meta import LABEL_SPEC_HASH, child_name, digest, object_meta
from maestro.builders.settings import Settings
from maestro.workers.data import contract

Obj = dict[str, Any]
COMPONENT = "dataset-validation"
CONTAINER = "validate"
OUTPUT_VOLUME = "output"
SOURCE_VOLUME = "source"


def claim_name(owner: Obj, spec: LLMDatasetSpec) -> str:
    return claim_for(owner["metadata"]["name"], spec.storage.pvc.claim_name)


def claim_for(dataset: str, claim_name: str | None) -> str:
    """The claim a dataset writes its versions to: the one its spec names, else `<name>-data`."""
    return claim_name or child_name(dataset, "data")


def spec_hash(spec: LLMDatasetSpec) -> str:
    return digest(spec.model_dump(by_alias=True, exclude_none=True, mode="json"), 10)


def job_name(owner: Obj, spec: LLMDatasetSpec) -> str:
    return child_name(owner["metadata"]["name"], f"val-{spec_hash(spec)[:6]}")


def build_pvc(owner: Obj, spec: LLMDatasetSpec, settings: Settings) -> Obj | None:
    """The claim for versioned copies, or None when the spec names an existing one (never ours to own)."""
    return pods.owned_pvc(owner, claim_name(owner, spec), COMPONENT, spec.storage.pvc, settings)


def build_job(owner: Obj, spec: LLMDatasetSpec, settings: Settings, pinned: Iterable[str] = ()) -> Obj:
    """The validation Job. `pinned`: the dataset versions LLMTrainingJobs use; with
    governance.retentionDays set (the worker reads it from the spec) the worker deletes older
    versions from the claim except these (sorted, so the manifest is the same for the same pins)."""
    claim = claim_name(owner, spec)
    h = spec_hash(spec)
    meta = object_meta(owner, job_name(owner, spec), COMPONENT, extra_labels={LABEL_SPEC_HASH: h})
    env: list[Obj] = [
        pods.spec_env(contract.ENV_SPEC, spec),
        {"name": contract.ENV_OUTPUT_DIR, "value": contract.DEFAULT_OUTPUT_DIR},
        {"name": contract.ENV_ARTIFACT_PREFIX, "value": f"pvc://{claim}/"},
        {"name": contract.ENV_TERMINATION_PATH, "value": contract.DEFAULT_TERMINATION_PATH},
        {"name": contract.ENV_PVC_ROOT, "value": contract.DEFAULT_PVC_ROOT},
        {"name": "HOME", "value": "/tmp"},
    ]
    if spec.governance.retention_days is not None:
        env.append({"name": contract.ENV_PINNED_VERSIONS, "value": ",".join(sorted(set(pinned)))})
    mounts: list[Obj] = [
        {"name": OUTPUT_VOLUME, "mountPath": contract.DEFAULT_OUTPUT_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[Obj] = [pods.pvc_volume(OUTPUT_VOLUME, claim), pods.empty_dir("tmp")]
    if spec.source.uri.startswith("pvc://"):
        src_claim, _ = pods.split_pvc_uri(spec.source.uri)
        volumes.append(pods.pvc_volume(SOURCE_VOLUME, src_claim, read_only=True))
        mounts.append(
            {"name": SOURCE_VOLUME, "mountPath": f"{contract.DEFAULT_PVC_ROOT}/{src_claim}", "readOnly": True}
        )
    container: Obj = {
        "name": CONTAINER,
        "image": settings.worker_image,
        "command": list(contract.COMMAND),
        "env": env,
        "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "securityContext": pods.container_security_context(read_only_root=True),
        "terminationMessagePath": contract.DEFAULT_TERMINATION_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.source.credentials_secret_ref:
        container["envFrom"] = [{"secretRef": {"name": spec.source.credentials_secret_ref.name}}]
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pods.pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    pods.apply_scheduling(pod_spec, ComputeResources(gpus=0), settings.jobs)
    permanent = sorted(set(contract.EXIT_REASONS) - {contract.EXIT_OK} - set(contract.RETRIABLE_EXIT_CODES))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 2,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": permanent},
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": pods.pod_labels(meta["labels"], settings)},
                "spec": pod_spec,
            },
        },
    }
