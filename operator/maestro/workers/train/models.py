"""Base model: resolve its URI to a local directory, load it at the right precision, attach LoRA.

URIs: a plain path or `file://` (dev), `pvc://claim/path` (the claim is mounted under
$MAESTRO_PVC_ROOT), `hf://org/name[@revision]` (HF cache; honours HF_HUB_OFFLINE and a token file),
`s3://bucket/prefix` (maestro.workers.storage: s3fs with the credentialsSecretRef's AWS_* keys and
endpoint, copied to a local cache first).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.workers.train import contract
from maestro.workers.train.config import ConfigError, TrainConfig

log = logging.getLogger("maestro.train.models")


class ModelSourceError(OSError):
    """The base model could not be fetched (network, credentials, storage): usually retriable."""


def resolve_base_model(
    uri: str, revision: str | None, cache_dir: Path, env: dict[str, str] | None = None
) -> Path:
    """Local directory holding the base model (config.json + weights + tokenizer)."""
    env = dict(os.environ if env is None else env)
    if pre := env.get(contract.ENV_BASE_MODEL_DIR):
        return _check_dir(Path(pre), f"${contract.ENV_BASE_MODEL_DIR}")
    if uri.startswith("file://"):
        return _check_dir(Path(uri.removeprefix("file://")), uri)
    if "://" not in uri:
        return _check_dir(Path(uri), uri)
    scheme, rest = uri.split("://", 1)
    if scheme == "pvc":
        claim, _, sub = rest.partition("/")
        if not claim:
            raise ConfigError(f"spec.baseModel.uri {uri!r}: expected pvc://<claim>/<path>")
        root = Path(env.get(contract.ENV_PVC_ROOT, contract.DEFAULT_PVC_ROOT))
        return _check_dir(root / claim / sub, uri)
    if scheme == "hf":
        return _from_hub(rest, revision, cache_dir, env)
    if scheme == "s3":
        return _from_s3(uri, cache_dir, env)
    raise ConfigError(
        f"spec.baseModel.uri {uri!r}: unsupported scheme {scheme!r} (use hf://, pvc://, s3://, file://)"
    )


def _check_dir(path: Path, what: str) -> Path:
    if not (path / "config.json").is_file():
        raise ConfigError(f"base model {what} → {path} is not a model directory (no config.json)")
    return path


def _from_hub(repo: str, revision: str | None, cache_dir: Path, env: dict[str, str]) -> Path:
    from huggingface_hub import snapshot_download

    repo, _, at_rev = repo.partition("@")
    token = env.get("HF_TOKEN")
    if tf := env.get(contract.ENV_HF_TOKEN_FILE):
        try:
            token = Path(tf).read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read the HF token file {tf}: {e.strerror}") from None
    offline = env.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    try:
        path = snapshot_download(
            repo,
            revision=revision or at_rev or None,
            token=token,
            local_files_only=offline,
            cache_dir=env.get("HF_HUB_CACHE") or None,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py", "*.tiktoken"],
        )
    except Exception as e:
        kind = type(e).__name__
        if kind in {"RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError"}:
            raise ConfigError(f"hf://{repo}: {kind}: check the name, revision and token secret") from None
        hint = " (HF_HUB_OFFLINE is set and it is not in the local cache)" if offline else ""
        raise ModelSourceError(f"hf://{repo}: download failed{hint}: {e}") from None
    return _check_dir(Path(path), f"hf://{repo}")


def _from_s3(uri: str, cache_dir: Path, env: dict[str, str]) -> Path:
    """Download the prefix once into the cache; a finished copy is reused, a half-done one never is."""
    import shutil
    import tempfile

    from maestro.workers import storage

    dest = cache_dir / "s3" / uri.removeprefix("s3://").strip("/")
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        storage.download(uri, str(tmp), env)
        if not (tmp / "config.json").is_file():
            raise ConfigError(f"base model {uri} is not a model directory (no config.json under the prefix)")
        shutil.rmtree(dest, ignore_errors=True)  # a stale copy without config.json
        tmp.rename(dest)
    except ImportError as e:
        raise ConfigError(f"{uri}: {e}") from None
    except FileNotFoundError:
        raise ConfigError(f"base model {uri}: no such bucket, or no objects under the prefix") from None
    except PermissionError as e:
        raise ConfigError(
            f"{uri}: access denied ({e}); check spec.baseModel.credentialsSecretRef (AWS_* keys, "
            "AWS_ENDPOINT_URL for S3-compatible servers)"
        ) from None
    except OSError as e:
        raise ModelSourceError(f"{uri}: download failed: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@dataclass
class Precision:
    """How tensors are stored and computed. On CPU everything is fp32 (fast, exact, deterministic)."""

    name: str  # fp32 | bf16 | fp16
    compute_dtype: Any  # torch dtype used by autocast (None: no autocast)
    load_dtype: Any  # dtype of the frozen base weights
    use_scaler: bool


def select_precision(requested: str, device: Any, method: str) -> Precision:
    import torch

    if device.type != "cuda":
        if requested not in {"auto", "fp32"}:
            log.warning("precision %s requested but running on CPU: using fp32", requested)
        return Precision("fp32", None, torch.float32, False)
    name = requested
    if name == "auto":  # as the API documents: bf16 where the GPU supports it, else fp32
        name = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp32":
        return Precision("fp32", None, torch.float32, False)
    dtype = torch.bfloat16 if name == "bf16" else torch.float16
    # full fine-tunes keep fp32 master weights and compute under autocast; adapters freeze the base
    # in half precision (memory) and train fp32 adapter weights.
    load = torch.float32 if method == "full" else dtype
    return Precision(name, dtype, load, use_scaler=name == "fp16")


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is masked out of loss and attention anyway
    return tok


def load_model(path: Path, cfg: TrainConfig, precision: Precision, device: Any) -> Any:
    """The model to train: full (all params trainable), or the frozen base + LoRA adapters."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": precision.load_dtype}
    if cfg.method == "qlora":
        if device.type != "cuda":
            raise ConfigError(
                "method qlora needs a CUDA GPU (bitsandbytes 4-bit); use method lora on CPU nodes"
            )
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise ConfigError(
                "method qlora needs bitsandbytes in the worker image; use lora or full"
            ) from None
        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=precision.compute_dtype or torch.bfloat16,
        )
        kwargs["device_map"] = {"": device}
    model: Any = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=cfg.hyper.gradient_checkpointing
        )
    else:
        model.to(device)
        if cfg.hyper.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if cfg.method != "full":
                model.enable_input_require_grads()  # frozen embeddings: keep a grad path into checkpoints
    if cfg.method == "full":
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora = cfg.hyper.lora
    targets: str | list[str] = list(lora.target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    peft_cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, peft_cfg)
    except ValueError as e:  # e.g. target modules not found in the base model
        raise ConfigError(f"spec.hyperparameters.lora: {e}") from None
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()  # fp32 adapter weights: stable updates under autocast
    return model
