"""Maestro's public API: the four kinds of group llmops.dev/v1alpha1 as pydantic models.

These models are the single source of truth: the CRDs (`crds/`), the chart's copy and
`docs/api.md` are generated from them (`maestro crds generate`), and the operator, the
builders and the workers all import them. Wire form: `obj.to_manifest()`, or
`model_dump(by_alias=True, exclude_none=True, mode="json")`.
"""

from __future__ import annotations

from maestro.api.common import (
    API_VERSION,
    CATEGORY,
    DEFAULT_PII_ENTITIES,
    GROUP,
    VERSION,
    ComputeResources,
    KindInfo,
    KindModel,
    LabelSelector,
    LocalObjectReference,
    PIIEntity,
    PVCStorage,
    SecretReference,
)
from maestro.api.conditions import (
    PERMANENT,
    RETRIABLE,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    is_permanent,
    is_retriable,
)
from maestro.api.dataset import DatasetPhase, LLMDataset, LLMDatasetSpec, LLMDatasetStatus
from maestro.api.deployment import (
    DEFAULT_VLLM_IMAGE,
    DeploymentPhase,
    LLMDeployment,
    LLMDeploymentSpec,
    LLMDeploymentStatus,
)
from maestro.api.policy import (
    AdmissionPolicy,
    AuditPolicy,
    LLMPolicy,
    LLMPolicySpec,
    LLMPolicyStatus,
    PolicyPhase,
    RequestPolicy,
)
from maestro.api.training import (
    DEFAULT_BIAS_GROUPS,
    LLMTrainingJob,
    LLMTrainingJobSpec,
    LLMTrainingJobStatus,
    TrainingPhase,
)

#: Every kind, in dependency order (dataset → training → deployment; policy governs all).
KINDS: tuple[type[KindModel], ...] = (LLMDataset, LLMTrainingJob, LLMDeployment, LLMPolicy)
#: kind name → model class, e.g. for parsing a manifest of unknown kind.
BY_KIND: dict[str, type[KindModel]] = {k.crd.kind: k for k in KINDS}

# Names the operator uses with Kopf and the API (group/version/plural triples).
DATASET_PLURAL = LLMDataset.crd.plural
TRAININGJOB_PLURAL = LLMTrainingJob.crd.plural
DEPLOYMENT_PLURAL = LLMDeployment.crd.plural
POLICY_PLURAL = LLMPolicy.crd.plural


def parse(manifest: dict[str, object]) -> KindModel:
    """Validate a manifest of any Maestro kind; raises ValueError for an unknown kind."""
    kind = manifest.get("kind")
    model = BY_KIND.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValueError(f"kind {kind!r} is not a Maestro kind; expected one of {', '.join(BY_KIND)}")
    return model.model_validate(manifest)


__all__ = [
    "API_VERSION",
    "BY_KIND",
    "CATEGORY",
    "DATASET_PLURAL",
    "DEFAULT_BIAS_GROUPS",
    "DEFAULT_PII_ENTITIES",
    "DEFAULT_VLLM_IMAGE",
    "DEPLOYMENT_PLURAL",
    "GROUP",
    "KINDS",
    "PERMANENT",
    "POLICY_PLURAL",
    "RETRIABLE",
    "TRAININGJOB_PLURAL",
    "VERSION",
    "AdmissionPolicy",
    "AuditPolicy",
    "ComputeResources",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DatasetPhase",
    "DeploymentPhase",
    "KindInfo",
    "KindModel",
    "LLMDataset",
    "LLMDatasetSpec",
    "LLMDatasetStatus",
    "LLMDeployment",
    "LLMDeploymentSpec",
    "LLMDeploymentStatus",
    "LLMPolicy",
    "LLMPolicySpec",
    "LLMPolicyStatus",
    "LLMTrainingJob",
    "LLMTrainingJobSpec",
    "LLMTrainingJobStatus",
    "LabelSelector",
    "LocalObjectReference",
    "PIIEntity",
    "PVCStorage",
    "PolicyPhase",
    "Reason",
    "RequestPolicy",
    "SecretReference",
    "TrainingPhase",
    "is_permanent",
    "is_retriable",
    "parse",
]
