"""Status conditions: the Condition model, condition types and reasons per kind.

Reasons are part of the public contract (alerts and GitOps health checks key on them), so they are
constants here, and each one is classified: a *retriable* reason means the object will move on by
itself once the world changes (a dependency becomes Ready, a node frees up); a *permanent* reason
means nothing will change until someone edits the spec (or a referenced object's spec).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field
from pydantic.config import JsonDict

from maestro.api.common import StatusModel


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One observation about the object, in the shape of Kubernetes' metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Condition type in CamelCase, e.g. Ready.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        "",
        max_length=1024,
        description="Machine-readable CamelCase reason for the last transition; see the API reference for "
        "the list.",
    )
    message: str = Field("", max_length=32768, description="Human-readable details of the last transition.")
    last_transition_time: datetime | None = Field(None, description="When the status last changed.")
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the condition was computed from."
    )


#: The conditions list is a map keyed by type (server-side apply merges by type; duplicates rejected).
CONDITIONS_LIST: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class ObservedStatus(StatusModel):
    """Status fields every kind has; each kind adds its `phase` and facts."""

    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Current conditions (Ready on every kind); a map keyed by type.",
        json_schema_extra=CONDITIONS_LIST,
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation of the spec this status describes."
    )
    message: str | None = Field(
        None, max_length=4096, description="One-line summary of the current state, for humans."
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# --- condition types ------------------------------------------------------------------------------


class ConditionType(StrEnum):
    """Condition types. Ready exists on every kind; the others say which step is done or blocked."""

    READY = "Ready"
    #: LLMDataset: the validation Job finished and wrote its report.
    VALIDATED = "Validated"
    #: LLMDataset: every quality gate passed.
    GATES_PASSED = "GatesPassed"
    #: LLMTrainingJob / LLMDeployment: every referenced object exists and is Ready/Succeeded.
    DEPENDENCIES_READY = "DependenciesReady"
    #: LLMTrainingJob / LLMDeployment / LLMDataset: the governing LLMPolicy admits the object.
    POLICY_ADMITTED = "PolicyAdmitted"
    #: LLMTrainingJob: the model was trained and written.
    TRAINED = "Trained"
    #: LLMTrainingJob: evaluation gates (loss, prompts, bias) passed.
    EVALUATION_PASSED = "EvaluationPassed"
    #: LLMTrainingJob (spec.tracking): the run, its metrics and the model version reached the tracker.
    #: False never fails the job: tracking is best effort.
    TRACKED = "Tracked"
    #: LLMDeployment: a rollout is in progress.
    PROGRESSING = "Progressing"
    #: LLMDeployment: serving, but below the desired replica count or with an unhealthy sidecar.
    DEGRADED = "Degraded"
    #: LLMPolicy: the spec compiled (patterns, secrets) and was rendered for the guard.
    VALID = "Valid"
    #: LLMDeployment with spec.variants: status.variants carries statistics read from Prometheus.
    ANALYZED = "Analyzed"
    #: LLMDeployment: the revision the spec asks for serves all traffic (False while a canary runs or
    #: after one was rolled back).
    ROLLED_OUT = "RolledOut"


# --- reasons --------------------------------------------------------------------------------------


class Reason(StrEnum):
    """Every reason Maestro writes. Classification is in RETRIABLE and PERMANENT below."""

    # shared
    RECONCILING = "Reconciling"
    SUCCEEDED = "Succeeded"
    INVALID_SPEC = "InvalidSpec"
    APPLY_FAILED = "ApplyFailed"
    POLICY_DENIED = "PolicyDenied"
    POLICY_NOT_FOUND = "PolicyNotFound"
    # LLMDataset
    VALIDATION_PENDING = "ValidationPending"
    VALIDATION_RUNNING = "ValidationRunning"
    SOURCE_UNAVAILABLE = "SourceUnavailable"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    SCHEMA_MISMATCH = "SchemaMismatch"
    PII_REJECTED = "PIIRejected"
    GATE_FAILED = "GateFailed"
    VALIDATION_FAILED = "ValidationFailed"
    #: the validated copy outlived governance.retentionDays: it is validated (and copied) again
    RETENTION_EXPIRED = "RetentionExpired"
    # LLMTrainingJob
    DATASET_NOT_FOUND = "DatasetNotFound"
    DATASET_NOT_READY = "DatasetNotReady"
    #: the referenced LLMDataset failed for a permanent reason: it stays failed until its spec changes
    DATASET_FAILED = "DatasetFailed"
    DATASET_VERSION_MISMATCH = "DatasetVersionMismatch"
    QUEUED = "Queued"
    WAITING_FOR_RESOURCES = "WaitingForResources"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    TRAINING_FAILED = "TrainingFailed"
    EVALUATION_FAILED = "EvaluationFailed"
    BIAS_GATE_FAILED = "BiasGateFailed"
    #: a worker or serving container exceeded its memory limit and the kernel killed it
    OOM_KILLED = "OOMKilled"
    #: Tracked=Unknown while the trainer runs: it logs to the tracker in the background
    TRACKING = "Tracking"
    #: Tracked=False: the tracker could not be reached (network, timeouts, 5xx) after retries
    TRACKER_UNREACHABLE = "TrackerUnreachable"
    #: Tracked=False: the tracker refused a call (credentials, permissions, names); fix the Secret/spec
    TRACKING_FAILED = "TrackingFailed"
    #: Tracked=False: the trainer was killed (OOM, eviction) before it could end its run or report it
    TRACKING_INCOMPLETE = "TrackingIncomplete"
    # LLMDeployment
    TRAINING_JOB_NOT_FOUND = "TrainingJobNotFound"
    TRAINING_JOB_NOT_SUCCEEDED = "TrainingJobNotSucceeded"
    TRAINING_JOB_FAILED = "TrainingJobFailed"
    EVALUATION_NOT_PASSED = "EvaluationNotPassed"
    ROLLOUT_IN_PROGRESS = "RolloutInProgress"
    MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
    GUARD_UNHEALTHY = "GuardUnhealthy"
    IMAGE_PULL_FAILED = "ImagePullFailed"
    CRASH_LOOP = "CrashLoopBackOff"
    SCALED_TO_ZERO = "ScaledToZero"
    AVAILABLE = "Available"
    #: RolledOut=False: a canary gets part of the traffic while its steps are analysed
    CANARY_PROGRESSING = "CanaryProgressing"
    #: Events of a canary's transitions (spec.rollout.strategy Canary)
    CANARY_STARTED = "CanaryStarted"
    CANARY_STEP_ADVANCED = "CanaryStepAdvanced"
    CANARY_PROMOTED = "CanaryPromoted"
    #: the canary failed its analysis and gets no traffic; the stable revision serves until spec.model changes
    CANARY_ROLLED_BACK = "CanaryRolledBack"
    #: spec.model changed while a canary ran: that canary stopped
    CANARY_ABORTED = "CanaryAborted"
    #: the change cannot be served as a canary (not a LoRA adapter on the stable's base): replaced
    CANARY_UNSUPPORTED = "CanaryUnsupported"
    #: spec.model points at a model served before: restored at once, without a canary
    REVISION_RESTORED = "RevisionRestored"
    #: Analyzed=True: status.variants has the window's statistics and comparisons
    VARIANTS_ANALYZED = "VariantsAnalyzed"
    #: Analyzed=False: the operator has no Prometheus to read (chart value analysis.prometheus.url)
    PROMETHEUS_NOT_CONFIGURED = "PrometheusNotConfigured"
    #: Analyzed=False: Prometheus did not answer (or answered an error); retried at the analysis interval
    PROMETHEUS_UNAVAILABLE = "PrometheusUnavailable"
    # LLMPolicy
    INVALID_PATTERN = "InvalidPattern"
    CONFLICTING_POLICIES = "ConflictingPolicies"
    ENFORCED = "Enforced"


#: The object will make progress on its own once something outside its spec changes.
RETRIABLE: frozenset[Reason] = frozenset(
    {
        Reason.RECONCILING,
        Reason.APPLY_FAILED,
        Reason.POLICY_NOT_FOUND,
        Reason.VALIDATION_PENDING,
        Reason.VALIDATION_RUNNING,
        Reason.SOURCE_UNAVAILABLE,
        Reason.RETENTION_EXPIRED,
        Reason.DATASET_NOT_FOUND,
        Reason.DATASET_NOT_READY,
        Reason.DATASET_VERSION_MISMATCH,
        Reason.QUEUED,
        Reason.WAITING_FOR_RESOURCES,
        Reason.TRAINING,
        Reason.EVALUATING,
        Reason.TRACKING,
        Reason.TRACKER_UNREACHABLE,
        Reason.TRACKING_FAILED,
        Reason.TRACKING_INCOMPLETE,
        Reason.TRAINING_JOB_NOT_FOUND,
        Reason.TRAINING_JOB_NOT_SUCCEEDED,
        Reason.ROLLOUT_IN_PROGRESS,
        Reason.MINIMUM_REPLICAS_UNAVAILABLE,
        Reason.GUARD_UNHEALTHY,
        Reason.CRASH_LOOP,
        Reason.EVALUATION_NOT_PASSED,
        Reason.PROMETHEUS_UNAVAILABLE,
        Reason.CANARY_PROGRESSING,
        Reason.CANARY_STARTED,
        Reason.CANARY_STEP_ADVANCED,
        Reason.CANARY_ABORTED,
    }
)

#: Nothing improves until a spec changes (this object's or a referenced one's).
PERMANENT: frozenset[Reason] = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.POLICY_DENIED,
        Reason.CHECKSUM_MISMATCH,
        Reason.SCHEMA_MISMATCH,
        Reason.PII_REJECTED,
        Reason.GATE_FAILED,
        Reason.VALIDATION_FAILED,
        Reason.BACKOFF_LIMIT_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        Reason.TRAINING_FAILED,
        Reason.EVALUATION_FAILED,
        Reason.BIAS_GATE_FAILED,
        Reason.OOM_KILLED,
        Reason.TRAINING_JOB_FAILED,
        Reason.DATASET_FAILED,
        Reason.IMAGE_PULL_FAILED,
        Reason.INVALID_PATTERN,
        Reason.CONFLICTING_POLICIES,
        Reason.CANARY_ROLLED_BACK,
    }
)

#: Reasons of a healthy, settled state (neither a failure nor a wait).
SETTLED: frozenset[Reason] = frozenset(
    {
        Reason.SUCCEEDED,
        Reason.AVAILABLE,
        Reason.ENFORCED,
        Reason.SCALED_TO_ZERO,
        Reason.VARIANTS_ANALYZED,
        # statistics are off by the operator's configuration: a choice, not a failure of the object
        Reason.PROMETHEUS_NOT_CONFIGURED,
        Reason.CANARY_PROMOTED,
        Reason.CANARY_UNSUPPORTED,
        Reason.REVISION_RESTORED,
    }
)


def is_permanent(reason: str) -> bool:
    """True when retrying without a spec change cannot help (an unknown reason counts as retriable)."""
    return reason in PERMANENT


def is_retriable(reason: str) -> bool:
    return reason not in PERMANENT and reason not in SETTLED
