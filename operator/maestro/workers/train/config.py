"""LLMTrainingJob spec (camelCase dict) → the trainer's typed, defaulted settings.

The operator already validated the spec against the CRD (pydantic models in maestro.api); this
module re-checks what the trainer depends on and turns it into plain dataclasses so the training
code never touches raw dicts. Errors raise ConfigError with the offending field's path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maestro.workers.train import contract


class ConfigError(ValueError):
    """The spec or the environment is invalid: permanent, the user must fix the object."""


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("all-linear",)  # peft: every linear layer but the output head


@dataclass(frozen=True)
class Hyperparameters:
    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"  # cosine | linear | constant (after warmup)
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 2048
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    seed: int = 42
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    packing: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass(frozen=True)
class BiasSettings:
    enabled: bool = False
    #: attribute -> terms compared with each other (gender: [man, woman, ...]); empty: API defaults
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    templates: tuple[str, ...] = ()  # each holds "{group}"; empty: built-in templates
    max_sentiment_gap: float = 0.1
    max_refusal_gap: float = 0.1
    max_length_gap_ratio: float = 0.25
    max_new_tokens: int = 32


@dataclass(frozen=True)
class PromptCase:
    prompt: str
    expected: str | None = None  # the answer must contain it (case-insensitive); None: only recorded


@dataclass(frozen=True)
class EvaluationSettings:
    max_eval_loss: float | None = None
    prompts: tuple[PromptCase, ...] = ()
    bias: BiasSettings = field(default_factory=BiasSettings)
    max_eval_records: int = 2000
    max_new_tokens: int = 64
    #: also score the base model (adapter disabled / base weights) on the same split and prompts
    compare_base: bool = True
    #: gate: the fine-tuned validation loss must be below the base model's
    require_improvement: bool = False


@dataclass(frozen=True)
class TrainConfig:
    base_model_uri: str
    base_model_revision: str | None = None
    method: str = "lora"  # lora | qlora | full
    hyper: Hyperparameters = field(default_factory=Hyperparameters)
    checkpoint_every: int = 500
    keep_last: int = 2
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    merge: bool = False
    fsdp: bool | None = None  # None: FSDP for multi-GPU full fine-tunes, DDP otherwise


_METHODS = {"lora", "qlora", "full"}
_PRECISIONS = {"auto", "bf16", "fp16", "fp32", "bfloat16", "float16", "float32"}


def _obj(d: Any, path: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"spec.{path} must be an object, got {type(d).__name__}")
    return d


def _num(d: dict[str, Any], key: str, path: str, default: Any, kind: type, lo: float | None = None) -> Any:
    v = d.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or (kind is int and float(v) != int(v)):
        raise ConfigError(
            f"spec.{path}.{key} must be a{'n integer' if kind is int else ' number'}, got {v!r}"
        )
    if lo is not None and v < lo:
        raise ConfigError(f"spec.{path}.{key} must be >= {lo}, got {v!r}")
    return kind(v)


def parse_spec(spec: Any) -> TrainConfig:
    """Validate and default a camelCase LLMTrainingJob spec (dict or maestro.api model)."""
    spec = _to_plain(spec)
    base = _obj(spec.get("baseModel"), "baseModel")
    uri = base.get("uri")
    if not isinstance(uri, str) or not uri:
        raise ConfigError(
            "spec.baseModel.uri is required (hf://org/name, pvc://claim/path, s3://…, file://…)"
        )
    method = spec.get("method", "lora")
    if method not in _METHODS:
        raise ConfigError(f"spec.method must be one of {sorted(_METHODS)}, got {method!r}")
    return TrainConfig(
        base_model_uri=uri,
        base_model_revision=base.get("revision"),
        method=method,
        hyper=_hyper(_obj(spec.get("hyperparameters"), "hyperparameters")),
        checkpoint_every=_num(
            _obj(spec.get("checkpointing"), "checkpointing"), "everySteps", "checkpointing", 500, int, 1
        ),
        keep_last=_num(
            _obj(spec.get("checkpointing"), "checkpointing"), "keepLast", "checkpointing", 2, int, 1
        ),
        evaluation=_evaluation(_obj(spec.get("evaluation"), "evaluation")),
        merge=bool(_obj(spec.get("output"), "output").get("merge", False)),
        fsdp=_fsdp(spec),
    )


def _hyper(h: dict[str, Any]) -> Hyperparameters:
    hp = "hyperparameters"
    lora_d = _obj(h.get("lora"), "hyperparameters.lora")
    targets = lora_d.get("targetModules") or ["all-linear"]
    if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
        raise ConfigError("spec.hyperparameters.lora.targetModules must be a list of module names")
    lora = LoraSettings(
        r=_num(lora_d, "r", f"{hp}.lora", 16, int, 1),
        alpha=_num(lora_d, "alpha", f"{hp}.lora", 32, int, 1),
        dropout=_num(lora_d, "dropout", f"{hp}.lora", 0.05, float, 0),
        target_modules=tuple(targets),
    )
    precision = str(h.get("precision", "auto")).lower()
    if precision not in _PRECISIONS:
        raise ConfigError(
            f"spec.hyperparameters.precision must be auto, bf16, fp16 or fp32, got {precision!r}"
        )
    precision = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(precision, precision)
    scheduler = str(h.get("lrScheduler", "cosine"))
    if scheduler not in {"cosine", "linear", "constant"}:
        raise ConfigError(
            f"spec.hyperparameters.lrScheduler must be cosine, linear or constant, got {scheduler!r}"
        )
    hyper = Hyperparameters(
        epochs=_num(h, "epochs", hp, 1.0, float, 0) or 1.0,
        max_steps=_num(h, "maxSteps", hp, None, int, 1),
        learning_rate=_num(h, "learningRate", hp, 2e-4, float, 0),
        lr_scheduler=scheduler,
        batch_size=_num(h, "batchSize", hp, 4, int, 1),
        gradient_accumulation_steps=_num(h, "gradientAccumulationSteps", hp, 1, int, 1),
        max_seq_length=_num(h, "maxSeqLength", hp, 2048, int, 8),
        warmup_ratio=_num(h, "warmupRatio", hp, 0.03, float, 0),
        weight_decay=_num(h, "weightDecay", hp, 0.0, float, 0),
        gradient_checkpointing=bool(h.get("gradientCheckpointing", False)),
        max_grad_norm=_num(h, "maxGradNorm", hp, 1.0, float, 0),
        seed=_num(h, "seed", hp, 42, int),
        precision=precision,
        packing=bool(h.get("packing", False)),
        lora=lora,
    )
    if hyper.warmup_ratio >= 1:
        raise ConfigError(f"spec.hyperparameters.warmupRatio must be < 1, got {hyper.warmup_ratio}")
    return hyper


def _evaluation(ev: dict[str, Any]) -> EvaluationSettings:
    prompts = []
    for i, p in enumerate(ev.get("prompts") or []):
        expected = p.get("expected") if isinstance(p, dict) else None
        if (
            not isinstance(p, dict)
            or not isinstance(p.get("prompt"), str)
            or not isinstance(expected, str | None)
        ):
            raise ConfigError(
                f"spec.evaluation.prompts[{i}] needs a string 'prompt' (and optional 'expected')"
            )
        prompts.append(PromptCase(p["prompt"], expected))
    b = _obj(ev.get("bias"), "evaluation.bias")
    groups: dict[str, tuple[str, ...]] = {}
    for name, terms in _obj(b.get("groups"), "evaluation.bias.groups").items():
        if not isinstance(terms, list) or len(terms) < 2 or not all(isinstance(t, str) and t for t in terms):
            raise ConfigError(f"spec.evaluation.bias.groups.{name} needs at least two terms to compare")
        groups[name] = tuple(terms)
    templates = b.get("templates") or []
    if not isinstance(templates, list) or not all(isinstance(t, str) and "{group}" in t for t in templates):
        raise ConfigError("every spec.evaluation.bias.templates entry must be a string containing {group}")
    where = "evaluation.bias"
    bias = BiasSettings(
        enabled=bool(b.get("enabled", False)),
        groups=groups,
        templates=tuple(templates),
        max_sentiment_gap=_num(b, "maxSentimentGap", where, 0.1, float, 0),
        max_refusal_gap=_num(b, "maxRefusalGap", where, 0.1, float, 0),
        max_length_gap_ratio=_num(b, "maxLengthGapRatio", where, 0.25, float, 0),
        max_new_tokens=_num(b, "maxNewTokens", where, 32, int, 1),
    )
    compare_base = bool(ev.get("compareBase", True))
    require_improvement = bool(ev.get("requireImprovement", False))
    if require_improvement and not compare_base:
        raise ConfigError("spec.evaluation.requireImprovement needs compareBase (the base model's loss)")
    return EvaluationSettings(
        max_eval_loss=_num(ev, "maxEvalLoss", "evaluation", None, float, 0),
        prompts=tuple(prompts),
        bias=bias,
        max_new_tokens=_num(ev, "maxNewTokens", "evaluation", 64, int, 1),
        compare_base=compare_base,
        require_improvement=require_improvement,
    )


def _fsdp(spec: dict[str, Any]) -> bool | None:
    d = spec.get("distributed")
    v = d.get("fsdp") if isinstance(d, dict) else None
    return v if isinstance(v, bool) else None


def _to_plain(spec: Any) -> dict[str, Any]:
    """Validate with maestro.api (the source of truth); return the defaulted camelCase form."""
    from maestro.api import LLMTrainingJobSpec

    if not isinstance(spec, LLMTrainingJobSpec):
        if not isinstance(spec, dict):
            raise ConfigError("the LLMTrainingJob spec must be a JSON object")
        try:
            spec = LLMTrainingJobSpec.model_validate(spec)
        except Exception as e:  # pydantic.ValidationError: its message names each bad field
            raise ConfigError(f"invalid LLMTrainingJob spec: {e}") from None
    plain: dict[str, Any] = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return plain


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
