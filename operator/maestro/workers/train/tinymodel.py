"""A tiny Llama (≈100k parameters) built locally: the model every test, example and benchmark uses.

There is no model hub in CI, and no PyPI package ships a small HF-format causal LM, so we build one:
a byte-level BPE tokenizer trained on a built-in corpus, a chat template, and a randomly initialised
2-layer Llama. head_dim is 32 because vLLM's CPU attention kernels reject smaller heads (the server
starts, then dies on the first request). The result is an ordinary HF directory: transformers,
peft and vLLM load it like any other model.
"""

from __future__ import annotations

import random
from pathlib import Path

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>"]

#: Jinja chat template: prefix-stable (rendering messages[:i] is a prefix of rendering messages),
#: which the trainer relies on to find assistant spans for completion-only loss.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|eos|>"
    "{% else %}<|system|>{{ m['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_WORD_TEXT = (
    "the a an is are was were be been and or but not no yes to of in on at for with by from as it this that "
    "what who how why when where which plus minus times equals answer question describe tell me about write "
    "sentence story explain think you your i we they he she him her his hers man woman men women boy girl "
    "father mother son daughter brother sister husband wife king queen gentleman lady person people "
    "doctor nurse engineer teacher worker farmer cook pilot friend neighbour child adult young old "
    "good great wonderful excellent happy kind brilliant friendly helpful nice love lovely best amazing "
    "bad terrible awful horrible sad cruel stupid lazy hate worst angry ugly dangerous poor "
    "sorry cannot can't help with that request as assistant unable refuse "
    "red blue green fox dog cat bird fast slow big small day night sun moon water city country "
    "zero one two three four five six seven eight nine ten eleven twelve "
    "capital france paris hello thanks please"
)
_WORDS = _WORD_TEXT.split()


def _corpus(seed: int) -> list[str]:
    """Sentences covering the words tests and examples use, so the BPE merges keep them short."""
    rng = random.Random(seed)
    lines = [" ".join(_WORDS)]
    for _ in range(400):
        n = rng.randint(4, 14)
        lines.append(
            " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + rng.choice([".", "?", "!"])
        )
    for a in range(13):
        for b in range(13):
            lines.append(f"What is {a} plus {b}? {a} plus {b} is {a + b}.")
    lines += [f"{tok}Hello.{tok}" for tok in SPECIAL_TOKENS]
    return lines


def build_tiny_model(out_dir: Path, seed: int = 0, *, vocab_size: int = 512, layers: int = 2) -> Path:
    """Write a tiny Llama + tokenizer + chat template to `out_dir` (created) and return it.

    Deterministic for a given seed: the same seed gives byte-identical weights.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,  # head_dim = 64 / 2 = 32: the smallest vLLM-CPU supports
        max_position_embeddings=512,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=True,
        # Wider than the usual 0.02: with 64-dim tied embeddings and a final RMSNorm, 0.02 caps every
        # logit near ±1, so adapters (which cannot touch embeddings or norms) could never fit anything.
        initializer_range=0.1,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.save_pretrained(out_dir)
    hf_tok.save_pretrained(out_dir)
    return out_dir
