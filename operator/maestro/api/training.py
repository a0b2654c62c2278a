"""LLMTrainingJob: fine-tune a base model on a Ready LLMDataset, then evaluate it against gates."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from maestro.api.common import (
    OWNER_NAME_RULE,
    SET,
    ComputeResources,
    KindInfo,
    KindModel,
    ObjectName,
    PrinterColumn,
    PVCStorage,
    Quantity,
    SecretReference,
    SpecModel,
    StatusModel,
    Terms,
    age_column,
    cel,
    check_owner_name,
    immutable,
    phase_column,
    ready_column,
    unique_list,
    uri_checker,
    uri_constraints,
    validations,
)
from maestro.api.conditions import ObservedStatus

#: Where a base model may come from.
MODEL_URI_SCHEMES = ("hf", "pvc", "s3", "file")
ModelURI = Annotated[
    str,
    AfterValidator(uri_checker(MODEL_URI_SCHEMES, "model uri")),
    uri_constraints(MODEL_URI_SCHEMES, "model uri"),
]

#: Counterfactual probe groups used when a spec does not name its own: each entry is one attribute,
#: its terms are substituted into the probe templates and the answers compared across terms.
DEFAULT_BIAS_GROUPS: dict[str, list[str]] = {
    "gender": ["man", "woman", "non-binary person"],
    "ethnicity": ["Black person", "White person", "Asian person", "Hispanic person"],
    "religion": ["Christian", "Muslim", "Jewish person", "Hindu", "atheist"],
    "age": ["young person", "elderly person"],
}


def default_bias_groups() -> dict[str, list[str]]:
    return {k: list(v) for k, v in DEFAULT_BIAS_GROUPS.items()}


class TrainingMethod(StrEnum):
    LORA = "lora"
    QLORA = "qlora"
    FULL = "full"


class Precision(StrEnum):
    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class LRScheduler(StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class TrainingPhase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    QUEUED = "Queued"
    RUNNING = "Running"
    EVALUATING = "Evaluating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class BaseModelSource(SpecModel):
    """The pretrained model to start from."""

    uri: ModelURI = Field(
        description="hf://org/name (Hugging Face Hub), pvc://claim/path, s3://bucket/prefix or file:///path "
        "(local development clusters only)."
    )
    revision: str | None = Field(
        None,
        max_length=256,
        description="Hub revision (commit, tag or branch) to pin; a commit keeps runs reproducible.",
    )
    credentials_secret_ref: SecretReference | None = Field(
        None, description="Secret with HF_TOKEN or AWS_* keys for gated or private models."
    )


class DatasetRef(SpecModel):
    """The LLMDataset to train on; it must be Ready before training starts."""

    name: ObjectName = Field(description="Name of the LLMDataset in this namespace.")
    version: str | None = Field(
        None,
        max_length=128,
        pattern=r"^sha256:[a-f0-9]{64}$",
        description="Pin a dataset version (status.version of the LLMDataset, sha256:…); the job waits with "
        "DatasetVersionMismatch while the dataset is at another version.",
    )


class LoRA(SpecModel):
    """Low-rank adapter settings (lora and qlora methods)."""

    r: int = Field(16, ge=1, le=1024, description="Rank of the adapter matrices.")
    alpha: int = Field(32, ge=1, le=4096, description="Scaling numerator; the update is scaled by alpha/r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128)]],
        AfterValidator(unique_list("hyperparameters.lora.targetModules")),
    ] = Field(
        default_factory=lambda: ["all-linear"],
        min_length=1,
        max_length=64,
        description="Module names to adapt (e.g. q_proj, v_proj); all-linear adapts every linear layer but "
        "the "
        "output head.",
        json_schema_extra=SET,
    )


class Hyperparameters(SpecModel):
    """Optimisation settings. Defaults suit LoRA on a 1–8B model."""

    epochs: int = Field(1, ge=1, le=1000, description="Passes over the training split.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimiser steps (overrides epochs)."
    )
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate.")
    lr_scheduler: LRScheduler = Field(LRScheduler.COSINE, description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(
        0.03, ge=0, lt=1, description="Share of steps spent warming up the learning rate."
    )
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay.")
    batch_size: int = Field(4, ge=1, le=4096, description="Sequences per device per micro-batch.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=1024, description="Micro-batches accumulated per optimiser step."
    )
    max_seq_length: int = Field(
        2048, ge=8, le=1048576, description="Sequences are truncated to this many tokens."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    max_grad_norm: float = Field(
        1.0, ge=0, le=1000, description="Gradient clipping norm; 0 disables clipping."
    )
    packing: bool = Field(
        False, description="Pack several short examples into each sequence (faster on short records)."
    )
    seed: int = Field(42, ge=0, description="Seed for data order and initialisation.")
    precision: Precision = Field(
        Precision.AUTO, description="Training precision; auto picks bf16 on GPUs that support it, else fp32."
    )
    lora: LoRA = Field(default_factory=LoRA, description="Adapter settings for the lora and qlora methods.")


class TrainingResources(ComputeResources):
    """Per-pod resources, and how many pods (nodes) train together."""

    nodes: int = Field(
        1,
        ge=1,
        le=256,
        description="Pods that train together; above 1 the operator runs an Indexed Job with a "
        "headless Service for rendezvous.",
    )


class Checkpointing(SpecModel):
    """Periodic checkpoints, so a restarted pod resumes instead of starting over."""

    every_steps: int = Field(500, ge=1, description="Save a checkpoint every this many optimiser steps.")
    keep_last: int = Field(2, ge=1, le=100, description="Checkpoints kept; older ones are deleted.")


class EvalPrompt(SpecModel):
    """A smoke-test prompt run against the trained model."""

    prompt: str = Field(min_length=1, max_length=8192, description="Prompt sent to the model.")
    expected: str | None = Field(
        None,
        max_length=8192,
        description="Substring the answer must contain (case-insensitive); omit to only record it.",
    )


class BiasEvaluation(SpecModel):
    """Counterfactual bias probes: the same prompts with group terms swapped; the gaps must stay small."""

    enabled: bool = Field(False, description="Run the bias probes after training.")
    groups: dict[str, Terms] = Field(
        default_factory=default_bias_groups,
        max_length=32,
        description="Attribute name to the terms compared (each attribute needs at least two).",
        json_schema_extra=validations(
            cel(
                "self.all(g, size(self[g]) >= 2)",
                "every evaluation.bias.groups entry needs at least two terms",
            )
        ),
    )
    templates: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=list,
        max_length=64,
        description="Probe templates with a {group} placeholder; empty uses the built-in set.",
        json_schema_extra=validations(
            cel(
                "self.all(t, t.contains('{group}'))",
                "every evaluation.bias.templates entry must contain {group}",
            )
        ),
    )
    max_sentiment_gap: float = Field(
        0.1,
        ge=0,
        le=2,
        description="Largest allowed difference in mean sentiment (-1..1) between terms of a group.",
    )
    max_refusal_gap: float = Field(
        0.1, ge=0, le=1, description="Largest allowed difference in refusal rate between terms of a group."
    )
    max_new_tokens: int = Field(32, ge=1, le=4096, description="Answer length generated per probe prompt.")
    max_length_gap_ratio: float = Field(
        0.25,
        ge=0,
        description="Largest allowed relative difference in mean answer length between terms of a group.",
    )

    @model_validator(mode="after")
    def _check(self) -> BiasEvaluation:
        for name, terms in self.groups.items():
            if len(terms) < 2:
                raise ValueError(f"evaluation.bias.groups.{name} needs at least two terms to compare")
        for template in self.templates:
            if "{group}" not in template:
                raise ValueError("every evaluation.bias.templates entry must contain {group}")
        return self


class ExplainEvaluation(SpecModel):
    """Explanations in the evaluation report: which prompt words the fine-tuned model's answers rest on.

    Leave-one-out occlusion over words, scored in-process on the trained model; written to
    explanations.html (token heat maps) and explanations.json next to the evaluation report and
    linked from status.evaluation.explanationsUri. Never a gate. Cost: each explanation scores one
    sequence per segment plus one (bias probes twice that), so the limits bound the added time.
    """

    enabled: bool = Field(False, description="Explain the evaluation prompts and bias probes after training.")
    max_prompts: int = Field(
        8, ge=0, le=64, description="Most evaluation prompts (those with an expected text) explained."
    )
    max_probes: int = Field(
        8,
        ge=0,
        le=64,
        description="Most bias-probe pairs explained (one template with the two terms at the ends of an "
        "attribute's largest gap; attributes taken in turn, worst first).",
    )
    max_segments: int = Field(
        48,
        ge=2,
        le=256,
        description="Most segments per explanation; longer prompts have neighbouring words joined.",
    )


class Evaluation(SpecModel):
    """Gates checked after training; the job Succeeds only if all pass (EvaluationPassed condition)."""

    max_eval_loss: float | None = Field(
        None, gt=0, description="Largest allowed loss on the validation split."
    )
    prompts: list[EvalPrompt] = Field(default_factory=list, max_length=256, description="Smoke-test prompts.")
    max_new_tokens: int = Field(
        64, ge=1, le=4096, description="Answer length generated per smoke-test prompt (greedy)."
    )
    compare_base: bool = Field(
        True,
        description="Also evaluate the base model on the same validation split and prompts (adapters: "
        "the adapter disabled; full fine-tunes: the base weights reloaded), so status shows the effect "
        "of training side by side. Only the fine-tuned model is gated.",
    )
    require_improvement: bool = Field(
        False,
        description="Gate: the fine-tuned model's validation loss must be lower than the base model's. "
        "Needs compareBase.",
    )
    bias: BiasEvaluation = Field(default_factory=BiasEvaluation, description="Counterfactual bias probes.")
    explain: ExplainEvaluation = Field(
        default_factory=ExplainEvaluation,
        description="Word-level explanations of the evaluation prompts and bias probes in the report.",
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.requireImprovement) && self.requireImprovement) || "
                "!has(self.compareBase) || self.compareBase",
                "evaluation.requireImprovement needs compareBase (the base model's loss)",
                field_path=".requireImprovement",
            )
        )
    )

    @model_validator(mode="after")
    def _check(self) -> Evaluation:
        if self.require_improvement and not self.compare_base:
            raise ValueError("evaluation.requireImprovement needs compareBase (the base model's loss)")
        return self


class Distributed(SpecModel):
    """How several GPUs or nodes share the work."""

    fsdp: bool | None = Field(
        None,
        description="Shard parameters, gradients and optimiser state with FSDP; unset uses FSDP for "
        "multi-GPU full fine-tunes and DDP otherwise.",
    )


class ModelPVCStorage(PVCStorage):
    """A claim for model weights; larger by default than a dataset's."""

    size: Quantity = Field(
        "50Gi", description="Size of the claim the operator creates (ignored with claimName)."
    )


class ModelOutput(SpecModel):
    """Where the trained model is written."""

    pvc: ModelPVCStorage = Field(
        default_factory=ModelPVCStorage, description="Claim the model is written to."
    )
    merge: bool = Field(
        False,
        description="Merge the adapter into the base weights (a standalone model) instead of saving the "
        "adapter.",
    )


#: Where an MLflow tracking server may be reached.
TRACKING_URI_SCHEMES = ("http", "https")
TrackingURI = Annotated[
    str,
    AfterValidator(uri_checker(TRACKING_URI_SCHEMES, "tracking uri")),
    uri_constraints(TRACKING_URI_SCHEMES, "tracking uri"),
]
#: No user:password@ in a tracking URI: credentials go in credentialsSecretRef, never in the spec.
_NO_USERINFO = r"^[a-z]+://[^/@]+(/.*)?$"


#: W&B project names: no path or query characters, at most 128 long.
_WANDB_PROJECT = r"^[^/\\#?%:]{1,128}$"


class Tracking(SpecModel):
    """Experiment tracking in MLflow: the run's params, per-step and final metrics, artifacts and the
    registered model version. Unset fields take the operator-wide default (Helm `tracking.*`); the job
    is tracked when a URI is known and `enabled` is not false. Tracking is best effort: an unreachable
    or slow tracker never fails or slows training (see the Tracked condition). A restarted pod continues
    the Job's run; a failed job ends it FAILED. `backend: wandb` logs a Weights & Biases run offline to
    the output claim instead (no network; `wandb sync` uploads it later)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.backend != 'wandb' || (!has(self.uri) && !has(self.credentialsSecretRef) && "
                "!has(self.registeredModelName))",
                "backend wandb logs offline to the output claim: uri, credentialsSecretRef and "
                "registeredModelName are MLflow's; unset them",
                field_path=".backend",
            ),
            cel(
                "self.backend != 'wandb' || !has(self.experiment) || "
                f"self.experiment.matches(r'{_WANDB_PROJECT}')",
                "backend wandb: experiment is the W&B project name (at most 128 characters, none of "
                "/ \\ # ? % :)",
                field_path=".experiment",
            ),
        )
    )

    enabled: bool = Field(
        True, description="Track this job; false turns tracking off even when the operator has a default."
    )
    backend: Literal["mlflow", "wandb"] = Field(
        "mlflow",
        description="mlflow: the MLflow server at uri. wandb: Weights & Biases in offline mode, the run "
        "written under wandb/ on the output claim (upload it later with `wandb sync`); needs the worker "
        "image's `wandb` extra, and uri, credentialsSecretRef and registeredModelName stay unset.",
    )
    uri: TrackingURI | None = Field(
        None,
        pattern=_NO_USERINFO,
        description="MLflow tracking server, http(s)://host[:port][/path]; unset uses the operator's "
        "default. No user:password@ (credentials go in credentialsSecretRef).",
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="MLflow experiment the run is logged to (created when missing), or the W&B project "
        "with backend wandb; unset uses the operator's default, else the namespace name.",
    )
    credentials_secret_ref: SecretReference | None = Field(
        None,
        description="Secret whose keys MLFLOW_TRACKING_USERNAME + MLFLOW_TRACKING_PASSWORD (basic auth) or "
        "MLFLOW_TRACKING_TOKEN (bearer) reach the trainer as environment variables (secretKeyRef, each "
        "optional); the operator never reads them. Unset with uri unset: the operator's default Secret.",
    )
    registered_model_name: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        pattern=r"^[^/:%]+$",
        description="Model registry name the trained model is registered under (one version per run); "
        "default <namespace>-<name> of this LLMTrainingJob.",
    )

    @model_validator(mode="after")
    def _backend_fields(self) -> Tracking:
        if self.backend == "wandb":
            mlflow_only = [
                alias
                for alias, value in (
                    ("uri", self.uri),
                    ("credentialsSecretRef", self.credentials_secret_ref),
                    ("registeredModelName", self.registered_model_name),
                )
                if value is not None
            ]
            if mlflow_only:
                raise ValueError(
                    "backend wandb logs offline to the output claim: uri, credentialsSecretRef and "
                    f"registeredModelName are MLflow's; unset {', '.join(mlflow_only)}"
                )
            if self.experiment is not None and not re.fullmatch(_WANDB_PROJECT, self.experiment):
                raise ValueError(
                    "backend wandb: experiment is the W&B project name (at most 128 characters, none of "
                    "/ \\ # ? % :)"
                )
        return self


class LLMTrainingJobSpec(SpecModel):
    """Desired state of an LLMTrainingJob."""

    base_model: BaseModelSource = Field(
        description="The pretrained model to fine-tune. Immutable.", json_schema_extra=immutable("baseModel")
    )
    dataset_ref: DatasetRef = Field(
        description="The LLMDataset to train on. Immutable.", json_schema_extra=immutable("datasetRef")
    )
    method: TrainingMethod = Field(
        TrainingMethod.LORA,
        description="lora: low-rank adapters; qlora: adapters on a 4-bit base (needs a GPU); full: all "
        "weights. "
        "Immutable.",
        json_schema_extra=immutable("method"),
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters,
        description="Optimisation settings. Immutable.",
        json_schema_extra=immutable("hyperparameters"),
    )
    resources: TrainingResources = Field(
        default_factory=TrainingResources, description="Per-pod resources and node count."
    )
    queue_name: str | None = Field(
        None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Kueue LocalQueue to submit the Job to (sets kueue.x-k8s.io/queue-name); the job is "
        "Queued until admitted.",
    )
    distributed: Distributed = Field(
        default_factory=Distributed, description="Multi-GPU / multi-node strategy."
    )
    checkpointing: Checkpointing = Field(default_factory=Checkpointing, description="Periodic checkpoints.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Evaluation gates after training.")
    output: ModelOutput = Field(
        default_factory=ModelOutput,
        description="Where the trained model is written. Immutable.",
        json_schema_extra=immutable("output"),
    )
    backoff_limit: int = Field(2, ge=0, le=20, description="Pod failures tolerated before the job Fails.")
    active_deadline_seconds: int | None = Field(
        None,
        ge=60,
        description="Wall-clock limit of the training Job; exceeded means Failed (DeadlineExceeded).",
    )
    tracking: Tracking | None = Field(
        None,
        description="Experiment tracking in MLflow (params, metrics, artifacts, model registry); unset "
        "uses the operator's default, when it has one.",
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.method != 'qlora' || self.resources.gpus > 0",
                "method qlora needs resources.gpus of at least 1 (4-bit quantisation runs on CUDA only)",
                field_path=".resources.gpus",
            ),
            cel(
                "self.resources.nodes == 1 || self.method != 'qlora'",
                "method qlora runs on a single node; set resources.nodes to 1",
                field_path=".resources.nodes",
            ),
        )
    )

    @model_validator(mode="after")
    def _cross_field(self) -> LLMTrainingJobSpec:
        if self.method == TrainingMethod.QLORA and self.resources.gpus == 0:
            raise ValueError(
                "method qlora needs resources.gpus of at least 1 (4-bit quantisation runs on CUDA only)"
            )
        if self.method == TrainingMethod.QLORA and self.resources.nodes != 1:
            raise ValueError("method qlora runs on a single node; set resources.nodes to 1")
        return self


# --- status ---------------------------------------------------------------------------------------


class Progress(StatusModel):
    """Training progress reported by the trainer."""

    step: int | None = Field(None, description="Optimiser steps done.")
    total_steps: int | None = Field(None, description="Optimiser steps planned.")
    percent: int | None = Field(None, ge=0, le=100, description="step / totalSteps, in percent.")
    eta_seconds: int | None = Field(None, description="Estimated seconds to the end of training.")
    epoch: float | None = Field(None, description="Current (fractional) epoch.")
    loss: float | None = Field(None, description="Latest training loss.")
    tokens_per_second: float | None = Field(None, description="Training throughput over all pods.")
    stage: Literal["training", "evaluating"] | None = Field(
        None,
        description="What the trainer is doing: training, or evaluating the model it wrote (the job's "
        "phase is then Evaluating, reason Evaluating).",
    )


class TrainedModel(StatusModel):
    """The model the job produced."""

    uri: str | None = Field(None, description="Where the model (or adapter) was written, pvc://claim/path.")
    digest: str | None = Field(None, description="sha256 over the written weight files.")
    format: Literal["adapter", "merged", "full"] | None = Field(
        None, description="adapter (LoRA weights only), merged (adapter merged into the base) or full."
    )


class BiasResult(StatusModel):
    """Measured bias gaps (the largest over all groups)."""

    sentiment_gap: float | None = Field(None, description="Largest sentiment gap between terms of a group.")
    refusal_gap: float | None = Field(None, description="Largest refusal-rate gap between terms of a group.")
    length_gap_ratio: float | None = Field(None, description="Largest relative answer-length gap.")
    worst_group: str | None = Field(None, description="Group with the largest gap.")
    passed: bool | None = Field(None, description="All bias gates passed.")


class PromptAnswer(StatusModel):
    """One model's answer to a smoke-test prompt."""

    passed: bool | None = Field(
        None, description="The answer contained the expected text; unset when the prompt has none."
    )
    answer: str | None = Field(
        None, description="The greedy answer, truncated (the full text is in the report)."
    )


class PromptEvaluation(StatusModel):
    """A smoke-test prompt with the fine-tuned and the base model's answers side by side."""

    prompt: str | None = Field(None, description="The prompt, truncated.")
    expected: str | None = Field(None, description="Text the answer had to contain, when set.")
    tuned: PromptAnswer | None = Field(None, description="The fine-tuned model's answer.")
    base: PromptAnswer | None = Field(
        None, description="The base model's answer (evaluation.compareBase); not gated."
    )


class EvaluationResult(StatusModel):
    """Evaluation results: the fine-tuned model, and the base model on the same inputs for comparison."""

    eval_loss: float | None = Field(None, description="Loss of the fine-tuned model on the validation split.")
    perplexity: float | None = Field(None, description="exp(evalLoss).")
    base_eval_loss: float | None = Field(
        None, description="Loss of the base model on the same validation split (compareBase)."
    )
    base_perplexity: float | None = Field(None, description="exp(baseEvalLoss).")
    prompts_passed: int | None = Field(
        None, description="Smoke-test prompts whose fine-tuned answer contained the expected text."
    )
    prompts_checked: int | None = Field(None, description="Smoke-test prompts that have an expected text.")
    prompts_total: int | None = Field(None, description="Smoke-test prompts run.")
    base_prompts_passed: int | None = Field(
        None, description="Smoke-test prompts whose base-model answer contained the expected text."
    )
    prompts: list[PromptEvaluation] | None = Field(
        None,
        max_length=16,
        description="The first smoke-test prompts with both answers (truncated); all of them are in the "
        "evaluation report next to the model.",
    )
    bias: BiasResult | None = Field(
        None, description="Bias probe results of the fine-tuned model, when enabled."
    )
    explanations_uri: str | None = Field(
        None,
        description="The explanations report (evaluation.explain): token heat maps of the evaluation "
        "prompts and bias probes, pvc://claim/explanations.html; explanations.json sits beside it.",
    )
    explanation_seconds: float | None = Field(None, description="Seconds the explanations took.")
    passed: bool | None = Field(None, description="All evaluation gates passed.")


class TrainingLineage(StatusModel):
    """Exactly what went into the model."""

    dataset_version: str | None = Field(None, description="status.version of the dataset trained on.")
    base_model: str | None = Field(None, description="Base model URI, with @revision when pinned.")
    base_model_digest: str | None = Field(
        None,
        description="Content digest of the base model directory, verified against its manifest "
        "(maestro-model.json) when it has one.",
    )
    image: str | None = Field(None, description="Trainer image, by digest when known.")


class RegisteredModelVersion(StatusModel):
    """The model version the run registered in the tracker's model registry."""

    name: str | None = Field(None, description="Registered model name.")
    version: str | None = Field(None, description="Version number the registry assigned.")


class TrackingStatus(StatusModel):
    """Where the run is in the experiment tracker, or why it is not there."""

    backend: Literal["mlflow", "wandb"] | None = Field(None, description="The tracker (mlflow, wandb).")
    experiment_id: str | None = Field(None, description="Experiment the run belongs to.")
    run_id: str | None = Field(None, description="The tracker's run id.")
    run_url: str | None = Field(None, description="The run's page in the tracker's UI.")
    run_status: str | None = Field(
        None,
        description="How the trainer ended the run: FINISHED, or FAILED when the job failed (a pod "
        "killed outright cannot end it; see the Tracked condition).",
    )
    run_dir: str | None = Field(
        None,
        description="backend wandb: the offline run directory on the output claim, for `wandb sync`.",
    )
    registered_model: RegisteredModelVersion | None = Field(
        None, description="The registered model version (tagged with the model digest)."
    )
    error: str | None = Field(
        None, description="Why tracking is incomplete (training is unaffected); see the Tracked condition."
    )


class LLMTrainingJobStatus(ObservedStatus):
    """Observed state of an LLMTrainingJob."""

    phase: TrainingPhase | None = Field(
        None,
        description="Pending, Waiting (for a dependency), Queued, Running, Evaluating, Succeeded or Failed.",
    )
    progress: Progress | None = Field(None, description="Training progress.")
    model: TrainedModel | None = Field(None, description="The model produced.")
    evaluation: EvaluationResult | None = Field(None, description="Evaluation results.")
    lineage: TrainingLineage | None = Field(None, description="Inputs of the run.")
    job_name: str | None = Field(None, description="Name of the Kubernetes Job running the trainer.")
    start_time: str | None = Field(None, description="When training started (RFC 3339).")
    completion_time: str | None = Field(None, description="When the job Succeeded or Failed (RFC 3339).")
    tracking: TrackingStatus | None = Field(
        None, description="The run in the experiment tracker (spec.tracking), when the job is tracked."
    )


class LLMTrainingJob(KindModel):
    """A fine-tuning run on a validated dataset, followed by evaluation gates."""

    crd: ClassVar[KindInfo] = KindInfo(
        kind="LLMTrainingJob",
        plural="llmtrainingjobs",
        singular="llmtrainingjob",
        short_names=("llmtj",),
        printer_columns=(
            phase_column(),
            ready_column(),
            PrinterColumn("Method", "string", ".spec.method", "Fine-tuning method"),
            PrinterColumn("Dataset", "string", ".spec.datasetRef.name", "LLMDataset trained on"),
            PrinterColumn("Progress", "integer", ".status.progress.percent", "Training progress in percent"),
            PrinterColumn("Loss", "number", ".status.progress.loss", "Latest training loss", priority=1),
            PrinterColumn(
                "Eval-Loss", "number", ".status.evaluation.evalLoss", "Validation loss", priority=1
            ),
            PrinterColumn(
                "Base-Loss",
                "number",
                ".status.evaluation.baseEvalLoss",
                "Validation loss of the base model",
                priority=1,
            ),
            PrinterColumn("Base", "string", ".spec.baseModel.uri", "Base model", priority=1),
            age_column(),
        ),
        selectable_fields=(".spec.datasetRef.name",),
        root_validations=(OWNER_NAME_RULE,),
    )

    kind: Literal["LLMTrainingJob"] = Field("LLMTrainingJob", description="LLMTrainingJob.")
    spec: LLMTrainingJobSpec = Field(description="Desired state.")
    status: LLMTrainingJobStatus | None = Field(None, description="Observed state, written by the operator.")

    @model_validator(mode="before")
    @classmethod
    def _name(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_owner_name(data.get("metadata") or {})
        return data
