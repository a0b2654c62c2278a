"""LLMTrainingJob spec → the trainer's settings, built from the validated API model.

The operator passes the spec as camelCase JSON ($MAESTRO_SPEC, see contract.py); `parse_spec`
validates it with `maestro.api.training.LLMTrainingJobSpec` (the model the CRD is generated from, so
every range and default is the CRD's) and copies the fields the trainer uses into plain frozen
dataclasses, so the training code never touches raw dicts or pydantic models (and `asdict` of the
hyperparameters, the checkpoint fingerprint, stays plain JSON). Errors raise ConfigError naming the
offending field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from maestro.api.training import BiasEvaluation, Evaluation, ExplainEvaluation, LLMTrainingJobSpec, LoRA
from maestro.api.training import Hyperparameters as HyperparametersSpec
from maestro.workers.train import contract

#: Validation records scored at most (a large split is sampled down to this many); not a spec field.
MAX_EVAL_RECORDS = 2000


class ConfigError(ValueError):
    """The spec or the environment is invalid: permanent, the user must fix the object."""


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]  # all-linear: every linear layer but the output head (peft)

    @classmethod
    def from_spec(cls, lora: LoRA) -> LoraSettings:
        return cls(lora.r, lora.alpha, float(lora.dropout), tuple(lora.target_modules))


@dataclass(frozen=True)
class Hyperparameters:
    epochs: float
    max_steps: int | None
    learning_rate: float
    lr_scheduler: str  # cosine | linear | constant (after warmup)
    batch_size: int
    gradient_accumulation_steps: int
    max_seq_length: int
    warmup_ratio: float
    weight_decay: float
    gradient_checkpointing: bool
    max_grad_norm: float
    seed: int
    precision: str  # auto | bf16 | fp16 | fp32
    packing: bool
    lora: LoraSettings

    @classmethod
    def from_spec(cls, h: HyperparametersSpec) -> Hyperparameters:
        return cls(
            epochs=float(h.epochs),
            max_steps=h.max_steps,
            learning_rate=float(h.learning_rate),
            lr_scheduler=h.lr_scheduler.value,
            batch_size=h.batch_size,
            gradient_accumulation_steps=h.gradient_accumulation_steps,
            max_seq_length=h.max_seq_length,
            warmup_ratio=float(h.warmup_ratio),
            weight_decay=float(h.weight_decay),
            gradient_checkpointing=h.gradient_checkpointing,
            max_grad_norm=float(h.max_grad_norm),
            seed=h.seed,
            precision=h.precision.value,
            packing=h.packing,
            lora=LoraSettings.from_spec(h.lora),
        )


@dataclass(frozen=True)
class BiasSettings:
    enabled: bool
    #: attribute -> terms compared with each other (gender: [man, woman, ...])
    groups: dict[str, tuple[str, ...]]
    templates: tuple[str, ...]  # each holds "{group}"; empty: built-in templates
    max_sentiment_gap: float
    max_refusal_gap: float
    max_length_gap_ratio: float
    max_new_tokens: int

    @classmethod
    def from_spec(cls, b: BiasEvaluation) -> BiasSettings:
        return cls(
            enabled=b.enabled,
            groups={name: tuple(terms) for name, terms in b.groups.items()},
            templates=tuple(b.templates),
            max_sentiment_gap=float(b.max_sentiment_gap),
            max_refusal_gap=float(b.max_refusal_gap),
            max_length_gap_ratio=float(b.max_length_gap_ratio),
            max_new_tokens=b.max_new_tokens,
        )


@dataclass(frozen=True)
class ExplainSettings:
    """evaluation.explain: occlusion explanations in the report, and their limits (see explain.py)."""

    enabled: bool
    max_prompts: int
    max_probes: int
    max_segments: int

    @classmethod
    def from_spec(cls, e: ExplainEvaluation) -> ExplainSettings:
        return cls(e.enabled, e.max_prompts, e.max_probes, e.max_segments)


@dataclass(frozen=True)
class PromptCase:
    prompt: str
    expected: str | None = None  # the answer must contain it (case-insensitive); None: only recorded


@dataclass(frozen=True)
class EvaluationSettings:
    max_eval_loss: float | None
    prompts: tuple[PromptCase, ...]
    bias: BiasSettings
    max_eval_records: int
    max_new_tokens: int
    #: also score the base model (adapter disabled / base weights) on the same split and prompts
    compare_base: bool
    #: gate: the fine-tuned validation loss must be below the base model's
    require_improvement: bool
    explain: ExplainSettings = field(default_factory=lambda: ExplainSettings(False, 8, 8, 48))

    @classmethod
    def from_spec(cls, ev: Evaluation) -> EvaluationSettings:
        return cls(
            max_eval_loss=None if ev.max_eval_loss is None else float(ev.max_eval_loss),
            prompts=tuple(PromptCase(p.prompt, p.expected) for p in ev.prompts),
            bias=BiasSettings.from_spec(ev.bias),
            max_eval_records=MAX_EVAL_RECORDS,
            max_new_tokens=ev.max_new_tokens,
            compare_base=ev.compare_base,
            require_improvement=ev.require_improvement,
            explain=ExplainSettings.from_spec(ev.explain),
        )


@dataclass(frozen=True)
class TrainConfig:
    base_model_uri: str
    base_model_revision: str | None
    method: str  # lora | qlora | full
    hyper: Hyperparameters
    checkpoint_every: int
    keep_last: int
    evaluation: EvaluationSettings
    merge: bool
    fsdp: bool | None  # None: FSDP for multi-GPU full fine-tunes, DDP otherwise

    @classmethod
    def from_spec(cls, spec: LLMTrainingJobSpec) -> TrainConfig:
        """The trainer's view of a validated spec (every default is the API model's)."""
        return cls(
            base_model_uri=spec.base_model.uri,
            base_model_revision=spec.base_model.revision,
            method=spec.method.value,
            hyper=Hyperparameters.from_spec(spec.hyperparameters),
            checkpoint_every=spec.checkpointing.every_steps,
            keep_last=spec.checkpointing.keep_last,
            evaluation=EvaluationSettings.from_spec(spec.evaluation),
            merge=spec.output.merge,
            fsdp=spec.distributed.fsdp,
        )


@dataclass(frozen=True)
class TrackingSettings:
    """Where the run is tracked ($MAESTRO_TRACKING, written by the builder from spec.tracking and the
    operator's default). Credentials are not here: MLflow reads them from its own variables."""

    uri: str
    experiment: str
    registered_model_name: str
    run_name: str | None = None
    #: run tags (object uid, namespace, name, job)
    tags: dict[str, str] = field(default_factory=dict)
    #: mlflow, or wandb (offline, under the output directory)
    backend: str = "mlflow"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrackingSettings | None:
        """None when the job is not tracked; ConfigError when the variable is malformed."""
        text = (os.environ if env is None else env).get(contract.ENV_TRACKING, "")
        if not text:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"${contract.ENV_TRACKING} is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"${contract.ENV_TRACKING} must be a JSON object")
        required = ("uri", "experiment", "registeredModelName")
        missing = [k for k in required if not isinstance(data.get(k), str)]
        if missing:
            raise ConfigError(f"${contract.ENV_TRACKING} lacks string {', '.join(missing)}")
        tags = data.get("tags") or {}
        if not isinstance(tags, dict):
            raise ConfigError(f"${contract.ENV_TRACKING}.tags must be an object")
        backend = data.get("backend") or "mlflow"
        if backend not in ("mlflow", "wandb"):
            raise ConfigError(f"${contract.ENV_TRACKING}.backend must be mlflow or wandb, not {backend!r}")
        return cls(
            backend=backend,
            uri=data["uri"],
            experiment=data["experiment"],
            registered_model_name=data["registeredModelName"],
            run_name=data.get("runName") or None,
            tags={str(k): str(v) for k, v in tags.items()},
        )


def parse_spec(spec: Any) -> TrainConfig:
    """Validate a camelCase LLMTrainingJob spec (dict or maestro.api model) into a `TrainConfig`."""
    if not isinstance(spec, LLMTrainingJobSpec):
        if not isinstance(spec, dict):
            raise ConfigError("the LLMTrainingJob spec must be a JSON object")
        try:
            spec = LLMTrainingJobSpec.model_validate(spec)
        except ValidationError as e:  # its message names each bad field
            raise ConfigError(f"invalid LLMTrainingJob spec: {e}") from None
    return TrainConfig.from_spec(spec)


def load_spec(path: Path | None) -> dict[str, Any]:
    """Read the spec from --spec FILE (JSON or YAML) or from $MAESTRO_SPEC."""
    if path is not None:
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read --spec {path}: {e.strerror}") from None
    else:
        text = os.environ.get(contract.ENV_SPEC, "")
        if not text:
            raise ConfigError(f"no spec: set ${contract.ENV_SPEC} or pass --spec FILE")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"spec is neither JSON nor YAML: {e}") from None
    if isinstance(data, dict) and "spec" in data and "apiVersion" in data:
        data = data["spec"]  # a whole LLMTrainingJob manifest
    if not isinstance(data, dict):
        raise ConfigError("the LLMTrainingJob spec must be an object")
    return data
