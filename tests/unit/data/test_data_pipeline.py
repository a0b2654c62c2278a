"""End to end through `maestro data validate`: formats, counts, gates, exit codes, outputs."""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import data_helpers
import pytest
from data_helpers import Run, chat, write_jsonl

from maestro.api.dataset import LLMDatasetStatus
from maestro.reconcile.dataset import summary_status
from maestro.workers.data import contract, synth

pytestmark = pytest.mark.unit
run_validate = data_helpers.run_validate  # the fixture, shared without a conftest.py

RunFn = Callable[..., Run]

_VOCAB = synth._WORDS


def sentence(rng: random.Random, n: int = 14) -> str:
    return " ".join(rng.choice(_VOCAB) for _ in range(n)).capitalize() + "."


def distinct_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [chat(f"Question {i}: {sentence(rng)}", f"{sentence(rng)} {sentence(rng)}") for i in range(n)]


def test_happy_path_outputs_and_summary(tmp_path: Path, run_validate: RunFn) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", distinct_records(300))
    run = run_validate(src, {"governance": {"license": "CC-BY-4.0", "owner": "team-a"}})
    assert run.code == contract.EXIT_OK and run.summary["passed"]
    r = run.summary["records"]
    assert r["total"] == 300 and r["kept"] == 300 and r["train"] + r["validation"] == 300
    assert 10 <= r["validation"] <= 60  # default validationRatio 0.1
    assert run.summary["version"].startswith("sha256-")
    files = {p.name for p in run.version_dir.iterdir()}
    assert files == {"train.jsonl", "validation.jsonl", "report.json", "report.html"}
    assert run.lines("train")[0].keys() == {"messages"}
    report = run.report()
    assert report["governance"]["license"] == "CC-BY-4.0"
    assert report["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert run.summary["artifact"]["reportUri"].endswith(f"{run.summary['version']}/report.json")
    html = (run.version_dir / "report.html").read_text()
    assert (
        "<svg" in html
        and "<script" not in html
        and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    for section in ("Quality gates", "Governance", "Personal and sensitive information", "Languages"):
        assert section in html


def test_version_is_the_content_digest_and_is_stable(tmp_path: Path, run_validate: RunFn) -> None:
    records = distinct_records(200, seed=3)
    a = run_validate(write_jsonl(tmp_path / "a.jsonl", records))
    # same content, different order and file: the split of each record is the same, files differ in order
    b = run_validate(write_jsonl(tmp_path / "b.jsonl", records))
    assert a.summary["version"] == b.summary["version"]
    train = (a.version_dir / "train.jsonl").read_bytes()
    val = (a.version_dir / "validation.jsonl").read_bytes()
    digests = (hashlib.sha256(train).hexdigest(), hashlib.sha256(val).hexdigest())
    inner = f"train.jsonl {digests[0]}\nvalidation.jsonl {digests[1]}\n"
    assert a.summary["version"] == "sha256-" + hashlib.sha256(inner.encode()).hexdigest()
    shuffled = list(records)
    random.Random(1).shuffle(shuffled)
    c = run_validate(write_jsonl(tmp_path / "c.jsonl", shuffled))

    def split_of(run: Run) -> dict[str, str]:
        return {json.dumps(x, sort_keys=True): s for s in ("train", "validation") for x in run.lines(s)}

    assert split_of(a) == split_of(c)  # order-independent assignment
    d = run_validate(write_jsonl(tmp_path / "d.jsonl", records), {"processing": {"split": {"seed": 7}}})
    assert split_of(d) != split_of(a)  # the seed matters
    assert d.summary["version"] != a.summary["version"]


def test_exact_duplicates_are_counted_exactly(tmp_path: Path, run_validate: RunFn) -> None:
    base = distinct_records(100, seed=4)
    dups = []
    for i in range(0, 100, 4):  # 25 copies that differ only in case and whitespace
        m = base[i]["messages"]
        dups.append(chat("  " + m[0]["content"].upper(), m[1]["content"].replace(" ", "   ")))
    run = run_validate(write_jsonl(tmp_path / "d.jsonl", base + dups + base[:10]))
    r = run.summary["records"]
    assert r["duplicates"] == 35 and r["kept"] == 100


def test_near_duplicates_are_counted_exactly(tmp_path: Path, run_validate: RunFn) -> None:
    from maestro.workers.data.dedup import NearDedup

    rng = random.Random(9)
    base = [
        chat(f"Q{i}: {sentence(rng, 12)}", " ".join(sentence(rng, 12) for _ in range(8))) for i in range(400)
    ]
    near = []
    for i in range(0, 400, 5):  # 80 copies with one word changed: 5-gram Jaccard ~0.9
        words = base[i]["messages"][1]["content"].split()
        words[rng.randrange(len(words))] = "zebra"
        near.append(chat(base[i]["messages"][0]["content"], " ".join(words)))

    def toks(r: dict) -> list[str]:
        return "\n".join(m["content"] for m in r["messages"]).lower().split()

    # the planted pairs sit well above the threshold and unrelated records far below it
    assert min(NearDedup.jaccard(toks(base[i * 5]), toks(n)) for i, n in enumerate(near)) > 0.85
    assert max(NearDedup.jaccard(toks(base[i]), toks(base[i + 1])) for i in range(0, 399, 7)) < 0.3
    spec = {"processing": {"dedup": {"near": {"enabled": True, "threshold": 0.8}}}}
    run = run_validate(write_jsonl(tmp_path / "n.jsonl", base + near), spec)
    r = run.summary["records"]
    assert (r["nearDuplicates"], r["duplicates"], r["kept"]) == (80, 0, 400)
    near_stats = run.report()["processing"]["nearDedup"]
    assert near_stats["candidatesVerified"] >= 80 and near_stats["indexBytes"] > 0
    off = run_validate(write_jsonl(tmp_path / "n2.jsonl", base + near))
    assert off.summary["records"]["nearDuplicates"] == 0 and off.summary["records"]["kept"] == 480


def test_malformed_input_reports_line_and_field(tmp_path: Path, run_validate: RunFn) -> None:
    lines = [json.dumps(r) for r in distinct_records(20)]
    lines.insert(4, '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]}')
    lines.insert(9, "{not json")
    lines.insert(12, json.dumps({"messages": [{"role": "wizard", "content": "x"}]}))
    run = run_validate(write_jsonl(tmp_path / "bad.jsonl", lines))
    assert run.code == contract.EXIT_SCHEMA_MISMATCH
    assert run.summary["records"]["invalid"] == 3
    assert run.summary["reason"].startswith("invalidRecords: 3 of 23 records are malformed; first: line 5: ")
    assert "messages[1].content: expected a string, got int" in run.summary["reason"]
    examples = run.report()["invalid"]["examples"]
    assert examples[1].startswith("line 10: $: invalid JSON")
    assert (
        examples[2]
        == "line 13: messages[0].role: must be one of assistant, developer, system, tool, user, got 'wizard'"
    )


def test_min_records_gate_at_threshold(tmp_path: Path, run_validate: RunFn) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", distinct_records(50))
    ok = run_validate(src, {"qualityGates": {"minRecords": 50}})
    assert ok.code == 0 and ok.gate("minRecords") == {
        "name": "minRecords",
        "passed": True,
        "value": 50,
        "threshold": 50,
    }
    bad = run_validate(src, {"qualityGates": {"minRecords": 51}})
    assert bad.code == contract.EXIT_GATES_FAILED and not bad.summary["passed"]
    assert bad.summary["reason"].startswith("minRecords: only 50 records kept")


def test_duplicate_and_pii_ratio_gates_at_threshold(tmp_path: Path, run_validate: RunFn) -> None:
    base = distinct_records(40)
    base[0]["messages"][1]["content"] += " Mail me at jo@example.com."
    base[1]["messages"][1]["content"] += " Card 4111 1111 1111 1111."
    src = write_jsonl(tmp_path / "d.jsonl", base + base[:10])  # 10 duplicates of 50 → 0.2; PII 2/40 → 0.05
    at = run_validate(src, {"qualityGates": {"maxDuplicateRatio": 0.2, "maxPIIRatio": 0.05}})
    assert at.code == 0, at.summary
    assert at.gate("maxDuplicateRatio")["value"] == 0.2 and at.gate("maxPIIRatio")["value"] == 0.05
    below = run_validate(src, {"qualityGates": {"maxDuplicateRatio": 0.19, "maxPIIRatio": 0.049}})
    assert below.code == contract.EXIT_GATES_FAILED
    assert not below.gate("maxDuplicateRatio")["passed"] and not below.gate("maxPIIRatio")["passed"]
    assert at.summary["records"]["piiByType"] == {"EMAIL": 1, "CREDIT_CARD": 1}
    text = (at.version_dir / "train.jsonl").read_text() + (at.version_dir / "validation.jsonl").read_text()
    assert "jo@example.com" not in text and "<EMAIL>" in text and "<CREDIT_CARD>" in text


@pytest.mark.parametrize("action", ["redact", "drop", "reject", "allow"])
def test_pii_actions(tmp_path: Path, run_validate: RunFn, action: str) -> None:
    recs = distinct_records(30)
    recs[3]["messages"][0]["content"] += " my ssn is 123-45-6780"
    run = run_validate(write_jsonl(tmp_path / "p.jsonl", recs), {"processing": {"pii": {"action": action}}})
    r = run.summary["records"]
    out = (run.version_dir / "train.jsonl").read_text() + (run.version_dir / "validation.jsonl").read_text()
    assert r["piiByType"] == {"US_SSN": 1}
    if action == "redact":
        assert run.code == 0 and r["piiRedacted"] == 1 and r["kept"] == 30 and "<US_SSN>" in out
    elif action == "drop":
        assert run.code == 0 and r["piiDropped"] == 1 and r["kept"] == 29 and r["filtered"] == 1
        # ... and the operator copies it, with the token estimate, into LLMDataset.status
        st = LLMDatasetStatus.model_validate(summary_status(run.summary))
        assert st.records is not None and st.records.pii_dropped == 1
        kept = [rec for i, rec in enumerate(recs) if i != 3]
        chars = sum(len("\n".join(m["content"] for m in rec["messages"])) for rec in kept)
        assert st.stats is not None and st.stats.estimated_tokens == chars // 4  # documented: chars / 4
    elif action == "reject":
        assert run.code == contract.EXIT_PII_REJECTED and not run.gate("piiReject")["passed"]
        assert run.summary["reason"].startswith("piiReject: ")
        assert "123-45-6780" not in out  # a rejected dataset still never stores the PII
    else:
        assert run.code == 0 and "123-45-6780" in out and r["piiRedacted"] == 0


def test_filters_and_language_gate(tmp_path: Path, run_validate: RunFn) -> None:
    recs = distinct_records(20)
    recs.append(
        chat(
            "Wie geht es dir heute?",
            "Mir geht es gut, danke. Ich habe heute nicht viel zu tun und bin zu Hause.",
        )
    )
    recs.append(chat("hi", "ok"))  # 5 chars
    recs.append(chat("Repeat", "\n".join(["the same line again"] * 60)))
    recs.append(chat("Say it", "you are a fucking bastard, shit"))
    src = write_jsonl(tmp_path / "f.jsonl", recs)
    run = run_validate(
        src,
        {
            "processing": {"filters": {"minChars": 10, "maxProfanity": 0.2}},
            "qualityGates": {"allowedLanguages": ["en"]},
        },
    )
    report = run.report()
    assert report["filteredByReason"] == {"too_short": 1, "duplicate_lines": 1, "profanity": 1}
    assert report["stats"]["languages"] == {"en": 20, "de": 1}
    assert run.code == contract.EXIT_GATES_FAILED and run.gate("allowedLanguages")["value"] == 1
    kept = run_validate(
        src,
        {
            "processing": {"filters": {"minChars": 10, "maxProfanity": 0.2, "languages": ["en"]}},
            "qualityGates": {"allowedLanguages": ["en"]},
        },
    )
    assert kept.code == 0 and kept.report()["filteredByReason"]["language"] == 1


def test_representation_gate(tmp_path: Path, run_validate: RunFn) -> None:
    answers = ["She said her answer was yes.", "He said his was no.", "He said his was no.", "He said no."]
    recs = [chat(f"Tell me about item {i}.", answers[i % 4]) for i in range(40)]
    groups = {"female": ["she", "her", "woman"], "male": ["he", "his", "man"]}
    src = write_jsonl(tmp_path / "r.jsonl", recs)
    ok = run_validate(src, {"qualityGates": {"representation": {"groups": groups, "maxImbalance": 3.0}}})
    assert ok.code == 0 and ok.gate("representation")["value"] == 3.0  # 30 male vs 10 female mentions
    bad = run_validate(src, {"qualityGates": {"representation": {"groups": groups, "maxImbalance": 2.9}}})
    assert bad.code == contract.EXIT_GATES_FAILED and not bad.gate("representation")["passed"]


def test_formats_csv_text_parquet_and_compression(tmp_path: Path, run_validate: RunFn) -> None:
    rng = random.Random(2)
    rows = [(f"Prompt {i} {sentence(rng)}", sentence(rng)) for i in range(30)]
    with (tmp_path / "pc.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "answer"])
        w.writerows(rows)
    spec = {"schema": {"type": "prompt-completion", "promptField": "question", "completionField": "answer"}}
    c = run_validate(tmp_path / "pc.csv", spec)
    assert c.code == 0 and c.summary["records"]["kept"] == 30
    assert set(c.lines("train")[0]) == {"prompt", "completion"}

    (tmp_path / "t.txt.gz").write_bytes(gzip.compress("\n".join(r[0] for r in rows).encode() + b"\n\n"))
    t = run_validate(tmp_path / "t.txt.gz")  # no schema.type: inferred as text
    assert t.code == 0 and t.summary["records"]["total"] == 30 and set(t.lines("train")[0]) == {"text"}

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"prompt": [r[0] for r in rows], "completion": [r[1] for r in rows]}),
        tmp_path / "pc.parquet",
    )
    p = run_validate(tmp_path / "pc.parquet", {"schema": {"type": "prompt-completion"}})
    assert p.code == 0 and p.summary["records"]["kept"] == 30
    assert (
        p.summary["version"]
        == run_validate(tmp_path / "pc.parquet", {"schema": {"type": "prompt-completion"}}).summary["version"]
    )

    (tmp_path / "d.jsonl.bz2").write_bytes(
        bz2.compress(b"\n".join(json.dumps(r).encode() for r in distinct_records(5)))
    )
    assert run_validate(tmp_path / "d.jsonl.bz2").summary["records"]["kept"] == 5


def test_text_source_with_a_chat_schema_says_what_to_change(tmp_path: Path, run_validate: RunFn) -> None:
    (tmp_path / "t.txt").write_text("just a line of text\n")
    run = run_validate(tmp_path / "t.txt", {"schema": {"type": "chat"}})
    assert run.code == contract.EXIT_SCHEMA_MISMATCH and "set it to text" in run.summary["reason"]


def test_report_says_when_ner_entities_were_not_checked(
    tmp_path: Path, run_validate: RunFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "spacy", None)  # no NER model on this worker
    src = write_jsonl(tmp_path / "d.jsonl", distinct_records(5))
    run = run_validate(src, {"processing": {"pii": {"entities": ["EMAIL", "PERSON"]}}})
    report = run.report()
    assert run.code == 0 and report["processing"]["pii"]["notChecked"] == ["PERSON"]
    assert any("PERSON" in w and "NOT checked" in w for w in report["warnings"])
    assert "NOT checked" in (run.version_dir / "report.html").read_text()


def test_checksum_mismatch_has_its_own_exit_code(tmp_path: Path, run_validate: RunFn) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", distinct_records(10))
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    assert run_validate(src, {"source": {"sha256": good}}).code == 0
    run = run_validate(src, {"source": {"sha256": "0" * 64}}, out=tmp_path / "mismatch")
    assert run.code == contract.EXIT_CHECKSUM_MISMATCH and run.summary["version"] is None
    assert "checksum mismatch" in run.summary["reason"] and good in run.summary["reason"]
    assert [p for p in (tmp_path / "mismatch").iterdir()] == []  # nothing half-written is left


def test_missing_source_and_bad_spec_are_bad_input(tmp_path: Path, run_validate: RunFn) -> None:
    missing = run_validate(tmp_path / "nope.jsonl")
    assert missing.code == contract.EXIT_BAD_INPUT and "source not found" in missing.summary["reason"]
    bad = run_validate(tmp_path / "nope.jsonl", {"processing": {"split": {"validationRatio": 2}}})
    assert bad.code == contract.EXIT_BAD_INPUT and "processing.split.validationRatio" in bad.summary["reason"]


def test_unwritable_output_is_io_error(tmp_path: Path, run_validate: RunFn) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", distinct_records(5))
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    run = run_validate(src, out=blocker / "out")
    assert run.code == contract.EXIT_IO_ERROR and "output directory" in run.summary["reason"]


def test_pvc_uri_resolves_under_pvc_root(
    tmp_path: Path, run_validate: RunFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pvcs" / "raw-data" / "sets").mkdir(parents=True)
    write_jsonl(tmp_path / "pvcs" / "raw-data" / "sets" / "d.jsonl", distinct_records(12))
    monkeypatch.setenv(contract.ENV_PVC_ROOT, str(tmp_path / "pvcs"))
    run = run_validate("pvc://raw-data/sets/d.jsonl")
    assert run.code == 0 and run.summary["records"]["kept"] == 12


def test_summary_fits_the_termination_message_with_many_languages(tmp_path: Path) -> None:
    summary = {
        "version": "sha256-" + "a" * 64,
        "passed": False,
        "exitCode": 3,
        "records": {
            "total": 1,
            "kept": 1,
            "duplicates": 0,
            "nearDuplicates": 0,
            "piiRedacted": 0,
            "piiByType": {e: 10**9 for e in contract.PII_ENTITIES},
            "filtered": 0,
            "invalid": 0,
            "train": 1,
            "validation": 0,
        },
        "stats": {
            "languages": {f"l{i:03d}": 10**6 + i for i in range(300)},
            "lengthChars": {"p50": 1, "p95": 2, "max": 3},
            "distinct1": 0.5,
        },
        "gates": [
            {
                "name": f"gate-{i}" * 5,
                "passed": i % 2 == 0,
                "value": 0.5,
                "threshold": 1.0,
                "message": "x" * 200,
            }
            for i in range(40)
        ],
        "artifact": {"uri": "pvc://c/v/", "reportUri": "pvc://c/v/report.json"},
        "reason": "r" * 5000,
    }
    text = contract.dump_summary(summary)  # type: ignore[arg-type]
    assert len(text.encode()) <= contract.MAX_SUMMARY_BYTES
    parsed = contract.parse_summary(text)
    assert parsed["version"] == summary["version"] and parsed["records"]["total"] == 1
    assert "l299" in parsed["stats"]["languages"]  # the biggest languages survive
    with pytest.raises(ValueError, match="lacks"):
        contract.parse_summary('{"version": null}')
    with pytest.raises(ValueError, match="not JSON"):
        contract.parse_summary("Traceback (most recent call last):")


def test_cli_entrypoint_and_env_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from maestro.cli import main

    src = write_jsonl(tmp_path / "d.jsonl", distinct_records(8))
    monkeypatch.setenv(contract.ENV_SPEC, json.dumps({"source": {"uri": f"file://{src}"}}))
    monkeypatch.setenv(contract.ENV_OUTPUT_DIR, str(tmp_path / "out"))
    monkeypatch.setenv(contract.ENV_TERMINATION_PATH, str(tmp_path / "term"))
    monkeypatch.setenv(contract.ENV_ARTIFACT_PREFIX, "pvc://datasets/my-ds/")
    assert main(["data", "validate"]) == 0
    summary = contract.parse_summary((tmp_path / "term").read_text())
    assert summary["artifact"]["uri"] == f"pvc://datasets/my-ds/{summary['version']}/"
    assert os.path.isdir(tmp_path / "out" / summary["version"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == (tmp_path / "term").read_text()
