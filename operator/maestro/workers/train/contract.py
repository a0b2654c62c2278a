"""The contract between the training Job builder (operator side) and `maestro train` (pod side).

Defined once and imported by both: env var names, their defaults, the output layout, exit codes and
the shape of the summary the worker writes to the termination message. Stdlib only (plus
maestro.api at most): the operator imports this and must never pay for torch.
"""

from __future__ import annotations

import json
from typing import Any, Final, NotRequired, TypedDict

# --- env the operator sets on the training container ----------------------------------------------
ENV_SPEC: Final = "MAESTRO_SPEC"  # LLMTrainingJob.spec as camelCase JSON
ENV_DATASET_DIR: Final = "MAESTRO_DATASET_DIR"  # dataset version dir: train.jsonl, validation.jsonl
ENV_DATASET_SCHEMA: Final = "MAESTRO_DATASET_SCHEMA"  # chat | prompt-completion | text
ENV_DATASET_VERSION: Final = "MAESTRO_DATASET_VERSION"  # content digest, for lineage
ENV_BASE_MODEL_DIR: Final = "MAESTRO_BASE_MODEL_DIR"  # optional pre-resolved local model dir
ENV_PVC_ROOT: Final = "MAESTRO_PVC_ROOT"  # where pvc://claim/... model claims are mounted
ENV_OUTPUT_DIR: Final = "MAESTRO_OUTPUT_DIR"  # output volume (checkpoints, model, card, summary)
ENV_IMAGE: Final = "MAESTRO_IMAGE"  # worker image, for lineage
ENV_PROGRESS_URL: Final = "MAESTRO_PROGRESS_URL"  # optional: POST progress JSON here
ENV_PROGRESS_TOKEN_FILE: Final = "MAESTRO_PROGRESS_TOKEN_FILE"  # bearer token for the POST
ENV_TERMINATION_PATH: Final = "MAESTRO_TERMINATION_PATH"
ENV_HF_TOKEN_FILE: Final = "MAESTRO_HF_TOKEN_FILE"  # optional: file holding an HF token (secret volume)
#: optional: the URI the output dir is known by outside the pod (pvc://claim/prefix); default file://<dir>
ENV_OUTPUT_URI: Final = "MAESTRO_OUTPUT_URI"
ENV_CACHE_DIR: Final = "MAESTRO_CACHE_DIR"  # downloads (hf://, s3://); default <output>/.cache
#: optional: experiment tracking, JSON {uri, experiment, registeredModelName, runName, tags} (spec.tracking
#: resolved against the operator's default by the builder); unset: not tracked
ENV_TRACKING: Final = "MAESTRO_TRACKING"
#: The tracker credentials reach the pod under MLflow's own variable names (each a secretKeyRef of the
#: same key in spec.tracking.credentialsSecretRef), so the MLflow client reads them itself.
TRACKING_CREDENTIAL_KEYS: Final = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
#: GPUs per pod. > 1 (or NNODES > 1) makes `maestro train` re-exec itself under torchrun.
ENV_NPROC_PER_NODE: Final = "MAESTRO_NPROC_PER_NODE"
# standard torch.distributed / torchrun env (the operator sets these for Indexed Jobs)
ENV_MASTER_ADDR: Final = "MASTER_ADDR"
ENV_MASTER_PORT: Final = "MASTER_PORT"
ENV_WORLD_SIZE: Final = "WORLD_SIZE"
ENV_RANK: Final = "RANK"
ENV_LOCAL_RANK: Final = "LOCAL_RANK"
ENV_NNODES: Final = "NNODES"
ENV_NODE_RANK: Final = "NODE_RANK"
ENV_JOB_COMPLETION_INDEX: Final = "JOB_COMPLETION_INDEX"  # NODE_RANK fallback in Indexed Jobs

DEFAULT_PVC_ROOT: Final = "/mnt/maestro/models"
DEFAULT_TERMINATION_PATH: Final = "/dev/termination-log"
DEFAULT_MASTER_PORT: Final = 29500

#: Container args for the training container (`maestro` is the image's entrypoint binary).
COMMAND: Final = ("maestro", "train", "run")

# --- output layout under MAESTRO_OUTPUT_DIR ---------------------------------------------------------
CHECKPOINTS_DIR: Final = "checkpoints"  # checkpoints/step-<N>/ (complete ones hold state.json)
MODEL_DIR: Final = "model"  # adapter (lora/qlora) or full weights (full), HF format
MERGED_DIR: Final = "merged"  # base + adapter merged, when spec.output.merge
MODEL_CARD: Final = "model_card.md"
LOSS_CURVE_FILE: Final = "loss_curve.csv"  # step,loss,learning_rate per optimiser step (tracked artifact)
PROGRESS_FILE: Final = "progress.json"
SUMMARY_FILE: Final = "summary.json"  # the full summary (the termination message may be trimmed)
#: the tracked run of this Job (backend, runId, attempt): a restarted pod continues it (tracking.py)
TRACKING_RUN_FILE: Final = "tracking-run.json"
EVALUATION_FILE: Final = "evaluation.json"  # full evaluation report incl. bias samples

FORMAT_LORA: Final = "peft-lora"
FORMAT_HF: Final = "hf"

# --- exit codes --------------------------------------------------------------------------------------
EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1  # a bug: retrying will not help either, but it is not the user's input
EXIT_BAD_INPUT: Final = 2  # spec, dataset or base model invalid: permanent, fix the object
EXIT_EVAL_FAILED: Final = 3  # trained fine, an evaluation gate failed: permanent for this spec
EXIT_IO: Final = 4  # storage/network trouble: retriable
EXIT_TRAINING: Final = 5  # training diverged or crashed (NaN loss, OOM): maybe retriable
#: Exit codes a retry can fix; the builder maps the rest to a podFailurePolicy `FailJob` rule.
RETRIABLE_EXIT_CODES: Final = frozenset({EXIT_IO, EXIT_TRAINING})
PERMANENT_EXIT_CODES: Final = frozenset({EXIT_BAD_INPUT, EXIT_EVAL_FAILED})

MAX_SUMMARY_BYTES: Final = 4096
#: How much of the smoke-test prompts the termination message carries (the report file has all).
SUMMARY_PROMPTS: Final = 6
SUMMARY_PROMPT_CHARS: Final = 100
SUMMARY_ANSWER_CHARS: Final = 240  # a support answer plus its sign-off

# --- summary `reason` values (the same strings as maestro.api.conditions.Reason where one exists) ---------
REASON_INVALID_SPEC: Final = "InvalidSpec"  # EXIT_BAD_INPUT: spec, dataset records or base model unusable
REASON_EVALUATION_FAILED: Final = "EvaluationFailed"  # EXIT_EVAL_FAILED
REASON_STORAGE_ERROR: Final = "StorageError"  # EXIT_IO
REASON_TRAINING_FAILED: Final = "TrainingFailed"  # EXIT_TRAINING / EXIT_UNEXPECTED
#: tracking outcome reasons (Tracked condition; training is unaffected by either)
REASON_TRACKER_UNREACHABLE: Final = "TrackerUnreachable"  # network error, timeout, 5xx after retries
REASON_TRACKING_FAILED: Final = "TrackingFailed"  # the tracker refused a call (4xx: credentials, names)


# --- summary -----------------------------------------------------------------------------------------
class ModelRef(TypedDict):
    uri: str
    digest: str  # "sha256:<hex>" over the model dir's files (see digest.py)
    format: str  # FORMAT_LORA | FORMAT_HF
    kind: NotRequired[str]  # adapter | merged | full: status.model.format in the API
    adapter: NotRequired[dict[str, str]]  # {uri, digest} of the adapter when `kind` is merged


class Metrics(TypedDict):
    trainLoss: float | None
    lossCurve: list[list[float]]  # [[step, loss], ...] a few points
    tokensPerSecond: float
    steps: int
    epochs: float


class BiasResult(TypedDict, total=False):
    passed: bool
    sentimentGap: float  # largest over groups of (max - min) mean sentiment across a group's terms
    refusalGap: float
    lengthGapRatio: float
    worstGroup: str | None
    failures: list[str]


class PromptAnswer(TypedDict):
    passed: bool | None  # answer contains `expected` (case-insensitive); None: the prompt has none
    answer: str  # truncated to SUMMARY_ANSWER_CHARS here; full text in EVALUATION_FILE


class PromptRow(TypedDict):
    prompt: str  # truncated to SUMMARY_PROMPT_CHARS
    expected: NotRequired[str]
    tuned: PromptAnswer
    base: NotRequired[PromptAnswer]  # when evaluation.compareBase


class ExplanationsRef(TypedDict, total=False):
    """evaluation.explain's report: files relative to the output root, and their cost."""

    html: str  # explanations.html: token heat maps (self-contained, every text escaped)
    json: str  # explanations.json: every attribution
    uri: str  # the html file as the output is known outside the pod (file://... -> pvc:// by the operator)
    prompts: int  # evaluation prompts explained
    probes: int  # bias-probe pairs explained
    seconds: float
    error: str  # why there are no explanations (never a gate)


class Evaluation(TypedDict, total=False):
    evalLoss: float | None  # the fine-tuned model on the validation split
    perplexity: float | None
    baseEvalLoss: float | None  # the base model on the same split (compareBase)
    basePerplexity: float | None
    exactMatch: float | None  # share of prompts with `expected` answered exactly
    promptsPassed: int  # prompts whose fine-tuned answer contained `expected`
    promptsChecked: int  # prompts with `expected`
    promptsTotal: int
    basePromptsPassed: int  # the same for the base model (compareBase)
    prompts: list[PromptRow]  # the first SUMMARY_PROMPTS prompts, both answers side by side
    bias: BiasResult
    explanations: ExplanationsRef  # evaluation.explain
    passed: bool
    failures: list[str]


class Lineage(TypedDict):
    datasetVersion: str | None
    baseModel: str
    image: str | None
    baseModelDigest: NotRequired[str]  # from the base dir's manifest, verified (ggufimport.MANIFEST)


class RegisteredModel(TypedDict):
    name: str
    version: str


class TrackingOutcome(TypedDict, total=False):
    """What became of the run in the tracker: where it is, or why it is incomplete."""

    backend: str  # mlflow | wandb
    experimentId: str
    runId: str
    runUrl: str
    registeredModel: RegisteredModel
    ok: bool  # every call went through
    reason: str  # TrackerUnreachable | TrackingFailed when not ok
    error: str  # the first failure, truncated; never carries credentials
    dropped: int  # per-step metrics dropped because the buffer was full
    runStatus: str  # FINISHED | FAILED: how the run was ended (a failed job ends its run FAILED)
    attempt: int  # >1: a restarted pod continued the run of an earlier attempt (same run id)
    runDir: str  # wandb: the offline run directory, relative to the output root (for `wandb sync`)


class Summary(TypedDict):
    passed: bool
    reason: NotRequired[str]
    message: NotRequired[str]
    model: NotRequired[ModelRef]
    metrics: NotRequired[Metrics]
    evaluation: NotRequired[Evaluation]
    lineage: NotRequired[Lineage]
    tracking: NotRequired[TrackingOutcome]


def encode_summary(summary: Summary | dict[str, Any], limit: int = MAX_SUMMARY_BYTES) -> str:
    """Compact JSON that fits the termination message: drops detail (curve, bias groups) to fit."""
    data: dict[str, Any] = json.loads(json.dumps(summary))
    text = json.dumps(data, separators=(",", ":"))
    trims: tuple[tuple[str, ...] | tuple[int, int], ...] = (
        ("metrics", "lossCurve"),
        ("evaluation", "bias", "failures"),
        (120, SUMMARY_PROMPTS),  # shorter answers first: the side-by-side comparison is the point
        (60, 3),
        ("evaluation", "failures"),
        ("message",),
        ("evaluation", "prompts"),
    )
    for step in trims:
        if len(text.encode()) <= limit:
            break
        if isinstance(step[0], int):
            _shrink_prompts(data, int(step[0]), int(step[1]))
        else:
            node: Any = data
            for key in step[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(step[-1], None)
        text = json.dumps(data, separators=(",", ":"))
    if len(text.encode()) > limit:
        keep = {k: data[k] for k in ("passed", "reason", "model", "tracking") if k in data}
        text = json.dumps(keep, separators=(",", ":"))
    return text


def _shrink_prompts(data: dict[str, Any], answer_chars: int, rows: int) -> None:
    ev = data.get("evaluation")
    prompts = ev.get("prompts") if isinstance(ev, dict) else None
    if not isinstance(prompts, list):
        return
    del prompts[rows:]
    for row in prompts:
        for side in ("tuned", "base"):
            ans = row.get(side) if isinstance(row, dict) else None
            if isinstance(ans, dict) and isinstance(ans.get("answer"), str):
                ans["answer"] = truncate(ans["answer"], answer_chars)


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def parse_summary(text: str) -> Summary:
    """Parse a termination message / last stdout line. Raises ValueError naming what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"training summary is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("training summary must be a JSON object")
    if not isinstance(data.get("passed"), bool):
        raise ValueError("training summary lacks boolean 'passed'")
    model = data.get("model")
    if model is not None:
        if not isinstance(model, dict) or not all(
            isinstance(model.get(k), str) for k in ("uri", "digest", "format")
        ):
            raise ValueError("training summary 'model' needs string uri, digest and format")
        if not model["digest"].startswith("sha256:"):
            raise ValueError("training summary model.digest must start with 'sha256:'")
    for key in ("metrics", "evaluation", "lineage", "tracking"):
        if key in data and not isinstance(data[key], dict):
            raise ValueError(f"training summary {key!r} must be an object")
    return data  # type: ignore[return-value]


def exit_code_is_retriable(code: int) -> bool:
    return code in RETRIABLE_EXIT_CODES
