"""Deterministic train/validation assignment from the record's content key and the seed.

The same record lands in the same split on every run and machine, whatever the input order, and
adding records never moves existing ones: the split is a pure function of (content, seed, ratio).
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1
_SCALE = 1.0 / 2**64


def splitmix64(x: int) -> int:
    """A well-mixed 64-bit function of `x` (Steele et al.); cheap in pure Python."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class Splitter:
    def __init__(self, validation_ratio: float, seed: int) -> None:
        if not 0.0 <= validation_ratio < 1.0:
            raise ValueError(f"split.validationRatio must be in [0, 1), got {validation_ratio}")
        self.ratio = validation_ratio
        self.seed = seed
        self._salt = splitmix64(seed & _MASK64)

    def is_validation(self, key: bytes) -> bool:
        return splitmix64(int.from_bytes(key[:8], "little") ^ self._salt) * _SCALE < self.ratio
