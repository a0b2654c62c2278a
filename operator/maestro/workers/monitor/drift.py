"""Population Stability Index drift: the live traffic mix against a reference window.

PSI = Σ (cur_i − ref_i) · ln(cur_i / ref_i) over bins. It is symmetric, cheap (a few bins), needs
no model and reads the same for every feature: < 0.1 stable, 0.1–0.2 moderate, > 0.2 shifted.
Numeric features use fixed bins (so a reference file stays comparable across restarts);
categorical ones use their values as bins, with unseen values pooled per side.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Share given to an empty bin so ln() stays finite; small enough not to mask a real shift.
EPSILON = 1e-4
#: Character-length bin edges (roughly log-scale): a prompt of 40 chars and one of 4,000 differ.
LENGTH_EDGES: tuple[float, ...] = (1, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


def psi(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """PSI between two histograms given as counts per bin label (missing bins count as empty)."""
    ref_total = sum(reference.values())
    cur_total = sum(current.values())
    if ref_total <= 0 or cur_total <= 0:
        return 0.0
    value = 0.0
    for label in set(reference) | set(current):
        r = max(reference.get(label, 0.0) / ref_total, EPSILON)
        c = max(current.get(label, 0.0) / cur_total, EPSILON)
        value += (c - r) * math.log(c / r)
    return value


def length_bin(value: float, edges: Sequence[float] = LENGTH_EDGES) -> str:
    """Label of the fixed bin holding `value`: '<1', '1-16', …, '>=16384'."""
    i = bisect.bisect_right(edges, value)
    if i == 0:
        return f"<{edges[0]:g}"
    if i == len(edges):
        return f">={edges[-1]:g}"
    return f"{edges[i - 1]:g}-{edges[i]:g}"


@dataclass
class FeatureDrift:
    """One feature: a frozen reference histogram and a sliding window of the latest bins."""

    name: str
    reference_size: int
    window: int
    threshold: float
    reference: Counter[str] = field(default_factory=Counter)
    frozen: bool = False
    _recent: deque[str] = field(init=False)
    _current: Counter[str] = field(default_factory=Counter, init=False)

    def __post_init__(self) -> None:
        self._recent = deque()

    def add(self, label: str) -> None:
        if not self.frozen:
            self.reference[label] += 1
            if sum(self.reference.values()) >= self.reference_size:
                self.frozen = True
            return
        self._recent.append(label)
        self._current[label] += 1
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            self._current[old] -= 1
            if not self._current[old]:
                del self._current[old]

    @property
    def current_size(self) -> int:
        return len(self._recent)

    @property
    def reference_count(self) -> int:
        return sum(self.reference.values())

    def ready(self, min_current: int) -> bool:
        """A PSI over a handful of events is noise: report only with enough on both sides."""
        return self.frozen and self.current_size >= min_current

    def value(self) -> float:
        return psi(self.reference, self._current)

    def current(self) -> dict[str, int]:
        return dict(self._current)


class DriftMonitor:
    """The drift features of one serving pod. Not thread-safe: fed from the event loop only."""

    def __init__(
        self,
        features: Iterable[str],
        *,
        reference_size: int,
        window: int,
        threshold: float,
        min_current: int | None = None,
    ) -> None:
        if reference_size < 1 or window < 1:
            raise ValueError("drift reference size and window must be >= 1")
        self.threshold = threshold
        self.min_current = min_current if min_current is not None else max(1, min(window, 50))
        self.features = {
            name: FeatureDrift(name, reference_size=reference_size, window=window, threshold=threshold)
            for name in features
        }

    def observe(self, feature: str, label: str) -> None:
        self.features[feature].add(label)

    def observe_length(self, feature: str, chars: float) -> None:
        self.features[feature].add(length_bin(chars))

    def snapshot(self) -> dict[str, float]:
        """PSI per feature that has enough data on both sides."""
        return {name: f.value() for name, f in self.features.items() if f.ready(self.min_current)}

    def all_frozen(self) -> bool:
        return all(f.frozen for f in self.features.values())

    # -- reference persistence --------------------------------------------------------------
    def reference_document(self) -> dict[str, Any]:
        return {
            "version": 1,
            "features": {n: dict(f.reference) for n, f in self.features.items() if f.frozen},
        }

    def load_reference(self, doc: Mapping[str, Any]) -> list[str]:
        """Freeze features from a saved reference; returns the features it set."""
        features = doc.get("features")
        if not isinstance(features, Mapping):
            raise ValueError("drift reference: expected an object with a 'features' mapping")
        loaded = []
        for name, hist in features.items():
            f = self.features.get(name)
            if f is None or not isinstance(hist, Mapping) or not hist:
                continue
            counts = Counter({str(k): int(v) for k, v in hist.items() if int(v) > 0})
            if counts:
                f.reference = counts
                f.frozen = True
                loaded.append(name)
        return loaded


def load_reference_file(monitor: DriftMonitor, path: str) -> list[str]:
    """Load `path` into `monitor` if it exists. A corrupt file is an error the user must fix."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        try:
            doc = json.load(fh)
        except ValueError as e:
            raise ValueError(f"drift reference {path} is not valid JSON ({e}); fix or delete it") from e
    return monitor.load_reference(doc)


def save_reference_file(monitor: DriftMonitor, path: str) -> None:
    """Write atomically, so a crash mid-write never leaves a half file that blocks the next start."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(monitor.reference_document(), fh, indent=1, sort_keys=True)
    os.replace(tmp, path)
