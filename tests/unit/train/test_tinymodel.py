from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from maestro.workers.train.cli import main as train_main
from maestro.workers.train.tinymodel import build_tiny_model

pytestmark = pytest.mark.unit


def _digest(d: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


def test_tiny_model_loads_with_chat_template_and_vllm_head_dim(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.hidden_size // model.config.num_attention_heads >= 32
    assert type(model).__name__ == "LlamaForCausalLM"
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>Hi<|assistant|>"
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    assert (tiny_model / "chat_template.jinja").is_file()


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "a", seed=0)
    other = build_tiny_model(tmp_path / "b", seed=1)
    assert _digest(again) == _digest(tiny_model)
    assert _digest(other)["model.safetensors"] != _digest(tiny_model)["model.safetensors"]


def test_cli_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["tiny-model", "--out", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert (tmp_path / "m" / "config.json").is_file()
    assert str(tmp_path / "m") in capsys.readouterr().out
