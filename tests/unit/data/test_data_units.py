"""Dedup, split, quality heuristics, representation and diversity, one unit at a time.

Language ID and profanity are `maestro.text`'s: tests/unit/text/."""

from __future__ import annotations

import random

import numpy as np
import pytest

from maestro.workers.data import normalize, synth
from maestro.workers.data.dedup import ExactDedup, NearDedup, _SortedRuns, choose_bands
from maestro.workers.data.quality import (
    _NO_ALPHA_TOKEN,
    MIN_ALPHA_WORD_RATIO,
    Diversity,
    Representation,
    heuristic_reason,
)
from maestro.workers.data.split import Splitter, splitmix64

pytestmark = pytest.mark.unit


def _doc(rng: random.Random, n: int = 80) -> list[str]:
    return [rng.choice(synth._WORDS) for _ in range(n)]


def test_splitmix64_reference_values() -> None:
    # first outputs of the reference SplitMix64 generator seeded with 0 (state advances by the golden gamma)
    gamma = 0x9E3779B97F4A7C15
    assert splitmix64(0) == 0xE220A8397B1DCDAF
    assert splitmix64(gamma) == 0x6E789E6AA1B965F4
    assert splitmix64((2 * gamma) & (2**64 - 1)) == 0x06C45D188009454F


def test_split_is_a_pure_function_of_content_seed_and_ratio() -> None:
    keys = [normalize.dedup_key(None, [f"record {i}"]) for i in range(20000)]
    s = Splitter(0.1, seed=42)
    first = [s.is_validation(k) for k in keys]
    assert first == [Splitter(0.1, seed=42).is_validation(k) for k in keys]
    assert 0.09 < sum(first) / len(first) < 0.11
    other = [Splitter(0.1, seed=43).is_validation(k) for k in keys]
    assert first != other
    assert not any(Splitter(0.0, seed=1).is_validation(k) for k in keys)
    with pytest.raises(ValueError, match="validationRatio"):
        Splitter(1.0, 0)


def test_split_golden_assignment_is_machine_independent() -> None:
    # blake2b + splitmix64 are fully specified: these assignments may never change between releases
    keys = [normalize.dedup_key(("user", "assistant"), f"question {i} answer {i}".split()) for i in range(12)]
    got = "".join("V" if Splitter(0.25, 7).is_validation(k) else "T" for k in keys)
    expected = "".join(
        "V" if splitmix64(int.from_bytes(k[:8], "little") ^ splitmix64(7)) / 2**64 < 0.25 else "T"
        for k in keys
    )
    assert got == expected
    assert keys[0].hex() == normalize.dedup_key(("user", "assistant"), ["question", "0", "answer", "0"]).hex()


def test_dedup_key_folds_case_and_whitespace_but_not_roles() -> None:
    k = normalize.dedup_key
    assert k(None, "Hello  World".lower().split()) == k(None, ["hello", "world"])
    assert k(("user", "assistant"), ["a", "b"]) != k(("system", "assistant"), ["a", "b"])
    assert len(k(None, ["x"])) == 16


def test_normalize_text() -> None:
    assert normalize.normalize_text("  ｆｕｌｌ\u200bwidth\r\nline\x07 ") == "fullwidth\nline"
    assert normalize.normalize_text("plain ascii\tkept") == "plain ascii\tkept"


def test_exact_dedup() -> None:
    d = ExactDedup()
    assert not d.seen(b"a" * 16) and d.seen(b"a" * 16) and not d.seen(b"b" * 16)
    assert len(d) == 2


def test_choose_bands_meets_recall_at_threshold() -> None:
    for t in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95):
        b, r = choose_bands(t, 128)
        assert b * r <= 128
        assert 1 - (1 - t**r) ** b >= 0.98


def test_sorted_runs_return_the_earliest_id() -> None:
    spread = np.uint64(0x9E3779B97F4A7C15)  # band hashes are full 64-bit values

    def h(values: np.ndarray) -> np.ndarray:
        return values.astype(np.uint64) * spread

    runs = _SortedRuns()
    for start in range(0, 1000, 100):
        runs.add(h(np.arange(start, start + 100) % 250), np.arange(start, start + 100, dtype=np.uint32))
    assert len(runs.runs) < 10  # merged
    q = h(np.array([0, 249, 5000]))
    hits: dict[int, int] = {}
    for where, ids in runs.lookup(q):  # one candidate per run: the earliest id in that run
        for w, i in zip(where.tolist(), ids.tolist(), strict=True):
            hits[w] = min(hits.get(w, 10**9), i)
    assert hits == {0: 0, 1: 249}
    with pytest.raises(ValueError, match="split the source"):
        runs.add(h(np.array([1])), np.array([2**28], dtype=np.int64))


def test_minhash_signatures_are_deterministic_and_estimate_jaccard() -> None:
    rng = random.Random(0)
    errors = []
    for step in (10, 25, 50, 100) * 10:
        a = _doc(rng, 200)
        b = list(a)
        for i in range(0, 200, step):
            b[i] = "zzz"
        s1 = NearDedup(0.8).signatures([a, b])
        assert (s1 == NearDedup(0.8).signatures([a, b])).all()
        errors.append(float((s1[0] == s1[1]).mean()) - NearDedup.jaccard(a, b))
    assert abs(float(np.mean(errors))) < 0.03  # unbiased
    assert float(np.std(errors)) < 0.06  # ~sqrt(J(1-J)/128)


def test_near_dedup_across_and_within_batches() -> None:
    rng = random.Random(1)
    docs = [_doc(rng) for _ in range(300)]
    nd = NearDedup(0.8)
    assert not nd.check_batch(docs[:150]).any()
    copy = list(docs[10])
    copy[40] = "changed"
    batch = [*docs[150:], copy, list(docs[200])]  # a near copy of an old doc, an exact copy of this batch's
    flags = nd.check_batch(batch)
    assert flags.tolist() == [False] * 150 + [True, True]
    assert nd.check_batch([]).shape == (0,)
    short = NearDedup(0.8)  # records shorter than the shingle size still get one shingle
    assert short.check_batch([["hi"], ["hi"], ["bye"]]).tolist() == [False, True, False]


def test_heuristics() -> None:
    good = " ".join(synth._WORDS[i % 60] for i in range(120))
    assert heuristic_reason(good, good.lower().split()) is None
    assert heuristic_reason("Lorem ipsum dolor sit amet", ["lorem"]) == "lorem_ipsum"
    rep = "buy now " * 60
    assert heuristic_reason(rep, rep.split()) == "repeated_ngrams"
    sym = " ".join(["#tag"] * 20 + ["word"] * 40)
    assert heuristic_reason(sym, sym.split()) == "symbol_ratio"
    nums = " ".join(["12345"] * 30 + ["words"] * 30)
    assert heuristic_reason(nums, nums.split()) == "alpha_ratio"
    lines = "\n".join(["same line here ok"] * 15 + [f"other line {i} text" for i in range(5)])
    assert heuristic_reason(lines, lines.lower().split()) == "duplicate_lines"
    short = "Yes, thanks!"  # too short to judge
    assert heuristic_reason(short, short.lower().split()) is None


def test_alpha_ratio_fast_bound_agrees_with_the_regex() -> None:
    rng = random.Random(3)
    for _ in range(300):
        words = [
            rng.choice(["word", "x1234", "12345", "-----", "okay.", "abcd,", "99.55", "There"])
            for _ in range(60)
        ]
        text = " ".join(words)

        slow = 1 - len(_NO_ALPHA_TOKEN.findall(text)) / len(words) < MIN_ALPHA_WORD_RATIO
        assert (heuristic_reason(text, text.lower().split()) == "alpha_ratio") == slow


def test_representation_and_diversity() -> None:
    rep = Representation({"gender": {"female": ["she", "her", "woman"], "male": ["he", "his", "man"]}})
    for text in ["she went home", "he and she", "his car", "nothing here"]:
        rep.add(text.split())
    assert rep.counts["gender"] == {"female": 2, "male": 2}
    assert rep.imbalance() == {"gender": 1.0}
    rep2 = Representation({"g": {"a": ["x"], "b": ["y"]}})
    rep2.add(["x"])
    assert rep2.imbalance() == {"g": float("inf")}
    div = Diversity(sample_mod=1)
    div.add(b"\x00", ["a", "b", "a", "b"])
    assert div.result()["distinct1"] == 0.5 and div.result()["distinct2"] == pytest.approx(2 / 3, abs=1e-4)
