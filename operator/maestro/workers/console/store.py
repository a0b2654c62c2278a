"""The review store: samples awaiting a human, and the decisions taken on them (the audit log).

One SQLAlchemy Core schema serves the embedded SQLite database (the default, a file on the console's
claim) and PostgreSQL (several console replicas, managed backups). The store is synchronous; the
server calls it from a worker thread (`asyncio.to_thread`) so the event loop never waits on disk.

- `samples`: one row per (namespace, request id, kind), so a monitor that retries a push, or two
  replicas that saw the same request, store it once. Prompts are kept as the monitor sent them: text
  only when the policy logs prompts (`audit.logPrompts`), else its keyed digest.
- `decisions`: append-only (the store never updates or deletes a decision except by retention age);
  each names the reviewer, so it *is* the audit log. A sample's `state` follows its latest decision.
- `exports`: immutable snapshots of the corrections export, keyed by the sha256 of their bytes, so a
  version URL keeps serving the same bytes after newer corrections land (an LLMDataset pins it).

Retention (`sweep`): samples, decisions and snapshots older than the max age go, and each namespace
keeps at most `max_rows` samples (the oldest go first).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from maestro.workers.console import contract as c

log = logging.getLogger("maestro.console.audit")

metadata = sa.MetaData()

samples = sa.Table(
    "samples",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("namespace", sa.String(253), nullable=False),
    sa.Column("deployment", sa.String(253), nullable=False),
    sa.Column("variant", sa.String(253)),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("request_id", sa.String(256), nullable=False),
    sa.Column("prompt_text", sa.Text),
    sa.Column("prompt_digest", sa.String(128)),
    sa.Column("response", sa.Text),
    sa.Column("meta", sa.JSON, nullable=False, default=dict),
    sa.Column("state", sa.String(16), nullable=False, default="pending"),
    sa.UniqueConstraint("namespace", "request_id", "kind", name="uq_samples_request"),
    sa.Index("ix_samples_queue", "namespace", "state", "id"),
    sa.Index("ix_samples_created", "created_at"),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    # no foreign key: the audit log outlives a sample the row cap removed (it goes by age only)
    sa.Column("sample_id", sa.BigInteger, nullable=False),
    sa.Column("namespace", sa.String(253), nullable=False),
    sa.Column("deployment", sa.String(253), nullable=False),
    sa.Column("request_id", sa.String(256), nullable=False),
    sa.Column("reviewer", sa.String(512), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("correction", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_decisions_sample", "sample_id", "id"),
    sa.Index("ix_decisions_ns", "namespace", "action", "id"),
)

exports = sa.Table(
    "exports",
    metadata,
    sa.Column("namespace", sa.String(253), primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

#: Upper bounds on what one sample may carry (the ingest refuses larger ones with a clear message).
MAX_TEXT = 64 * 1024
MAX_REASON = 4096
MAX_CORRECTION = 32 * 1024


class StoreError(ValueError):
    """A request the store refuses; the message is safe to show to the caller."""


class NotFound(StoreError):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes (stored as UTC): label them, so both backends compare alike
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def engine_for(url: str, password: str | None = None) -> Engine:
    """An engine for a `sqlite:///` or `postgresql://` URL (psycopg 3 is the PostgreSQL driver)."""
    u = sa.engine.make_url(url)
    if u.get_backend_name() == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
        if password is not None:
            u = u.set(password=password)
        return sa.create_engine(u, pool_pre_ping=True, pool_size=5, max_overflow=5)
    if u.get_backend_name() != "sqlite":
        raise StoreError(f"database URL {u.render_as_string()}: use sqlite:///<path> or postgresql://...")
    if u.database and u.database != ":memory:":
        directory = os.path.dirname(os.path.abspath(u.database))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the database directory {directory}: {e.strerror}; mount the console's "
                f"claim there or set {c.ENV_DATABASE_URL}"
            ) from e
    engine = sa.create_engine(u, connect_args={"timeout": 15})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers never wait on the writer
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=15000")
        cur.close()

    return engine


@dataclass(frozen=True)
class SampleIn:
    """One sample as the ingest received it (already validated by the server)."""

    namespace: str
    deployment: str
    kind: str
    request_id: str
    reason: str = ""
    variant: str | None = None
    created_at: dt.datetime | None = None
    prompt_text: str | None = None
    prompt_digest: str | None = None
    response: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    id: int
    namespace: str
    deployment: str
    variant: str | None
    kind: str
    reason: str
    created_at: dt.datetime
    request_id: str
    prompt_text: str | None
    prompt_digest: str | None
    response: str | None
    meta: dict[str, Any]
    state: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "namespace": self.namespace,
            "deployment": self.deployment,
            "variant": self.variant,
            "kind": self.kind,
            "reason": self.reason,
            "createdAt": self.created_at.isoformat(),
            "requestId": self.request_id,
            "promptText": self.prompt_text,
            "promptDigest": self.prompt_digest,
            "response": self.response,
            "metadata": self.meta,
            "state": self.state,
        }


@dataclass(frozen=True)
class Decision:
    id: int
    sample_id: int
    reviewer: str
    action: str
    reason: str | None
    correction: str | None
    at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sampleId": self.sample_id,
            "reviewer": self.reviewer,
            "action": self.action,
            "reason": self.reason,
            "correction": self.correction,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True)
class Export:
    namespace: str
    version: str  # sha256 of `content`
    records: int
    skipped: int  # corrections whose sample kept no prompt text (a digest cannot train anything)
    content: bytes


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0


@dataclass
class SweepResult:
    expired: int = 0
    over_limit: int = 0
    decisions: int = 0
    exports: int = 0


def _sample(row: Any) -> Sample:
    return Sample(
        id=row.id,
        namespace=row.namespace,
        deployment=row.deployment,
        variant=row.variant,
        kind=row.kind,
        reason=row.reason or "",
        created_at=_utc(row.created_at),
        request_id=row.request_id,
        prompt_text=row.prompt_text,
        prompt_digest=row.prompt_digest,
        response=row.response,
        meta=dict(row.meta or {}),
        state=row.state,
    )


def _decision(row: Any) -> Decision:
    return Decision(
        id=row.id,
        sample_id=row.sample_id,
        reviewer=row.reviewer,
        action=row.action,
        reason=row.reason,
        correction=row.correction,
        at=_utc(row.at),
    )


class ReviewStore:
    """Samples, decisions and export snapshots in one database (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str, password: str | None = None) -> ReviewStore:
        """Connect and create the tables when missing (idempotent; replicas may race on it)."""
        store = cls(engine_for(url, password))
        store.create_schema()
        return store

    def create_schema(self) -> None:
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except sa.exc.IntegrityError:
            metadata.create_all(self.engine, checkfirst=True)  # another replica created it meanwhile
        except sa.exc.OperationalError as e:
            raise StoreError(f"cannot open the review database: {e.orig}") from e

    def close(self) -> None:
        self.engine.dispose()

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    # -- ingest ---------------------------------------------------------------------------------
    def ingest(self, items: Iterable[SampleIn], now: dt.datetime | None = None) -> IngestResult:
        """Insert new samples; one already stored under (namespace, request id, kind) is a duplicate."""
        res = IngestResult()
        at = now or _now()
        with self.engine.begin() as conn:
            for s in items:
                key = (
                    (samples.c.namespace == s.namespace)
                    & (samples.c.request_id == s.request_id)
                    & (samples.c.kind == s.kind)
                )
                if conn.execute(sa.select(samples.c.id).where(key)).first() is not None:
                    res.duplicates += 1
                    continue
                # a savepoint, so a concurrent insert of the same key (another replica) costs this
                # one row, not the batch
                try:
                    with conn.begin_nested():
                        conn.execute(
                            samples.insert().values(
                                namespace=s.namespace,
                                deployment=s.deployment,
                                variant=s.variant,
                                kind=s.kind,
                                reason=s.reason[:MAX_REASON],
                                created_at=s.created_at or at,
                                ingested_at=at,
                                request_id=s.request_id,
                                prompt_text=s.prompt_text,
                                prompt_digest=s.prompt_digest,
                                response=s.response,
                                meta=dict(s.meta),
                                state="pending",
                            )
                        )
                except sa.exc.IntegrityError:
                    res.duplicates += 1
                    continue
                res.accepted += 1
        return res

    # -- reading --------------------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        """Namespaces that hold samples (the console asks RBAC about each before showing one)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(samples.c.namespace).distinct().order_by(samples.c.namespace))
            return [r[0] for r in rows]

    def counts(self, namespace: str) -> dict[str, int]:
        """Samples per state in a namespace (every state present, zero when none)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(samples.c.state, sa.func.count())
                .where(samples.c.namespace == namespace)
                .group_by(samples.c.state)
            )
            out = dict.fromkeys(c.STATES, 0)
            out.update({state: n for state, n in rows})
            return out

    def queue(
        self, namespace: str, state: str | None = "pending", limit: int = 100, before_id: int | None = None
    ) -> list[Sample]:
        """A page of a namespace's samples, newest first (`before_id` continues from the last page)."""
        q = sa.select(samples).where(samples.c.namespace == namespace)
        if state:
            q = q.where(samples.c.state == state)
        if before_id is not None:
            q = q.where(samples.c.id < before_id)
        q = q.order_by(samples.c.id.desc()).limit(max(1, min(limit, 500)))
        with self.engine.connect() as conn:
            return [_sample(r) for r in conn.execute(q)]

    def get(self, namespace: str, sample_id: int) -> Sample:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(samples).where((samples.c.id == sample_id) & (samples.c.namespace == namespace))
            ).first()
        if row is None:
            raise NotFound(f"no sample {sample_id} in namespace {namespace}")
        return _sample(row)

    def decisions(self, sample_id: int) -> list[Decision]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(decisions).where(decisions.c.sample_id == sample_id).order_by(decisions.c.id)
            )
            return [_decision(r) for r in rows]

    # -- deciding -------------------------------------------------------------------------------
    def decide(
        self,
        namespace: str,
        sample_id: int,
        reviewer: str,
        action: str,
        reason: str | None = None,
        correction: str | None = None,
        now: dt.datetime | None = None,
    ) -> Decision:
        """Record one decision (appended to the audit log) and move the sample to its state."""
        if action not in c.ACTIONS:
            raise StoreError(f"action {action!r}: expected one of {', '.join(c.ACTIONS)}")
        reason = (reason or "").strip() or None
        correction = (correction or "").strip() or None
        if action == "reject" and not reason:
            raise StoreError("a rejection needs a reason")
        if action == "correct" and not correction:
            raise StoreError("a correction needs the corrected answer")
        if action != "correct":
            correction = None
        if reason and len(reason) > MAX_REASON:
            raise StoreError(f"reason over {MAX_REASON} characters")
        if correction and len(correction) > MAX_CORRECTION:
            raise StoreError(f"correction over {MAX_CORRECTION} characters")
        at = now or _now()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(samples.c.id, samples.c.deployment, samples.c.request_id).where(
                    (samples.c.id == sample_id) & (samples.c.namespace == namespace)
                )
            ).first()
            if row is None:
                raise NotFound(f"no sample {sample_id} in namespace {namespace}")
            inserted = conn.execute(
                decisions.insert().values(
                    sample_id=sample_id,
                    namespace=namespace,
                    deployment=row.deployment,
                    request_id=row.request_id,
                    reviewer=reviewer,
                    action=action,
                    reason=reason,
                    correction=correction,
                    at=at,
                )
            ).inserted_primary_key
            assert inserted is not None
            new_id = int(inserted[0])
            conn.execute(samples.update().where(samples.c.id == sample_id).values(state=c.STATE_OF[action]))
        # the structured audit line: who decided what on which request (never the texts themselves)
        log.info(
            json.dumps(
                {
                    "event": "review.decision",
                    "namespace": namespace,
                    "deployment": row.deployment,
                    "sampleId": sample_id,
                    "requestId": row.request_id,
                    "decisionId": new_id,
                    "action": action,
                    "reviewer": reviewer,
                    "hasReason": reason is not None,
                    "at": at.isoformat(),
                },
                separators=(",", ":"),
            )
        )
        return Decision(new_id, sample_id, reviewer, action, reason, correction, at)

    # -- closing the loop -----------------------------------------------------------------------
    def _current_corrections(self, conn: Connection, namespace: str) -> tuple[list[bytes], int]:
        latest = (
            sa.select(sa.func.max(decisions.c.id))
            .where(decisions.c.sample_id == samples.c.id)
            .scalar_subquery()
            .correlate(samples)
        )
        q = (
            sa.select(samples.c.prompt_text, decisions.c.correction)
            .join(decisions, decisions.c.sample_id == samples.c.id)
            .where(
                (samples.c.namespace == namespace)
                & (decisions.c.id == latest)
                & (decisions.c.action == "correct")
            )
            .order_by(decisions.c.id)
        )
        lines: list[bytes] = []
        skipped = 0
        for prompt, correction in conn.execute(q):
            if not prompt:
                skipped += 1
                continue
            # the LLMDataset `prompt-completion` schema, as feedback.py's corrections.jsonl
            record = {"prompt": prompt, "completion": correction}
            lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        return lines, skipped

    def export_corrections(self, namespace: str, now: dt.datetime | None = None) -> Export:
        """The namespace's current corrections as JSONL, snapshotted under the sha256 of its bytes."""
        with self.engine.begin() as conn:
            lines, skipped = self._current_corrections(conn, namespace)
            content = b"".join(lines)
            version = hashlib.sha256(content).hexdigest()
            known = conn.execute(
                sa.select(exports.c.version).where(
                    (exports.c.namespace == namespace) & (exports.c.version == version)
                )
            ).first()
            if known is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            exports.insert().values(
                                namespace=namespace,
                                version=version,
                                records=len(lines),
                                content=content,
                                created_at=now or _now(),
                            )
                        )
                except sa.exc.IntegrityError:
                    pass  # the same bytes, snapshotted by a concurrent request
        return Export(namespace, version, len(lines), skipped, content)

    def export_version(self, namespace: str, version: str) -> Export:
        """A snapshot by version: the same bytes for as long as retention keeps it."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(exports).where((exports.c.namespace == namespace) & (exports.c.version == version))
            ).first()
        if row is None:
            raise NotFound(
                f"no corrections export {version} in namespace {namespace} (never taken, or past retention)"
            )
        return Export(namespace, row.version, row.records, 0, bytes(row.content))

    # -- retention ------------------------------------------------------------------------------
    def sweep(self, max_age: dt.timedelta, max_rows: int, now: dt.datetime | None = None) -> SweepResult:
        """Delete what retention no longer allows; returns how many rows of each kind went."""
        res = SweepResult()
        cutoff = (now or _now()) - max_age
        with self.engine.begin() as conn:
            res.expired = conn.execute(samples.delete().where(samples.c.created_at < cutoff)).rowcount
            res.decisions = conn.execute(decisions.delete().where(decisions.c.at < cutoff)).rowcount
            res.exports = conn.execute(exports.delete().where(exports.c.created_at < cutoff)).rowcount
            over = conn.execute(
                sa.select(samples.c.namespace)
                .group_by(samples.c.namespace)
                .having(sa.func.count() > max_rows)
            ).all()
            for (ns,) in over:
                # the newest row past the cap; it and everything older goes
                edge = conn.execute(
                    sa.select(samples.c.id)
                    .where(samples.c.namespace == ns)
                    .order_by(samples.c.id.desc())
                    .offset(max_rows)
                    .limit(1)
                ).scalar()
                if edge is not None:
                    res.over_limit += conn.execute(
                        samples.delete().where((samples.c.namespace == ns) & (samples.c.id <= edge))
                    ).rowcount
        return res
