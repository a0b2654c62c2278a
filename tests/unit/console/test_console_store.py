"""The review store on real SQLite (a tmp file) and a real PostgreSQL (started by the test session)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import console_helpers
import pytest

from maestro.workers.console.store import NotFound, ReviewStore, SampleIn, StoreError

pytestmark = pytest.mark.unit
# the fixtures, shared without a conftest.py
postgres = console_helpers.postgres
pg_url = console_helpers.pg_url

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReviewStore]:
    url = (
        f"sqlite:///{tmp_path}/review.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    s = ReviewStore.open(url)
    assert s.backend == request.param
    yield s
    s.close()


def sample(rid: str, ns: str = "team-a", kind: str = "policy-flag", **kw: object) -> SampleIn:
    base: dict[str, object] = {"deployment": "chat", "reason": "injection", "prompt_digest": "d" * 64}
    base.update(kw)
    return SampleIn(namespace=ns, kind=kind, request_id=rid, **base)  # type: ignore[arg-type]


def test_ingest_is_idempotent_per_namespace_request_and_kind(store: ReviewStore) -> None:
    first = store.ingest([sample("r1"), sample("r2"), sample("r1")], now=NOW)
    assert (first.accepted, first.duplicates) == (2, 1)
    again = store.ingest([sample("r1"), sample("r1", kind="negative-feedback"), sample("r1", ns="team-b")])
    assert (again.accepted, again.duplicates) == (2, 1)
    assert store.namespaces() == ["team-a", "team-b"]
    assert store.counts("team-a")["pending"] == 3
    page = store.queue("team-a", limit=2)
    assert [s.request_id for s in page] == ["r1", "r2"]  # newest first
    rest = store.queue("team-a", limit=2, before_id=page[-1].id)
    assert [(s.request_id, s.kind) for s in rest] == [("r1", "policy-flag")]
    got = store.get("team-a", page[0].id)
    assert got.created_at.tzinfo is not None and got.prompt_text is None and got.prompt_digest == "d" * 64
    with pytest.raises(NotFound):
        store.get("team-b", page[1].id)  # ids do not cross namespaces


def test_decisions_are_an_append_only_audit_log(store: ReviewStore, caplog: pytest.LogCaptureFixture) -> None:
    store.ingest([sample("r1", prompt_text="What is 2+2?", response="5")])
    sid = store.queue("team-a")[0].id
    with pytest.raises(StoreError, match="reason"):
        store.decide("team-a", sid, "alice", "reject")
    with pytest.raises(StoreError, match="corrected answer"):
        store.decide("team-a", sid, "alice", "correct")
    with pytest.raises(StoreError, match="action"):
        store.decide("team-a", sid, "alice", "delete")
    with pytest.raises(NotFound):
        store.decide("team-b", sid, "alice", "approve")
    caplog.set_level(logging.INFO, logger="maestro.console.audit")
    store.decide("team-a", sid, "alice", "reject", reason="wrong sum")
    store.decide("team-a", sid, "bob", "correct", correction="4")
    assert store.get("team-a", sid).state == "corrected"
    store.decide("team-a", sid, "carol", "approve", reason="fine after all", correction="ignored")
    history = store.decisions(sid)
    assert [(d.reviewer, d.action) for d in history] == [
        ("alice", "reject"),
        ("bob", "correct"),
        ("carol", "approve"),
    ]
    assert history[0].reason == "wrong sum" and history[1].correction == "4" and history[2].correction is None
    assert store.get("team-a", sid).state == "approved"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "maestro.console.audit"]
    assert [(x["reviewer"], x["action"], x["sampleId"]) for x in lines] == [
        ("alice", "reject", sid),
        ("bob", "correct", sid),
        ("carol", "approve", sid),
    ]
    assert all("correction" not in x and "reason" not in x for x in lines)  # who and what, not the texts
    assert "What is" not in caplog.text  # texts never reach the log


def test_corrections_export_is_versioned_by_content(store: ReviewStore) -> None:
    store.ingest(
        [
            sample("r1", prompt_text="Capital of France?", response="Lyon"),
            sample("r2"),  # digest only: a correction cannot become a training pair
            sample("r3", prompt_text="2+2?", response="5"),
        ]
    )
    ids = {s.request_id: s.id for s in store.queue("team-a")}
    empty = store.export_corrections("team-a")
    assert empty.records == 0 and empty.version == hashlib.sha256(b"").hexdigest()
    store.decide("team-a", ids["r1"], "alice", "correct", correction="Paris")
    store.decide("team-a", ids["r2"], "alice", "correct", correction="whatever")
    v1 = store.export_corrections("team-a")
    assert v1.content == b'{"prompt":"Capital of France?","completion":"Paris"}\n'
    assert (v1.records, v1.skipped) == (1, 1)
    assert v1.version == hashlib.sha256(v1.content).hexdigest()
    assert store.export_corrections("team-a").version == v1.version  # same content, same version
    store.decide("team-a", ids["r3"], "bob", "correct", correction="4")
    v2 = store.export_corrections("team-a")
    assert v2.version != v1.version and v2.records == 2
    assert [json.loads(x)["completion"] for x in v2.content.splitlines()] == ["Paris", "4"]
    # the old version still serves its own bytes
    assert store.export_version("team-a", v1.version).content == v1.content
    # a later non-correcting decision takes the pair out again
    store.decide("team-a", ids["r1"], "carol", "reject", reason="the correction was wrong")
    v3 = store.export_corrections("team-a")
    assert [json.loads(x)["prompt"] for x in v3.content.splitlines()] == ["2+2?"]
    assert store.export_corrections("team-b").records == 0
    with pytest.raises(NotFound):
        store.export_version("team-b", v1.version)


def test_retention_sweep_by_age_and_row_cap(store: ReviewStore) -> None:
    old = NOW - dt.timedelta(days=40)
    store.ingest([sample(f"old{i}", created_at=old) for i in range(3)], now=old)
    store.ingest([sample(f"new{i}") for i in range(5)], now=NOW)
    store.ingest([sample("other", ns="team-b")], now=NOW)
    old_id = store.queue("team-a", limit=500)[-1].id
    store.decide("team-a", old_id, "alice", "approve", now=old)
    keep = store.queue("team-a", limit=1)[0].id
    store.decide("team-a", keep, "alice", "approve", now=NOW)
    res = store.sweep(dt.timedelta(days=30), max_rows=3, now=NOW)
    assert (res.expired, res.over_limit, res.decisions) == (3, 2, 1)
    assert [s.request_id for s in store.queue("team-a", state=None)] == ["new4", "new3", "new2"]
    assert [d.reviewer for d in store.decisions(keep)] == ["alice"]
    assert store.counts("team-b")["pending"] == 1
    assert store.sweep(dt.timedelta(days=30), max_rows=3, now=NOW).over_limit == 0


def test_unsupported_database_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="sqlite"):
        ReviewStore.open("mysql://u@h/db")
