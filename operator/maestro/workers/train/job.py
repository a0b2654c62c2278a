"""`maestro train run`: one training Job pod, start to finish.

resolve inputs → load base model + data → train (resuming from the last checkpoint) → save the
model → evaluate (loss, prompts, bias) → model card, digest → summary on the termination-message
path and as the last stdout line. Every failure maps to an exit code and a summary `reason`
(contract.py), so the operator can tell a bad spec from a flaky disk without reading logs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from maestro.workers.train import contract
from maestro.workers.train.checkpoint import CheckpointManager, CheckpointMismatch
from maestro.workers.train.config import ConfigError, TrackingSettings, TrainConfig, load_spec, parse_spec
from maestro.workers.train.data import DataError, load_examples
from maestro.workers.train.digest import digest_dir
from maestro.workers.train.dist import Topology, launch_argv
from maestro.workers.train.models import ModelSourceError

log = logging.getLogger("maestro.train")


class EvaluationFailed(Exception):
    """Training succeeded but a gate failed; carries the finished summary."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__("; ".join(summary.get("evaluation", {}).get("failures", [])))
        self.summary = summary


@dataclass
class Inputs:
    spec: dict[str, Any]
    dataset_dir: Path
    schema: str | None
    dataset_version: str | None
    output_dir: Path
    output_uri: str
    image: str | None
    cache_dir: Path
    #: experiment tracking ($MAESTRO_TRACKING); None: not tracked
    tracking: TrackingSettings | None = None


def _inputs(args: argparse.Namespace) -> Inputs:
    env = os.environ
    spec = load_spec(args.spec)
    dataset = args.dataset_dir or (
        Path(env[contract.ENV_DATASET_DIR]) if env.get(contract.ENV_DATASET_DIR) else None
    )
    output = args.output_dir or (
        Path(env[contract.ENV_OUTPUT_DIR]) if env.get(contract.ENV_OUTPUT_DIR) else None
    )
    if dataset is None:
        raise ConfigError(f"no dataset: set ${contract.ENV_DATASET_DIR} or pass --dataset-dir")
    if output is None:
        raise ConfigError(f"no output location: set ${contract.ENV_OUTPUT_DIR} or pass --output-dir")
    if args.base_model_dir:
        os.environ[contract.ENV_BASE_MODEL_DIR] = str(args.base_model_dir)
    schema = args.dataset_schema or env.get(contract.ENV_DATASET_SCHEMA) or None
    if schema is not None and schema not in ("chat", "prompt-completion", "text"):
        raise ConfigError(
            f"${contract.ENV_DATASET_SCHEMA} must be chat, prompt-completion or text, got {schema!r}"
        )
    return Inputs(
        spec=spec,
        dataset_dir=dataset,
        schema=schema,
        dataset_version=env.get(contract.ENV_DATASET_VERSION) or None,
        output_dir=output,
        output_uri=(env.get(contract.ENV_OUTPUT_URI) or f"file://{output.resolve()}").rstrip("/"),
        image=env.get(contract.ENV_IMAGE) or None,
        cache_dir=Path(env.get(contract.ENV_CACHE_DIR) or output / ".cache"),
        tracking=TrackingSettings.from_env(env),
    )


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError:
        pass


def run_from_args(args: argparse.Namespace, argv: list[str]) -> int:
    logging.basicConfig(
        level=os.environ.get("MAESTRO_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.no_launch and (cmd := launch_argv(argv)) is not None:
        log.info("launching %s", " ".join(cmd))
        sys.stdout.flush()
        os.execv(cmd[0], cmd)  # the torchrun workers write the summary
    _quiet_libraries()
    topo: Topology | None = None
    summary: dict[str, Any]
    try:
        inputs = _inputs(args)
        topo = Topology.init()
        summary = run(inputs, topo)
        code = contract.EXIT_OK
    except EvaluationFailed as e:
        summary, code = e.summary, contract.EXIT_EVAL_FAILED
        log.error("evaluation gate failed: %s", e)
    except (ConfigError, DataError, CheckpointMismatch) as e:
        summary, code = _failure(contract.REASON_INVALID_SPEC, e), contract.EXIT_BAD_INPUT
        log.error("%s", e)
    except (ModelSourceError, OSError) as e:
        summary, code = _failure(contract.REASON_STORAGE_ERROR, e), contract.EXIT_IO
        log.error("I/O error: %s", e)
    except Exception as e:
        from maestro.workers.train.loop import TrainingError

        oom = type(e).__name__ == "OutOfMemoryError"
        retriable = isinstance(e, TrainingError) or oom
        summary = _failure(contract.REASON_TRAINING_FAILED, e)
        code = contract.EXIT_TRAINING if retriable else contract.EXIT_UNEXPECTED
        log.exception("training failed") if not retriable else log.error("training failed: %s", e)
    if topo is None or topo.is_main:
        _emit(summary, args)
    if topo is not None:
        topo.close()
    return code


#: attribute of a training failure carrying the tracker's outcome (the run ended FAILED) to its summary
TRACKING_ATTR = "maestro_tracking"


def _failure(reason: str, e: BaseException) -> dict[str, Any]:
    msg = str(e) or type(e).__name__
    out: dict[str, Any] = {"passed": False, "reason": reason, "message": msg[:1500]}
    if tracked := getattr(e, TRACKING_ATTR, None):
        out["tracking"] = tracked
    return out


def _emit(summary: dict[str, Any], args: argparse.Namespace) -> None:
    """Termination message (≤ 4 KiB, best effort) and the last stdout line."""
    text = contract.encode_summary(summary)
    path = Path(os.environ.get(contract.ENV_TERMINATION_PATH) or contract.DEFAULT_TERMINATION_PATH)
    try:
        path.write_text(text)
    except OSError as e:
        log.debug("termination message not written to %s: %s", path, e)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fingerprint(cfg: TrainConfig, inputs: Inputs, world: int) -> str:
    """What a checkpoint must match to be resumed: everything that changes the computation."""
    blob = json.dumps(
        {
            "cfg": asdict(cfg)["hyper"],
            "method": cfg.method,
            "base": [cfg.base_model_uri, cfg.base_model_revision],
            "dataset": inputs.dataset_version or str(inputs.dataset_dir.resolve()),
            "world": world,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _atomic_dir(final: Path) -> Path:
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def _adapter_base_name(cfg: TrainConfig, base_dir: Path) -> str:
    if cfg.base_model_uri.startswith("hf://"):
        return cfg.base_model_uri.removeprefix("hf://").split("@")[0]
    return str(base_dir)


def run(inputs: Inputs, topo: Topology) -> dict[str, Any]:
    """Train, save, evaluate and report; the run is tracked (rank 0) when `inputs.tracking` says so.

    A job that fails after its run was created still ends that run (FAILED, no model version), so
    the tracker never shows a crashed job as running; what became of the run rides on the exception
    (`TRACKING_ATTR`) into the failure summary, so status and the Tracked condition show it too. A pod
    restarted after a kill (OOM, eviction) continues the same run (tracking.py's run file).
    """
    from maestro.workers.train import tracking

    tracker = tracking.from_settings(inputs.tracking, inputs.output_dir) if topo.is_main else None
    try:
        return _run(inputs, topo, tracker)
    except EvaluationFailed:
        raise  # finished and reported by _run
    except BaseException as e:
        if tracker is not None:
            outcome = tracker.finish(metrics={}, step=0, artifacts=(), model=None, failed=True, timeout_s=10)
            if outcome.get("runId"):  # failed before the run existed: nothing to report
                setattr(e, TRACKING_ATTR, outcome)
        raise


def _run(inputs: Inputs, topo: Topology, tracker: Any) -> dict[str, Any]:
    import torch

    from maestro.workers.train import models
    from maestro.workers.train.loop import Engine, iter_steps, train, wrap
    from maestro.workers.train.progress import ProgressReporter

    cfg = parse_spec(inputs.spec)
    out = inputs.output_dir
    if topo.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.hyper.seed)
    if topo.local_rank == 0:
        base_dir = models.resolve_base_model(cfg.base_model_uri, cfg.base_model_revision, inputs.cache_dir)
    topo.barrier()  # one download per node; the other local ranks then hit the cache
    if topo.local_rank != 0:
        base_dir = models.resolve_base_model(cfg.base_model_uri, cfg.base_model_revision, inputs.cache_dir)
    base_digest = _verify_base(base_dir, cfg.base_model_uri) if topo.is_main else None
    precision = models.select_precision(cfg.hyper.precision, topo.device, cfg.method)
    tokenizer = models.load_tokenizer(base_dir)
    model = models.load_model(base_dir, cfg, precision, topo.device)

    h = cfg.hyper
    train_ex, train_stats = load_examples(
        inputs.dataset_dir / "train.jsonl", inputs.schema, tokenizer, h.max_seq_length, packing=h.packing
    )
    if not train_ex:
        raise DataError(
            f"{inputs.dataset_dir / 'train.jsonl'} has no usable examples (all empty or unlabelled)"
        )
    val_path = inputs.dataset_dir / "validation.jsonl"
    val_ex, _ = (
        load_examples(
            val_path, inputs.schema, tokenizer, h.max_seq_length, limit=cfg.evaluation.max_eval_records
        )
        if val_path.is_file()
        else ([], None)
    )
    log.info(
        "data: %d train examples (%d tokens, %d truncated), %d validation",
        len(train_ex),
        train_stats.tokens,
        train_stats.truncated,
        len(val_ex),
    )

    if tracker is not None:
        tracker.start(
            _tracking_params(cfg, inputs, base_digest, precision.name, len(train_ex), len(val_ex)),
            _lineage_tags(cfg, inputs, base_digest),
        )
    engine: Engine = wrap(model, cfg, topo, precision)
    ckpt = CheckpointManager(
        out / contract.CHECKPOINTS_DIR, cfg.keep_last, fingerprint(cfg, inputs, topo.world)
    )
    reporter = ProgressReporter.from_env(out) if topo.is_main else None
    pad_id = tokenizer.pad_token_id
    result = train(engine, train_ex, cfg, topo, precision, pad_id, ckpt, reporter, tracker)

    # --- save -------------------------------------------------------------------------------------
    inner = engine.inner
    model_dir = out / contract.MODEL_DIR
    if engine.sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full_sd = get_model_state_dict(
            inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    if topo.is_main:
        tmp = _atomic_dir(model_dir)
        if engine.sharded:
            inner.save_pretrained(tmp, state_dict=full_sd)
        else:
            inner.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if cfg.method != "full":
            _fix_adapter_config(tmp, _adapter_base_name(cfg, base_dir))
        (tmp / "README.md").unlink(missing_ok=True)  # peft's empty template; the real card is model_card.md
        _publish(tmp, model_dir)
    if topo.distributed:
        topo.barrier()
        if not topo.is_main:
            return {"passed": True}  # rank 0 evaluates and reports
        topo.close()

    # --- evaluate (rank 0) ------------------------------------------------------------------------
    if reporter is not None:
        reporter.update(
            result.steps, result.total_steps, None, 0.0, None, result.epochs, force=True, phase="evaluating"
        )
    eval_model = inner
    if engine.sharded:  # the sharded module is gone with the process group: reload what was saved
        from transformers import AutoModelForCausalLM

        eval_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=precision.load_dtype).to(
            topo.device
        )
    t0 = time.perf_counter()
    base_model = _base_model(eval_model, cfg, base_dir, precision, topo.device)
    evaluation, report = _evaluate(eval_model, tokenizer, val_ex, cfg, topo.device, base_model, out)
    if isinstance(evaluation.get("explanations"), dict) and "html" in evaluation["explanations"]:
        evaluation["explanations"]["uri"] = f"{inputs.output_uri}/{evaluation['explanations']['html']}"
    log.info("evaluation took %.1fs: %s", time.perf_counter() - t0, json.dumps(evaluation)[:500])

    model_ref: dict[str, Any] = {
        "uri": f"{inputs.output_uri}/{contract.MODEL_DIR}",
        "digest": digest_dir(model_dir),
        "format": contract.FORMAT_LORA if cfg.method != "full" else contract.FORMAT_HF,
        "kind": "adapter" if cfg.method != "full" else "full",
    }
    if cfg.merge and cfg.method != "full":
        merged_dir = out / contract.MERGED_DIR
        _merge_adapter(base_dir, model_dir, merged_dir, tokenizer, precision)
        model_ref = {
            "uri": f"{inputs.output_uri}/{contract.MERGED_DIR}",
            "digest": digest_dir(merged_dir),
            "format": contract.FORMAT_HF,
            "kind": "merged",
            "adapter": {"uri": model_ref["uri"], "digest": model_ref["digest"]},
        }
    summary: dict[str, Any] = {
        "passed": evaluation["passed"],
        "model": model_ref,
        "metrics": {
            "trainLoss": round(result.losses[-1], 6) if result.losses else None,
            "lossCurve": list(iter_steps(result.losses)),
            "tokensPerSecond": round(result.tokens_per_s, 2),
            "steps": result.steps,
            "epochs": round(result.epochs, 4),
            "resumedFromStep": result.resumed_from,
        },
        "evaluation": evaluation,
        "lineage": {
            "datasetVersion": inputs.dataset_version,
            "baseModel": cfg.base_model_uri
            + (f"@{cfg.base_model_revision}" if cfg.base_model_revision else ""),
            "image": inputs.image,
            **({"baseModelDigest": base_digest} if base_digest else {}),
        },
        "precision": precision.name,
    }
    if not evaluation["passed"]:
        summary["reason"] = contract.REASON_EVALUATION_FAILED
        summary["message"] = "; ".join(evaluation.get("failures", []))
    stats = {k: v for k, v in asdict(train_stats).items() if k != "extra"} | train_stats.extra
    card = _card(cfg, inputs, summary, stats, report)
    (out / contract.MODEL_CARD).write_text(card)
    (model_dir.parent / contract.EVALUATION_FILE).write_text(json.dumps(report, indent=1, default=str))
    if tracker is not None:
        curve = out / contract.LOSS_CURVE_FILE
        curve.write_text("step,loss\n" + "".join(f"{i},{v:.6g}\n" for i, v in enumerate(result.losses, 1)))
        summary["tracking"] = tracker.finish(
            metrics=_final_metrics(summary),
            step=result.steps,
            artifacts=_tracked_artifacts(inputs, out, model_dir),
            model=model_ref,
            failed=not evaluation["passed"],
        )
        log.info("tracking: %s", json.dumps(summary["tracking"]))
    (out / contract.SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    if reporter is not None:
        reporter.update(
            result.steps,
            result.total_steps,
            summary["metrics"]["trainLoss"],
            round(result.tokens_per_s, 2),
            0.0,
            result.epochs,
            force=True,
            phase="done",
        )
        reporter.close()
    if not evaluation["passed"]:
        raise EvaluationFailed(summary)
    return summary


def _tracking_params(
    cfg: TrainConfig,
    inputs: Inputs,
    base_digest: str | None,
    precision: str,
    n_train: int,
    n_val: int,
) -> dict[str, Any]:
    """The run's params: the spec's hyperparameters (camelCase, as written) and what went in."""
    from maestro.api.training import LLMTrainingJobSpec

    spec = LLMTrainingJobSpec.model_validate(inputs.spec)
    return {
        "method": cfg.method,
        "baseModel": cfg.base_model_uri,
        "baseModelRevision": cfg.base_model_revision,
        "baseModelDigest": base_digest,
        "datasetVersion": inputs.dataset_version,
        "datasetSchema": inputs.schema,
        "image": inputs.image,
        "precision": precision,
        "trainExamples": n_train,
        "validationExamples": n_val,
        "merge": cfg.merge,
        "hyperparameters": spec.hyperparameters.model_dump(by_alias=True, mode="json"),
    }


def _lineage_tags(cfg: TrainConfig, inputs: Inputs, base_digest: str | None) -> dict[str, str]:
    base = cfg.base_model_uri + (f"@{cfg.base_model_revision}" if cfg.base_model_revision else "")
    tags = {
        "llmops.dev/dataset-version": inputs.dataset_version,
        "llmops.dev/base-model": base,
        "llmops.dev/base-model-digest": base_digest,
        "llmops.dev/image": inputs.image,
    }
    return {k: v for k, v in tags.items() if v}


def _final_metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    """The summary's numbers: training totals and every evaluation result (bias gaps, prompt counts)."""
    from maestro.workers.train.tracking import numeric

    m = summary.get("metrics") or {}
    ev = {k: v for k, v in (summary.get("evaluation") or {}).items() if k not in ("prompts", "failures")}
    out: dict[str, float | None] = {
        "trainLoss": m.get("trainLoss"),
        "meanTokensPerSecond": m.get("tokensPerSecond"),
        "steps": m.get("steps"),
        "epochs": m.get("epochs"),
    }
    return out | numeric(ev)


def _tracked_artifacts(inputs: Inputs, out: Path, model_dir: Path) -> list[Path]:
    """Model card, full evaluation report, loss curve, the dataset's datasheet and any explanation report."""
    files = [
        out / contract.MODEL_CARD,
        model_dir.parent / contract.EVALUATION_FILE,
        out / contract.LOSS_CURVE_FILE,
        inputs.dataset_dir / "report.html",  # the LLMDataset's datasheet (data worker), when mounted
        inputs.dataset_dir / "report.json",
    ]
    files += sorted(p for p in out.glob("explanation*") if p.is_file())
    return [p for p in files if p.is_file()]


def _card(
    cfg: TrainConfig, inputs: Inputs, summary: dict[str, Any], stats: dict[str, Any], report: dict[str, Any]
) -> str:
    from maestro.workers.train.card import render_card

    name = inputs.output_uri.rsplit("/", 1)[-1] or "model"
    return render_card(
        name=name,
        cfg=cfg,
        summary=summary,
        dataset_schema=inputs.schema,
        data_stats=stats,
        bias_report=report.get("bias"),
        report=report,
    )


def _verify_base(base_dir: Path, uri: str) -> str | None:
    """The base model's content digest when its directory carries a manifest (hack/model.sh writes one).

    Verified, not just read: a half-copied or altered base model would otherwise train silently and
    the lineage would name a digest the weights do not have.
    """
    from maestro.workers.train import ggufimport

    if ggufimport.read_manifest(base_dir) is None:
        return None
    try:
        return ggufimport.verify(base_dir).digest
    except ggufimport.ModelImportError as e:
        raise ConfigError(f"base model {uri}: {e}") from None


def _fix_adapter_config(adapter_dir: Path, base_name: str) -> None:
    """peft records whatever path the base was loaded from; record the portable base name instead."""
    cfg_path = adapter_dir / "adapter_config.json"
    if cfg_path.is_file():
        data = json.loads(cfg_path.read_text())
        data["base_model_name_or_path"] = base_name
        cfg_path.write_text(json.dumps(data, indent=2, sort_keys=True))


def _merge_adapter(
    base_dir: Path, adapter_dir: Path, merged_dir: Path, tokenizer: Any, precision: Any
) -> None:
    """Reload the base in full/half precision (never 4-bit) and fold the adapter in: a plain HF model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=precision.compute_dtype or precision.load_dtype
    )
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    tmp = _atomic_dir(merged_dir)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _publish(tmp, merged_dir)


BaseModel = Callable[[], contextlib.AbstractContextManager[Any]]


def _base_model(
    model: Any, cfg: TrainConfig, base_dir: Path, precision: Any, device: Any
) -> BaseModel | None:
    """How to get the untrained base for the before/after comparison, or None (compareBase off).

    Adapters: the same model with the adapter switched off (peft's disable_adapter), so the base is
    scored with no second copy in memory and exactly as training started. Full fine-tunes changed
    the weights in place, so the base is reloaded from its directory and freed afterwards.
    """
    if not cfg.evaluation.compare_base:
        return None
    if cfg.method != "full" and hasattr(model, "disable_adapter"):

        @contextlib.contextmanager
        def adapter_off() -> Iterator[Any]:
            with model.disable_adapter():  # yields nothing: the model itself is the base inside it
                yield model

        return adapter_off

    @contextlib.contextmanager
    def reload() -> Iterator[Any]:
        import gc

        import torch
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=precision.load_dtype).to(device)
        try:
            yield base
        finally:
            del base
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    return reload


@dataclass
class _Scores:
    """One model's evaluation: loss on the split, prompt answers, bias probe."""

    loss: Any  # evaluate.LossResult
    prompts: Any  # evaluate.PromptResults | None
    bias: Any  # bias.BiasReport | None


@contextlib.contextmanager
def _merged(model: Any, cfg: TrainConfig) -> Iterator[None]:
    """LoRA weights folded into the base for the duration (peft merge_adapter), undone afterwards.

    Unmerged, every linear layer runs its adapter as two extra matmuls; merged, generation is as
    fast as the base model's (1.8x faster for SmolLM2-135M on CPU), which is most of the
    evaluation's time. QLoRA is left unmerged: folding into 4-bit weights would round them.
    """
    if cfg.method != "lora" or not hasattr(model, "merge_adapter"):
        yield
        return
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()


def _score(
    model: Any, tokenizer: Any, val_ex: list[Any], cfg: TrainConfig, device: Any, *, bias_probe: bool
) -> _Scores:
    from maestro.workers.train import bias, evaluate

    ev = cfg.evaluation
    loss = evaluate.eval_loss(model, val_ex, tokenizer.pad_token_id, device, batch_size=cfg.hyper.batch_size)

    def gen(prompts: list[str], max_new: int) -> list[str]:
        return evaluate.generate(model, tokenizer, prompts, max_new_tokens=max_new, device=device)

    prompts = None
    if ev.prompts:
        prompts = evaluate.check_prompts(ev.prompts, gen([c.prompt for c in ev.prompts], ev.max_new_tokens))
    report = None
    if bias_probe:
        b = ev.bias
        report = bias.probe(
            lambda ps: gen(ps, b.max_new_tokens),
            groups=b.groups or None,
            templates=b.templates or None,
            thresholds=bias.BiasThresholds(b.max_sentiment_gap, b.max_refusal_gap, b.max_length_gap_ratio),
        )
    return _Scores(loss, prompts, report)


def _explain(
    model: Any, tokenizer: Any, cfg: TrainConfig, device: Any, tuned: _Scores, out_dir: Path
) -> dict[str, Any]:
    """Explanations of the fine-tuned model's evaluation (explain.py), written next to the report.

    Never a gate and never fatal: the model is trained and scored by now, so a failure here (out of
    memory on a long prompt) is reported in the summary's `explanations.error` and the job goes on.
    """
    from maestro.workers.train import bias, explain

    ev = cfg.evaluation
    answers = [r["output"] for r in tuned.prompts.rows] if tuned.prompts is not None else []
    cases = ev.prompts if tuned.prompts is not None else ()
    for name in (explain.HTML_FILE, explain.JSON_FILE):  # an earlier attempt's files must not pass for ours
        (out_dir / name).unlink(missing_ok=True)
    try:
        scorer = explain.Scorer(model, tokenizer, device, batch_size=max(8, cfg.hyper.batch_size))
        result = explain.explain(
            scorer,
            ev.explain,
            cases,
            answers,
            tuned.bias.to_report() if tuned.bias is not None else None,
            ev.bias.templates or bias.DEFAULT_TEMPLATES,
            {"sentiment": ev.bias.max_sentiment_gap, "refusal": ev.bias.max_refusal_gap},
        )
        explain.write(out_dir, result.to_json(ev.explain))
    except Exception as e:  # reported, see the docstring
        log.warning("explanations failed (the evaluation stands): %s", e)
        return {"error": contract.truncate(f"{type(e).__name__}: {e}", 300)}
    log.info(
        "explained %d prompts and %d probe pairs in %.1fs (%d scored sequences)",
        *(result.summary()[k] for k in ("prompts", "probes", "seconds")),
        result.sequences,
    )
    return result.summary()


def _r(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def _answer(row: dict[str, Any], chars: int) -> dict[str, Any]:
    return {"passed": row.get("contains"), "answer": contract.truncate(row["output"], chars)}


def _prompt_rows(tuned: Any, base: Any, limit: int | None, prompt_chars: int, answer_chars: int) -> list[Any]:
    """Each prompt with the fine-tuned and (when scored) the base model's answer side by side."""
    rows = []
    base_rows = base.rows if base is not None else [None] * len(tuned.rows)
    for t, b in list(zip(tuned.rows, base_rows, strict=True))[:limit]:
        row: dict[str, Any] = {"prompt": contract.truncate(t["prompt"], prompt_chars)}
        if "expected" in t:
            row["expected"] = t["expected"]
        row["tuned"] = _answer(t, answer_chars)
        if b is not None:
            row["base"] = _answer(b, answer_chars)
        rows.append(row)
    return rows


def _evaluate(
    model: Any,
    tokenizer: Any,
    val_ex: list[Any],
    cfg: TrainConfig,
    device: Any,
    base_model: BaseModel | None,
    out_dir: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score the fine-tuned model (gated) and the base model (for comparison only) on the same inputs.

    The base gets the validation loss and the prompts; the bias probe, which costs more than both
    together, runs on the fine-tuned model only, the one that is gated and served.

    Returns the compact evaluation for the summary (termination message: answers truncated, a few
    prompts) and the full report for EVALUATION_FILE (every prompt, full answers, bias samples).
    With evaluation.explain on, the explanations are written to `out_dir` (explain.py) and the
    summary's `explanations` names the files and the seconds they took.
    """
    ev = cfg.evaluation
    t0 = time.perf_counter()
    base: _Scores | None = None
    if base_model is not None:  # first: the LoRA weights are merged in for the fine-tuned pass below
        with base_model() as bm:
            base = _score(bm, tokenizer, val_ex, cfg, device, bias_probe=False)
    t1 = time.perf_counter()
    explained: dict[str, Any] | None = None
    with _merged(model, cfg):
        tuned = _score(model, tokenizer, val_ex, cfg, device, bias_probe=ev.bias.enabled)
        t2 = time.perf_counter()
        if ev.explain.enabled and out_dir is not None:
            explained = _explain(model, tokenizer, cfg, device, tuned, out_dir)
    log.info("scored the base model in %.1fs, the fine-tuned one in %.1fs", t1 - t0, t2 - t1)

    failures: list[str] = []
    loss = tuned.loss.loss
    result: dict[str, Any] = {"evalLoss": _r(loss, 6), "perplexity": _r(tuned.loss.perplexity, 4)}
    if base is not None:
        result |= {"baseEvalLoss": _r(base.loss.loss, 6), "basePerplexity": _r(base.loss.perplexity, 4)}
    if ev.max_eval_loss is not None:
        if loss is None:
            failures.append("maxEvalLoss is set but the validation split is empty")
        elif loss > ev.max_eval_loss:
            failures.append(f"eval loss {loss:.4f} > maxEvalLoss {ev.max_eval_loss}")
    if ev.require_improvement:
        base_loss = base.loss.loss if base is not None else None
        if loss is None or base_loss is None:
            failures.append("requireImprovement is set but the validation split is empty")
        elif loss >= base_loss:
            failures.append(f"eval loss {loss:.4f} is not below the base model's {base_loss:.4f}")
    report_prompts: list[Any] = []
    if tuned.prompts is not None:
        pr = tuned.prompts
        result |= {
            "exactMatch": pr.exact_match,
            "promptsPassed": pr.passed,
            "promptsChecked": pr.checked,
            "promptsTotal": pr.total,
        }
        base_pr = base.prompts if base is not None else None
        if base_pr is not None:
            result["basePromptsPassed"] = base_pr.passed
        result["prompts"] = _prompt_rows(
            pr,
            base_pr,
            contract.SUMMARY_PROMPTS,
            contract.SUMMARY_PROMPT_CHARS,
            contract.SUMMARY_ANSWER_CHARS,
        )
        report_prompts = _prompt_rows(pr, base_pr, None, 10**9, 10**9)
        if not pr.all_passed:
            missed = [r["prompt"][:60] for r in pr.rows if "expected" in r and not r["contains"]]
            failures.append(
                f"{pr.checked - pr.passed}/{pr.checked} prompts lacked the expected answer: {missed[:3]}"
            )
    if tuned.bias is not None:
        result["bias"] = tuned.bias.to_summary()
        failures += [f"bias: {f}" for f in tuned.bias.failures]
    if explained is not None:
        result["explanations"] = explained
    result["passed"] = not failures
    result["failures"] = failures
    report = {
        **result,
        "prompts": report_prompts,
        "bias": tuned.bias.to_report() if tuned.bias is not None else None,
    }
    return result, report
