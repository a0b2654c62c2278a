"""LLMTrainingJob -> output claim + training Job (Indexed + headless Service when nodes > 1).

The training pod holds no API credentials: progress goes to the operator's progress endpoint with a
projected service-account token whose audience is only that endpoint, and results come back through
the container's termination message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from maestro.api.training import LLMTrainingJobSpec
from maestro.builders import pods
from maestro.builders.meta import LABEL_SPEC_HASH, child_name, digest, object_meta
from maestro.builders.settings import Settings
from maestro.workers.train import contract

Obj = dict[str, Any]
COMPONENT = "training"
CONTAINER = "trainer"
DATASET_DIR = "/mnt/maestro/dataset"
OUTPUT_DIR = "/mnt/maestro/output"
PROGRESS_TOKEN_DIR = "/var/run/secrets/llmops.dev/progress"
PROGRESS_TOKEN_FILE = f"{PROGRESS_TOKEN_DIR}/token"
ANNOTATION_DATASET_VERSION = "llmops.dev/dataset-version"
ANNOTATION_IMAGE = "llmops.dev/image"
RETRY_ANNOTATION = "llmops.dev/retry"


@dataclass(frozen=True)
class DatasetInput:
    """What the training Job needs from its Ready LLMDataset."""

    claim: str
    #: Directory of the version on the claim (from the dataset's artifact URI).
    sub_path: str
    version: str
    schema_type: str


@dataclass(frozen=True)
class ResolvedTracking:
    """spec.tracking with the operator's defaults filled in: what the trainer is told."""

    uri: str
    experiment: str
    registered_model_name: str
    #: Secret (job namespace) whose MLFLOW_TRACKING_* keys become the trainer's env; None: anonymous.
    credentials_secret: str | None
    #: mlflow, or wandb (offline on the output claim: no uri, no credentials, no registry)
    backend: str = "mlflow"


def resolve_tracking(owner: Obj, spec: LLMTrainingJobSpec, settings: Settings) -> ResolvedTracking | None:
    """The spec's tracking, field by field over the operator's default; None when the job is not tracked.

    Credentials belong to the server they were made for: a spec that names its own URI gets only its
    own Secret, never the default server's.
    """
    t = spec.tracking
    if t is not None and not t.enabled:
        return None
    meta = owner["metadata"]
    if t is not None and t.backend == "wandb":  # offline: needs no server, so no operator default either
        return ResolvedTracking(
            uri="",
            experiment=t.experiment or settings.tracking_experiment or meta["namespace"],
            registered_model_name="",
            credentials_secret=None,
            backend="wandb",
        )
    uri = (t.uri if t else None) or settings.tracking_uri
    if not uri:
        return None
    secret = t.credentials_secret_ref.name if t and t.credentials_secret_ref else None
    if secret is None and not (t and t.uri):
        secret = settings.tracking_credentials_secret
    return ResolvedTracking(
        uri=uri.rstrip("/"),
        experiment=(t.experiment if t else None) or settings.tracking_experiment or meta["namespace"],
        registered_model_name=(t.registered_model_name if t else None)
        or f"{meta['namespace']}-{meta['name']}",
        credentials_secret=secret,
    )


def tracking_env(owner: Obj, spec: LLMTrainingJobSpec, settings: Settings, job: str) -> list[Obj]:
    """$MAESTRO_TRACKING for the trainer, and the credentials as secretKeyRefs (never values)."""
    tr = resolve_tracking(owner, spec, settings)
    if tr is None:
        return []
    meta = owner["metadata"]
    config = {
        **({"backend": tr.backend} if tr.backend != "mlflow" else {}),
        "uri": tr.uri,
        "experiment": tr.experiment,
        "registeredModelName": tr.registered_model_name,
        "runName": job,
        "tags": {
            "llmops.dev/uid": meta.get("uid") or "",
            "llmops.dev/namespace": meta["namespace"],
            "llmops.dev/name": meta["name"],
            "llmops.dev/job": job,
            "llmops.dev/dataset": spec.dataset_ref.name,
        },
    }
    env: list[Obj] = [{"name": contract.ENV_TRACKING, "value": json.dumps(config, sort_keys=True)}]
    if tr.credentials_secret:
        env += [
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": tr.credentials_secret, "key": key, "optional": True}},
            }
            for key in contract.TRACKING_CREDENTIAL_KEYS
        ]
    return env


def output_claim(owner: Obj, spec: LLMTrainingJobSpec) -> str:
    return spec.output.pvc.claim_name or child_name(owner["metadata"]["name"], "model")


def spec_hash(spec: LLMTrainingJobSpec) -> str:
    return digest(spec.model_dump(by_alias=True, exclude_none=True, mode="json"), 10)


def run_key(owner: Obj, spec: LLMTrainingJobSpec) -> str:
    """Identity of one run: the spec plus the retry annotation (a new value runs the job again)."""
    retry = ((owner["metadata"].get("annotations") or {}).get(RETRY_ANNOTATION)) or ""
    return digest([spec_hash(spec), retry], 5)


def job_name(owner: Obj, spec: LLMTrainingJobSpec) -> str:
    return child_name(owner["metadata"]["name"], f"train-{run_key(owner, spec)}")


def service_name(owner: Obj) -> str:
    return child_name(owner["metadata"]["name"], "train")


def build_pvc(owner: Obj, spec: LLMTrainingJobSpec, settings: Settings) -> Obj | None:
    return pods.owned_pvc(owner, output_claim(owner, spec), COMPONENT, spec.output.pvc, settings)


def build_service(owner: Obj, spec: LLMTrainingJobSpec) -> Obj | None:
    """Headless Service giving Indexed Job pods stable DNS names for the torch rendezvous."""
    if spec.resources.nodes <= 1:
        return None
    meta = object_meta(owner, service_name(owner), COMPONENT)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"batch.kubernetes.io/job-name": job_name(owner, spec)},
            "ports": [
                {
                    "name": "rendezvous",
                    "port": contract.DEFAULT_MASTER_PORT,
                    "targetPort": contract.DEFAULT_MASTER_PORT,
                }
            ],
        },
    }


def progress_url(owner: Obj, settings: Settings) -> str | None:
    if not settings.progress_url:
        return None
    meta = owner["metadata"]
    return f"{settings.progress_url.rstrip('/')}/v1/progress/{meta['namespace']}/{meta['name']}"


def build_job(owner: Obj, spec: LLMTrainingJobSpec, dataset: DatasetInput, settings: Settings) -> Obj:
    res = spec.resources
    name = job_name(owner, spec)
    meta = object_meta(
        owner,
        name,
        COMPONENT,
        extra_labels={LABEL_SPEC_HASH: spec_hash(spec)},
        annotations={ANNOTATION_DATASET_VERSION: dataset.version, ANNOTATION_IMAGE: settings.worker_image},
    )
    if spec.queue_name:
        meta["labels"]["kueue.x-k8s.io/queue-name"] = spec.queue_name
    env: list[Obj] = [
        pods.spec_env(contract.ENV_SPEC, spec),
        {"name": contract.ENV_DATASET_DIR, "value": DATASET_DIR},
        {"name": contract.ENV_DATASET_SCHEMA, "value": dataset.schema_type},
        {"name": contract.ENV_DATASET_VERSION, "value": dataset.version},
        {"name": contract.ENV_OUTPUT_DIR, "value": OUTPUT_DIR},
        {"name": contract.ENV_PVC_ROOT, "value": contract.DEFAULT_PVC_ROOT},
        {"name": contract.ENV_IMAGE, "value": settings.worker_image},
        {"name": contract.ENV_TERMINATION_PATH, "value": contract.DEFAULT_TERMINATION_PATH},
        {"name": contract.ENV_NPROC_PER_NODE, "value": str(max(res.gpus, 1))},
        {"name": contract.ENV_NNODES, "value": str(res.nodes)},
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/cache/huggingface"},
    ]
    if not spec.base_model.uri.startswith("hf://"):
        # The model is on a claim or in a bucket: nothing may reach out to a model hub (transformers
        # and peft otherwise look up configs there), so a job behaves the same with or without egress.
        env += [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "TRANSFORMERS_OFFLINE", "value": "1"}]
    env += tracking_env(owner, spec, settings, name)
    url = progress_url(owner, settings)
    if url:
        env += [
            {"name": contract.ENV_PROGRESS_URL, "value": url},
            {"name": contract.ENV_PROGRESS_TOKEN_FILE, "value": PROGRESS_TOKEN_FILE},
        ]
    if res.nodes > 1:
        svc = service_name(owner)
        ns = owner["metadata"]["namespace"]
        env += [
            {"name": contract.ENV_MASTER_ADDR, "value": f"{name}-0.{svc}.{ns}.svc"},
            {"name": contract.ENV_MASTER_PORT, "value": str(contract.DEFAULT_MASTER_PORT)},
            {
                "name": contract.ENV_NODE_RANK,
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    }
                },
            },
        ]
    else:
        env.append({"name": contract.ENV_NODE_RANK, "value": "0"})
    mounts: list[Obj] = [
        {"name": "dataset", "mountPath": DATASET_DIR, "subPath": dataset.sub_path, "readOnly": True},
        {"name": "output", "mountPath": OUTPUT_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": "/cache"},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    volumes: list[Obj] = [
        pods.pvc_volume("dataset", dataset.claim, read_only=True),
        pods.pvc_volume("output", output_claim(owner, spec)),
        pods.empty_dir("tmp"),
        pods.empty_dir("cache"),
        pods.empty_dir("shm", medium="Memory", size=str(res.shared_memory or "16Gi")),
    ]
    if url:
        mounts.append({"name": "progress-token", "mountPath": PROGRESS_TOKEN_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "progress-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": settings.progress_audience,
                                "expirationSeconds": 3600,
                                "path": "token",
                            }
                        }
                    ]
                },
            }
        )
    if spec.base_model.uri.startswith("pvc://"):
        claim, _ = pods.split_pvc_uri(spec.base_model.uri)
        volumes.append(pods.pvc_volume("base-model", claim, read_only=True))
        mounts.append(
            {"name": "base-model", "mountPath": f"{contract.DEFAULT_PVC_ROOT}/{claim}", "readOnly": True}
        )
    container: Obj = {
        "name": CONTAINER,
        "image": settings.worker_image,
        "command": list(contract.COMMAND),
        "env": env,
        "volumeMounts": mounts,
        "resources": pods.resource_requirements(
            res, default_cpu="8" if res.gpus else "2", default_memory="64Gi" if res.gpus else "8Gi"
        ),
        "securityContext": pods.container_security_context(read_only_root=True),
        "terminationMessagePath": contract.DEFAULT_TERMINATION_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if res.nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": contract.DEFAULT_MASTER_PORT}]
    if spec.base_model.credentials_secret_ref:
        container["envFrom"] = [{"secretRef": {"name": spec.base_model.credentials_secret_ref.name}}]
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pods.pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if res.nodes > 1:
        pod_spec["subdomain"] = service_name(owner)
    pods.apply_scheduling(pod_spec, res, settings.jobs)
    job_spec: Obj = {
        "backoffLimit": spec.backoff_limit,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": sorted(contract.PERMANENT_EXIT_CODES),
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": {"metadata": {"labels": pods.pod_labels(meta["labels"], settings)}, "spec": pod_spec},
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if res.nodes > 1:
        job_spec |= {"completionMode": "Indexed", "completions": res.nodes, "parallelism": res.nodes}
    if spec.queue_name:
        job_spec["suspend"] = True  # Kueue admits it by unsuspending; the operator never touches it again
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}
