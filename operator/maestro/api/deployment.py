"""LLMDeployment: a vLLM endpoint behind the policy guard, with monitoring and autoscaling."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from maestro.api.common import (
    OWNER_NAME_RULE,
    ComputeResources,
    KindInfo,
    KindModel,
    LocalObjectReference,
    PrinterColumn,
    PVCStorage,
    Quantity,
    ScaleSubresource,
    SecretReference,
    SpecModel,
    StatusModel,
    age_column,
    cel,
    check_owner_name,
    phase_column,
    ready_column,
    unique_keys,
    uri_checker,
    uri_constraints,
    validations,
)
from maestro.api.conditions import ObservedStatus
from maestro.api.experiments import (
    VARIANT_RULES,
    VARIANTS_FIELD,
    Prompt,
    PromptStatus,
    Variants,
    VariantStatus,
    check_variants,
)
from maestro.api.rollout import (
    MAX_HISTORY,
    CanaryStatus,
    RevisionRecord,
    Rollout,
    RolloutStrategy,
)
from maestro.api.training import ModelURI

#: The vLLM image used when runtime.image is not set: pinned, never a moving tag.
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.33.0"

#: vLLM flags the operator owns (the guard relies on them); extraArgs may not set them.
MANAGED_VLLM_FLAGS = ("--host", "--port", "--model", "--served-model-name", "--tensor-parallel-size")

OTLP_SCHEMES = ("http", "https")
OTLPEndpoint = Annotated[
    str,
    AfterValidator(uri_checker(OTLP_SCHEMES, "monitoring.otlpEndpoint")),
    uri_constraints(OTLP_SCHEMES, "monitoring.otlpEndpoint"),
]


class DeploymentPhase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class DType(StrEnum):
    AUTO = "auto"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


class Quantization(StrEnum):
    AWQ = "awq"
    GPTQ = "gptq"
    FP8 = "fp8"
    BITSANDBYTES = "bitsandbytes"


class ScalingMetric(StrEnum):
    REQUESTS_PER_SECOND = "requests-per-second"
    KV_CACHE_USAGE = "kv-cache-usage"
    QUEUE_DEPTH = "queue-depth"
    CPU = "cpu"


EXACTLY_ONE_SOURCE = "exactly one of trainingJobRef or uri must be set"


class ModelSpec(SpecModel):
    """Which model to serve: the output of an LLMTrainingJob, or a model by URI."""

    training_job_ref: LocalObjectReference | None = Field(
        None,
        description="LLMTrainingJob whose model to serve; the deployment waits until it Succeeded "
        "(and passed evaluation when the policy requires it). Mutually exclusive with uri.",
    )
    uri: ModelURI | None = Field(
        None,
        description="Model to serve directly: hf://org/name, pvc://claim/path, s3://… or file:///path (dev).",
    )
    revision: str | None = Field(None, max_length=256, description="Hub revision to pin (with an hf:// uri).")
    credentials_secret_ref: SecretReference | None = Field(
        None, description="Secret with HF_TOKEN or AWS_* keys for gated or private models."
    )
    served_model_name: str | None = Field(
        None,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        description="Model name clients send in the OpenAI `model` field; defaults to the object name.",
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.trainingJobRef) != has(self.uri)", f"model: {EXACTLY_ONE_SOURCE}")
        )
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.training_job_ref is None) == (self.uri is None):
            raise ValueError(f"model: {EXACTLY_ONE_SOURCE}")
        return self


class Adapter(SpecModel):
    """A LoRA adapter served next to the base model, addressable as its own model name."""

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Model name clients use to reach the adapter.",
    )
    training_job_ref: LocalObjectReference | None = Field(
        None,
        description="LLMTrainingJob (method lora/qlora) whose adapter to load; vLLM's --max-lora-rank is "
        "set from its hyperparameters.lora.r. Mutually exclusive with uri.",
    )
    uri: ModelURI | None = Field(
        None,
        description="Adapter location (hf://, pvc://, s3://, file://). Its rank is not known: above 16, pass "
        "--max-lora-rank in runtime.extraArgs.",
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.trainingJobRef) != has(self.uri)", f"adapters: {EXACTLY_ONE_SOURCE}")
        )
    )

    @model_validator(mode="after")
    def _one_source(self) -> Adapter:
        if (self.training_job_ref is None) == (self.uri is None):
            raise ValueError(f"adapters[{self.name}]: {EXACTLY_ONE_SOURCE}")
        return self


def _no_managed_flags(args: list[str]) -> list[str]:
    for arg in args:
        if arg.split("=", 1)[0] in MANAGED_VLLM_FLAGS:
            raise ValueError(
                f"runtime.extraArgs may not set {arg.split('=', 1)[0]}: the operator manages "
                f"{', '.join(MANAGED_VLLM_FLAGS)}"
            )
    return args


_MANAGED_FLAGS_CEL = "[" + ", ".join(f"'{f}'" for f in MANAGED_VLLM_FLAGS) + "]"


class Runtime(SpecModel):
    """The vLLM server."""

    image: str = Field(
        DEFAULT_VLLM_IMAGE, min_length=1, max_length=512, description="vLLM image; pin a tag or digest."
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        le=10_485_760,
        description="Context length (prompt + output tokens); the model's own by default.",
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Share of each GPU's memory vLLM may use for weights and KV cache."
    )
    tensor_parallel_size: int = Field(
        1, ge=1, le=64, description="GPUs one replica shards the model over; at most resources.gpus."
    )
    dtype: DType = Field(DType.AUTO, description="Weight and activation dtype; float32 for CPU serving.")
    quantization: Quantization | None = Field(None, description="Quantisation method of the weights, if any.")
    enforce_eager: bool = Field(
        False, description="Disable CUDA graphs (less memory, slower); needed on CPU and for some debugging."
    )
    max_loras: int | None = Field(None, ge=1, le=256, description="Adapters held in GPU memory at once.")
    extra_args: Annotated[list[Annotated[str, Field(max_length=256)]], AfterValidator(_no_managed_flags)] = (
        Field(
            default_factory=list,
            max_length=64,
            description="Extra vLLM command-line arguments. Flags the operator manages "
            f"({', '.join(MANAGED_VLLM_FLAGS)}) are rejected.",
            json_schema_extra=validations(
                cel(
                    f"!self.exists(a, a.split('=')[0] in {_MANAGED_FLAGS_CEL})",
                    f"runtime.extraArgs may not set {', '.join(MANAGED_VLLM_FLAGS)}: the operator manages "
                    f"them",
                )
            ),
        )
    )


class Autoscaling(SpecModel):
    """Horizontal autoscaling through the LLMDeployment's scale subresource (the operator never fights it)."""

    enabled: bool = Field(
        True, description="Create the autoscaler; false keeps the block but scales by replicas."
    )
    min_replicas: int = Field(1, ge=0, le=1000, description="Fewest replicas; 0 allows scale to zero.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    metric: ScalingMetric = Field(
        ScalingMetric.QUEUE_DEPTH,
        description="Signal scaled on: requests-per-second or queue-depth (waiting requests) per replica, "
        "kv-cache-usage (0..1, vLLM's gpu_cache_usage) or cpu (percent of request).",
    )
    target: float = Field(gt=0, description="Target value of the metric per replica.")
    scale_down_stabilization_seconds: int = Field(
        300, ge=0, le=3600, description="How long load must stay low before replicas are removed."
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
                field_path=".minReplicas",
            ),
            cel(
                "self.metric != 'kv-cache-usage' || self.target <= 1.0",
                "autoscaling.target for kv-cache-usage is a fraction and must be at most 1",
                field_path=".target",
            ),
            cel(
                "self.metric != 'cpu' || self.target <= 100.0",
                "autoscaling.target for cpu is a percentage and must be at most 100",
                field_path=".target",
            ),
        )
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas")
        if self.metric == ScalingMetric.KV_CACHE_USAGE and self.target > 1:
            raise ValueError("autoscaling.target for kv-cache-usage is a fraction and must be at most 1")
        if self.metric == ScalingMetric.CPU and self.target > 100:
            raise ValueError("autoscaling.target for cpu is a percentage and must be at most 100")
        return self


class BiasProbes(SpecModel):
    """Periodic counterfactual bias probes against the live endpoint (run by the monitor sidecar)."""

    enabled: bool = Field(
        False,
        description="Run the probes. They ask for the name clients use (the fine-tuned adapter of a "
        "LoRA training job, not its base) through the guard, with the first key of the policy's API-key "
        "Secret, so they count in the guard's rate limit for that key.",
    )
    interval_seconds: int = Field(3600, ge=60, le=604800, description="Seconds between probe rounds.")


class FeedbackStorage(PVCStorage):
    """The feedback claim: small (JSON lines), so 1Gi unless said otherwise."""

    size: Quantity = Field(
        "1Gi", description="Size of the claim the operator creates (ignored with claimName)."
    )


class Monitoring(SpecModel):
    """The monitor sidecar: LLM quality signals next to vLLM's own metrics."""

    enabled: bool = Field(True, description="Run the monitor sidecar.")
    service_monitor: bool = Field(
        False, description="Create a Prometheus Operator ServiceMonitor (needs its CRD in the cluster)."
    )
    otlp_endpoint: OTLPEndpoint | None = Field(
        None, description="OpenTelemetry collector (http(s)://host:4318) for traces from the guard."
    )
    feedback: bool = Field(
        True,
        description="Accept user feedback at POST /v1/feedback on the guard (same API keys as chat). "
        "Records go to feedbackStorage: feedback.jsonl (every verdict) and corrections.jsonl "
        "(prompt/completion pairs of corrected answers whose prompt was logged, the LLMDataset "
        "prompt-completion schema): point an LLMDataset at pvc://<claim>/corrections.jsonl to retrain.",
    )
    feedback_storage: FeedbackStorage = Field(
        default_factory=FeedbackStorage,
        description="Claim the feedback is written to: <name>-feedback, created ReadWriteOnce and owned by "
        "this LLMDeployment (deleted with it), or an existing claimName (kept). Replicas on several "
        "nodes need a ReadWriteMany claim (claimName); appends are locked per record.",
    )
    bias_probes: BiasProbes = Field(default_factory=BiasProbes, description="Periodic bias probes.")


def _unique_adapters(adapters: list[Adapter]) -> list[Adapter]:
    return unique_keys("name", "adapters")(adapters)


CANARY_WITH_VARIANTS_MESSAGE = (
    "rollout.strategy Canary splits traffic itself: it cannot be combined with spec.variants"
)


class LLMDeploymentSpec(SpecModel):
    """Desired state of an LLMDeployment."""

    model: ModelSpec = Field(description="Which model to serve.")
    adapters: Annotated[list[Adapter], AfterValidator(_unique_adapters)] = Field(
        default_factory=list,
        max_length=32,
        description="LoRA adapters served next to the model, each under its own model name.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    runtime: Runtime = Field(default_factory=Runtime, description="The vLLM server.")
    replicas: int = Field(
        1, ge=0, le=1000, description="Desired replicas; owned by the autoscaler when autoscaling is enabled."
    )
    autoscaling: Autoscaling | None = Field(None, description="Horizontal autoscaling.")
    resources: ComputeResources = Field(
        default_factory=ComputeResources, description="Per-replica resources."
    )
    policy_ref: LocalObjectReference | None = Field(
        None,
        description="LLMPolicy to enforce; when omitted, the LLMPolicies in the namespace whose selector "
        "matches apply.",
    )
    monitoring: Monitoring = Field(default_factory=Monitoring, description="The monitor sidecar.")
    prompt: Prompt | None = Field(
        None,
        description="Server-side system prompt (and template) the guard applies to chat requests; its "
        "digest is reported in status.prompt and status.lineage.",
    )
    variants: Variants = VARIANTS_FIELD
    rollout: Rollout | None = Field(
        None,
        description="How a change of model reaches traffic: Replace (default) or Canary steps analysed "
        "on the guard's per-revision signals, promoted or rolled back automatically; every revision is "
        "kept in status.history.",
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.runtime.tensorParallelSize == 1 || self.runtime.tensorParallelSize <= "
                "self.resources.gpus",
                "runtime.tensorParallelSize needs at least that many resources.gpus per replica",
                field_path=".runtime.tensorParallelSize",
            ),
            *VARIANT_RULES,
            cel(
                "!has(self.rollout) || !has(self.rollout.strategy) || self.rollout.strategy != 'Canary' "
                "|| !has(self.variants) || size(self.variants) == 0",
                CANARY_WITH_VARIANTS_MESSAGE,
                field_path=".rollout.strategy",
            ),
        )
    )

    @model_validator(mode="after")
    def _cross_field(self) -> LLMDeploymentSpec:
        tp = self.runtime.tensor_parallel_size
        if tp > 1 and tp > self.resources.gpus:
            raise ValueError("runtime.tensorParallelSize needs at least that many resources.gpus per replica")
        check_variants(self.variants, {a.name for a in self.adapters})
        if self.rollout is not None and self.rollout.strategy == RolloutStrategy.CANARY and self.variants:
            raise ValueError(CANARY_WITH_VARIANTS_MESSAGE)
        return self


# --- status ---------------------------------------------------------------------------------------


class ServedModel(StatusModel):
    """The model actually being served."""

    uri: str | None = Field(None, description="Resolved model URI.")
    digest: str | None = Field(None, description="Digest of the weights, from the training job when known.")
    served_name: str | None = Field(None, description="Model name clients use.")


class DeploymentLineage(StatusModel):
    """Where the served model came from."""

    training_job: str | None = Field(None, description="LLMTrainingJob that produced the model.")
    dataset_version: str | None = Field(None, description="Dataset version the model was trained on.")
    base_model: str | None = Field(None, description="Base model the training started from.")
    prompt_digest: str | None = Field(None, description="Digest of the server-side prompt (spec.prompt).")


class AppliedPolicy(StatusModel):
    """The policy the guard enforces."""

    name: str | None = Field(None, description="LLMPolicy name.")
    digest: str | None = Field(None, description="Digest of the rendered guard configuration in use.")


class AdapterStatus(StatusModel):
    """One served adapter."""

    name: str = Field(description="Adapter model name.")
    uri: str | None = Field(None, description="Resolved adapter URI.")
    digest: str | None = Field(None, description="Adapter digest.")
    ready: bool | None = Field(None, description="Loaded by every ready replica.")


class LLMDeploymentStatus(ObservedStatus):
    """Observed state of an LLMDeployment."""

    phase: DeploymentPhase | None = Field(
        None, description="Pending, Waiting (for the model), Progressing, Ready, Degraded or Failed."
    )
    replicas: int | None = Field(
        None, ge=0, description="Current replicas (the scale subresource reads this)."
    )
    ready_replicas: int | None = Field(None, ge=0, description="Replicas whose vLLM and guard are ready.")
    selector: str | None = Field(None, description="Label selector of the pods, for the scale subresource.")
    endpoint: str | None = Field(
        None, description="In-cluster base URL of the OpenAI-compatible API (the guard)."
    )
    model: ServedModel | None = Field(None, description="The model being served.")
    adapters: list[AdapterStatus] = Field(default_factory=list, description="Served adapters.")
    lineage: DeploymentLineage | None = Field(None, description="Where the served model came from.")
    prompt: PromptStatus | None = Field(
        None,
        description="The server-side prompt in force (spec.prompt), reaching running guards like the "
        "policy does.",
    )
    variants: list[VariantStatus] = Field(
        default_factory=list, description="The traffic-split variants in force (spec.variants)."
    )
    history: list[RevisionRecord] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description="Every revision served (model digest, dataset version, prompt, policy, image), newest "
        "last: Stable (serving), Canary, Superseded or RolledBack, with the reason.",
    )
    canary: CanaryStatus | None = Field(None, description="The canary in progress (spec.rollout).")
    policy: AppliedPolicy | None = Field(
        None,
        description="The policy in force: rendered into the guard ConfigMap, with the pods up. An "
        "edit reaches running guards without restarting any container, through the mounted ConfigMap: "
        "within the kubelet's sync period (default 1 min) plus the guard's 2 s reload poll.",
    )


class LLMDeployment(KindModel):
    """An OpenAI-compatible endpoint: vLLM behind the policy guard, with monitoring and autoscaling."""

    crd: ClassVar[KindInfo] = KindInfo(
        kind="LLMDeployment",
        plural="llmdeployments",
        singular="llmdeployment",
        short_names=("llmdep",),
        printer_columns=(
            phase_column(),
            ready_column(),
            PrinterColumn("Replicas", "integer", ".status.replicas", "Current replicas"),
            PrinterColumn("Available", "integer", ".status.readyReplicas", "Ready replicas"),
            PrinterColumn("Model", "string", ".status.model.servedName", "Served model name"),
            PrinterColumn("Endpoint", "string", ".status.endpoint", "API base URL", priority=1),
            PrinterColumn("Policy", "string", ".status.policy.name", "Policy in force", priority=1),
            age_column(),
        ),
        scale=ScaleSubresource(),
        selectable_fields=(".spec.model.trainingJobRef.name", ".spec.policyRef.name"),
        root_validations=(OWNER_NAME_RULE,),
    )

    kind: Literal["LLMDeployment"] = Field("LLMDeployment", description="LLMDeployment.")
    spec: LLMDeploymentSpec = Field(description="Desired state.")
    status: LLMDeploymentStatus | None = Field(None, description="Observed state, written by the operator.")

    @model_validator(mode="before")
    @classmethod
    def _name(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_owner_name(data.get("metadata") or {})
        return data
