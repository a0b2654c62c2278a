from __future__ import annotations

import json
import math
import random

import pytest

from maestro.workers.monitor.drift import (
    DriftMonitor,
    length_bin,
    load_reference_file,
    psi,
    save_reference_file,
)

pytestmark = pytest.mark.unit


def test_psi_matches_the_formula() -> None:
    ref = {"a": 50, "b": 50}
    cur = {"a": 80, "b": 20}
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(ref, cur) == pytest.approx(expected)
    assert psi(ref, {"a": 5, "b": 5}) == pytest.approx(0.0)  # same shares, different volume


def test_psi_is_finite_for_bins_missing_on_one_side() -> None:
    value = psi({"a": 100}, {"b": 100})
    assert math.isfinite(value) and value > 5  # a complete shift is huge, not infinite
    assert psi({}, {"a": 1}) == 0.0


def test_length_bins_are_fixed_edges() -> None:
    assert length_bin(0) == "<1"
    assert length_bin(1) == "1-16"
    assert length_bin(15.9) == "1-16"
    assert length_bin(100) == "64-128"
    assert length_bin(1_000_000) == ">=16384"


def _feed(monitor: DriftMonitor, rng: random.Random, mean_chars: float, n: int) -> None:
    for _ in range(n):
        monitor.observe_length("prompt_chars", max(1.0, rng.gauss(mean_chars, mean_chars / 4)))


def test_stable_mix_stays_below_threshold_and_shifted_mix_exceeds_it() -> None:
    rng = random.Random(7)
    stable = DriftMonitor(["prompt_chars"], reference_size=400, window=400, threshold=0.2)
    _feed(stable, rng, 200, 400)  # reference
    assert stable.snapshot() == {}  # nothing to compare yet
    _feed(stable, rng, 200, 400)
    shifted = DriftMonitor(["prompt_chars"], reference_size=400, window=400, threshold=0.2)
    _feed(shifted, rng, 200, 400)
    _feed(shifted, rng, 2000, 400)
    assert stable.snapshot()["prompt_chars"] < 0.1
    assert shifted.snapshot()["prompt_chars"] > 1.0


def test_current_window_slides() -> None:
    m = DriftMonitor(["lang"], reference_size=10, window=10, threshold=0.2, min_current=10)
    for _ in range(10):
        m.observe("lang", "en")
    for _ in range(10):
        m.observe("lang", "fr")
    assert m.snapshot()["lang"] > 5
    for _ in range(10):  # the window forgets the French burst entirely
        m.observe("lang", "en")
    assert m.snapshot()["lang"] == pytest.approx(0.0)
    assert m.features["lang"].current_size == 10


def test_reference_round_trips_through_a_file(tmp_path) -> None:
    m = DriftMonitor(["prompt_chars", "prompt_language"], reference_size=3, window=5, threshold=0.2)
    for chars in (10, 100, 1000):
        m.observe_length("prompt_chars", chars)
    path = str(tmp_path / "ref" / "drift.json")
    save_reference_file(m, path)
    with open(path) as fh:
        doc = json.load(fh)
    assert doc["features"] == {
        "prompt_chars": {"1-16": 1, "64-128": 1, "512-1024": 1}
    }  # language not learned

    fresh = DriftMonitor(["prompt_chars", "prompt_language"], reference_size=3, window=5, threshold=0.2)
    assert load_reference_file(fresh, path) == ["prompt_chars"]
    assert fresh.features["prompt_chars"].frozen and not fresh.features["prompt_language"].frozen
    fresh.observe_length("prompt_chars", 10)  # goes to the current window at once
    assert fresh.features["prompt_chars"].current_size == 1


def test_corrupt_reference_file_is_an_actionable_error(tmp_path) -> None:
    path = tmp_path / "drift.json"
    path.write_text("{not json")
    m = DriftMonitor(["prompt_chars"], reference_size=3, window=5, threshold=0.2)
    with pytest.raises(ValueError, match="fix or delete it"):
        load_reference_file(m, str(path))
    assert load_reference_file(m, str(tmp_path / "absent.json")) == []
