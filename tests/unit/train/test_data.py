from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from maestro.workers.train.data import (
    IGNORE_INDEX,
    DataError,
    DataStats,
    Encoder,
    Example,
    collate,
    load_examples,
    pack,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tok(tiny_model: Path) -> Any:
    from maestro.workers.train.models import load_tokenizer

    return load_tokenizer(tiny_model)


def _labelled_text(tok: Any, ex: Example) -> str:
    return str(tok.decode([t for t in ex.labels if t != IGNORE_INDEX]))


def test_chat_loss_only_on_assistant_turns(tok: Any) -> None:
    rec = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2 plus 3?"},
            {"role": "assistant", "content": "2 plus 3 is 5."},
            {"role": "user", "content": "And 1 plus 1?"},
            {"role": "assistant", "content": "It is 2."},
        ]
    }
    ex = Encoder(tok, 512).encode(rec, "chat", DataStats())
    assert ex is not None
    assert _labelled_text(tok, ex) == "2 plus 3 is 5.<|eos|>It is 2.<|eos|>"
    full = tok.decode(ex.input_ids)
    assert full.startswith("<|system|>Be brief.<|user|>What is 2 plus 3?<|assistant|>")
    assert len(ex.input_ids) == len(ex.labels)


def test_prompt_completion_masks_prompt_and_ends_with_eos(tok: Any) -> None:
    ex = Encoder(tok, 512).encode(
        {"prompt": "Describe a red fox.", "completion": "The fox is red."}, "prompt-completion", DataStats()
    )
    assert ex is not None
    assert _labelled_text(tok, ex) == "The fox is red.<|eos|>"
    assert ex.input_ids[-1] == tok.eos_token_id


def test_text_trains_on_every_token(tok: Any) -> None:
    ex = Encoder(tok, 512).encode({"text": "The dog is big."}, "text", DataStats())
    assert ex is not None and ex.labels == ex.input_ids


def test_truncation_and_dropping_records_without_labels(tok: Any) -> None:
    stats = DataStats()
    enc = Encoder(tok, 6)
    long_prompt = {"prompt": "What is one plus two plus three plus four?", "completion": "Ten."}
    assert enc.encode(long_prompt, "prompt-completion", stats) is None  # the completion was cut off entirely
    ex = enc.encode({"text": "one two three four five six seven eight"}, "text", stats)
    assert ex is not None and len(ex.input_ids) == 6
    assert stats.truncated == 2 and stats.dropped_no_labels == 1 and stats.examples == 1


def test_pack_fills_blocks_and_keeps_masks(tok: Any) -> None:
    enc = Encoder(tok, 512)
    exs = [
        enc.encode(
            {"prompt": f"What is {i} plus 1?", "completion": f"It is {i + 1}."},
            "prompt-completion",
            DataStats(),
        )
        for i in range(20)
    ]
    exs = [e for e in exs if e is not None]
    blocks = pack(exs, 32)
    assert all(len(b.input_ids) <= 32 for b in blocks)
    assert sum(len(b.input_ids) for b in blocks) == sum(len(e.input_ids) for e in exs)
    assert len(blocks) < len(exs)
    labelled = sum(1 for b in blocks for t in b.labels if t != IGNORE_INDEX)
    assert labelled <= sum(1 for e in exs for t in e.labels[1:] if t != IGNORE_INDEX)


def test_collate_pads_right_and_masks_padding() -> None:
    batch = collate([Example([5, 6, 7], [-100, 6, 7]), Example([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_errors_name_file_and_line(tok: Any, tmp_path: Path) -> None:
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"train.jsonl:2: not valid JSON"):
        load_examples(p, "prompt-completion", tok, 64)
    p.write_text(json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:1: prompt-completion record needs"):
        load_examples(p, "prompt-completion", tok, 64)
    with pytest.raises(DataError, match="does not exist"):
        load_examples(tmp_path / "missing.jsonl", None, tok, 64)


def test_schema_inferred_per_record(tok: Any, tmp_path: Path) -> None:
    p = tmp_path / "train.jsonl"
    rows = [
        {"text": "The sun is big."},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    exs, stats = load_examples(p, None, tok, 64)
    assert len(exs) == 2 and stats.records == 2


def test_template_that_is_not_prefix_stable_is_rejected(tiny_model: Path) -> None:
    from maestro.workers.train.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    tok.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    rec = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    with pytest.raises(DataError, match="prefix-stable"):
        Encoder(tok, 64).encode(rec, "chat", DataStats())
