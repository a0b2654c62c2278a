"""Exact and near-duplicate detection.

Exact: a set of 128-bit content keys (see `normalize.dedup_key`), ~90 bytes per unique record.

Near: MinHash over word n-gram shingles plus LSH banding, vectorized with numpy over batches of
records. Word hashes are CRC32 (cached), shingle hashes a fixed random linear combination of the
word hashes, and the permutations multiply-shift hashes, so signatures are identical on every run
and machine. Banding is tuned for recall (P(candidate) >= 0.98 at the threshold) and every candidate
pair is then verified on its signatures (16-bit b-bit MinHash, so the estimate is the fraction of
equal values), which keeps precision: a record is a near duplicate when an earlier record's
estimated Jaccard similarity is >= threshold. The index holds one packed uint64 (band-hash prefix,
record id) per band per record in sorted numpy runs merged LSM-style, and signatures take 2 bytes per
permutation: ~0.4 KB per record at 128 permutations and 16 bands, instead of ~100 bytes per band
in a Python dict.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


class ExactDedup:
    def __init__(self) -> None:
        self._seen: set[int] = set()

    def seen(self, key: bytes) -> bool:
        """True if `key` was added before; adds it otherwise."""
        k = int.from_bytes(key, "little")
        if k in self._seen:
            return True
        self._seen.add(k)
        return False

    def __len__(self) -> int:
        return len(self._seen)


def choose_bands(
    threshold: float, num_perm: int, min_recall: float = 0.98, max_bands: int = 48
) -> tuple[int, int]:
    """(bands, rows): the most selective banding that still makes a pair at `threshold` a candidate
    with probability >= `min_recall` (verification removes the extra candidates)."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if bands > max_bands:
            break
        if 1 - (1 - threshold**rows) ** bands >= min_recall:
            return bands, rows
    return min(max_bands, num_perm), max(1, num_perm // max_bands)


ID_BITS = 28  # records per near-dedup run: 268 M
_ID_MASK = np.uint64((1 << ID_BITS) - 1)
_KEY_MASK = np.uint64(((1 << 64) - 1) ^ ((1 << ID_BITS) - 1))


class _SortedRuns:
    """A growing multiset of band hashes with batch lookups of the earliest record id per hash.

    Each entry packs the top 36 bits of a band hash and a 28-bit record id into one uint64, so a run
    is one array sorted in place (no argsort, no parallel id array) and, among equal hash prefixes,
    the smallest id comes first. A 36-bit prefix collides now and then at millions of records; that
    only adds a candidate, which signature verification then rejects. Runs are merged when one is no
    more than twice the next: O(log n) runs, amortized O(1) merge work per entry.
    """

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def lookup(self, q: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each run: (positions in q that hit, the earliest id with that hash prefix)."""
        qk = q & _KEY_MASK
        out = []
        for run in self.runs:
            idx = np.searchsorted(run, qk)
            np.minimum(idx, len(run) - 1, out=idx)
            found = run[idx]
            hit = (found & _KEY_MASK) == qk
            if hit.any():
                where = np.nonzero(hit)[0]
                out.append((where, (found[where] & _ID_MASK).astype(np.int64)))
        return out

    def add(self, hashes: np.ndarray, ids: np.ndarray) -> None:
        if len(ids) and int(ids.max()) > int(_ID_MASK):
            raise ValueError(
                f"near dedup indexes at most {int(_ID_MASK) + 1:,} records per run; split the source"
            )
        packed = (hashes & _KEY_MASK) | ids.astype(np.uint64)
        packed.sort()
        self.runs.append(packed)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            b = self.runs.pop()
            a = self.runs.pop()
            merged = np.concatenate((a, b))
            del a, b  # peak memory: the two runs plus their merge, never more
            merged.sort()
            self.runs.append(merged)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.runs)


class _SignatureStore:
    """Append-only 16-bit signatures in fixed-size chunks (no doubling copies)."""

    CHUNK = 1 << 16

    def __init__(self, num_perm: int) -> None:
        self.num_perm = num_perm
        self.chunks: list[np.ndarray] = []
        self.size = 0

    def append(self, sig16: np.ndarray) -> None:
        i = 0
        while i < len(sig16):
            if not self.chunks or self.size % self.CHUNK == 0:
                self.chunks.append(np.empty((self.CHUNK, self.num_perm), dtype=np.uint16))
            off = self.size % self.CHUNK
            n = min(self.CHUNK - off, len(sig16) - i)
            self.chunks[-1][off : off + n] = sig16[i : i + n]
            self.size += n
            i += n

    def take(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.num_perm), dtype=np.uint16)
        chunk_of = ids >> 16
        for c in np.unique(chunk_of):
            sel = chunk_of == c
            out[sel] = self.chunks[int(c)][ids[sel] & (self.CHUNK - 1)]
        return out

    @property
    def nbytes(self) -> int:
        return len(self.chunks) * self.CHUNK * self.num_perm * 2


class NearDedup:
    """MinHash-LSH near-duplicate detector over batches of tokenized records."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 1) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.ngram = ngram
        self.bands, self.rows = choose_bands(threshold, num_perm)
        rng = np.random.default_rng(seed)
        self._coef = rng.integers(1, 2**63, size=ngram, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._band_coef = (
            rng.integers(1, 2**63, size=(self.bands, self.rows), dtype=np.uint64) * np.uint64(2) + 1
        )
        self._band_salt = rng.integers(0, 2**63, size=self.bands, dtype=np.uint64)
        self._index = _SortedRuns()
        self._sigs = _SignatureStore(num_perm)
        self._word_hash: dict[str, int] = {}
        self.candidates = 0  # candidate pairs verified (diagnostics)

    def _hash_words(self, words: list[str]) -> list[int]:
        cache = self._word_hash
        if len(cache) > 2_000_000:  # bound memory on huge vocabularies; hashes are pure, so this is safe
            cache.clear()
        out = []
        for w in words:
            h = cache.get(w)
            if h is None:
                h = cache[w] = zlib.crc32(w.encode())
            out.append(h)
        return out

    def signatures(self, docs: Sequence[list[str]]) -> np.ndarray:
        """(len(docs), num_perm) uint64 MinHash signatures of word n-gram shingles."""
        lengths = np.fromiter((max(len(d), 1) for d in docs), dtype=np.int64, count=len(docs))
        flat: list[int] = []
        for d in docs:
            flat.extend(self._hash_words(d) if d else [0])
        w = np.asarray(flat, dtype=np.uint64)
        total = len(w)
        starts = np.zeros(len(docs), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        ends = np.repeat(starts + lengths, lengths)
        pos = np.arange(total, dtype=np.int64)
        n = self.ngram
        shingle = np.zeros(total, dtype=np.uint64)
        for k in range(n):
            shifted = np.zeros(total, dtype=np.uint64)
            if k < total:
                shifted[: total - k] = w[k:]
            shifted[pos + k >= ends] = 0  # do not run into the next record
            shingle += shifted * self._coef[k]
        # a shingle starts at every position with n words ahead; short records get one shingle
        valid = pos + n <= ends
        valid[starts[lengths < n]] = True
        shingle = shingle[valid]
        counts = np.add.reduceat(valid.astype(np.int64), starts)
        seg = np.zeros(len(docs), dtype=np.int64)
        np.cumsum(counts[:-1], out=seg[1:])
        # one contiguous 1-D pass per permutation: ~10x faster than a (shingles x perms) broadcast
        # followed by a 2-D reduceat. a·x mod 2^64 with odd a is a bijection: a valid min-wise family
        # for already-random shingle hashes.
        sig_t = np.empty((self.num_perm, len(docs)), dtype=np.uint64)
        h = np.empty(len(shingle), dtype=np.uint64)
        for p in range(self.num_perm):
            np.multiply(shingle, self._a[p], out=h)
            sig_t[p] = np.minimum.reduceat(h, seg)
        sig: np.ndarray = sig_t.T
        return sig

    def band_hashes(self, sig: np.ndarray) -> np.ndarray:
        """(docs, bands) uint64: each band's rows folded into one salted 64-bit hash."""
        used = sig[:, : self.bands * self.rows].reshape(len(sig), self.bands, self.rows)
        out: np.ndarray = (used * self._band_coef[None, :, :]).sum(axis=2, dtype=np.uint64) ^ self._band_salt
        return out

    def check_batch(self, docs: Sequence[list[str]]) -> np.ndarray:
        """Bool per doc: near duplicate of an earlier doc (this batch or any before). Adds all docs."""
        n = len(docs)
        if not n:
            return np.zeros(0, dtype=bool)
        sig = self.signatures(docs)
        bands = self.band_hashes(sig)
        sig16 = (sig >> np.uint64(48)).astype(np.uint16)  # b-bit MinHash: the well-mixed high bits
        first_id = self._sigs.size
        flat = bands.ravel()
        owner = np.repeat(np.arange(n, dtype=np.int64), self.bands)
        pairs_doc: list[np.ndarray] = []
        pairs_id: list[np.ndarray] = []
        for where, ids in self._index.lookup(flat):
            pairs_doc.append(owner[where])
            pairs_id.append(ids)
        # inside the batch: every doc sharing a band hash with an earlier doc of the batch
        order = np.lexsort((owner, flat))
        fs, os_ = flat[order], owner[order]
        new_group = np.ones(len(fs), dtype=bool)
        new_group[1:] = fs[1:] != fs[:-1]
        group_first = np.maximum.accumulate(np.where(new_group, np.arange(len(fs)), 0))
        later = ~new_group
        pairs_doc.append(os_[later])
        pairs_id.append(os_[group_first[later]] + first_id)
        self._sigs.append(sig16)
        self._index.add(flat, np.repeat(np.arange(first_id, first_id + n, dtype=np.uint32), self.bands))
        dup = np.zeros(n, dtype=bool)
        docs_idx = np.concatenate(pairs_doc)
        if not len(docs_idx):
            return dup
        cand = np.unique(np.stack((docs_idx, np.concatenate(pairs_id))), axis=1)
        cand = cand[:, cand[1] < cand[0] + first_id]  # only earlier records
        self.candidates += cand.shape[1]
        for lo in range(0, cand.shape[1], 65536):  # bound the (pairs x perms) temporary
            d, c = cand[0, lo : lo + 65536], cand[1, lo : lo + 65536]
            est = (sig16[d] == self._sigs.take(c)).mean(axis=1)
            dup[d[est >= self.threshold]] = True
        return dup

    @property
    def index_bytes(self) -> int:
        return self._index.nbytes + self._sigs.nbytes

    @staticmethod
    def jaccard(a: list[str], b: list[str], n: int = 5) -> float:
        """Exact shingle Jaccard (for tests and diagnostics)."""

        def sh(d: list[str]) -> set[tuple[str, ...]]:
            return {tuple(d[i : i + n]) for i in range(max(1, len(d) - n + 1))}

        x, y = sh(a), sh(b)
        return len(x & y) / len(x | y) if x | y else 1.0
