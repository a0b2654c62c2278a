"""PII recognizers, validators and redaction (the engine the guard shares)."""

from __future__ import annotations

import itertools
import random

import pytest

from maestro.workers.data import pii, synth

pytestmark = pytest.mark.unit

SCANNER = pii.PIIScanner(pii.REGEX_ENTITIES)


@pytest.mark.parametrize("entity", sorted(pii.REGEX_ENTITIES))
def test_every_entity_is_found_in_every_generated_format(entity: str) -> None:
    rng = random.Random(entity)
    for _ in range(40):
        value = synth.make_pii(entity, rng)
        text = f"see this: {value} thanks"
        found = [f for f in SCANNER.scan(text) if f.entity == entity]
        assert found, f"{entity} not found in {text!r}"
        redacted, counts = SCANNER.redact(text)
        assert counts.get(entity) == 1
        assert pii.placeholder(entity) in redacted
        # the secret part is gone (URL credentials keep the host, by design)
        secret = value if entity != "URL_CREDENTIALS" else value.split("://", 1)[1].split("@", 1)[0]
        assert secret not in redacted


def test_labelled_corpus_precision_and_recall() -> None:
    corpus = synth.pii_corpus(n=600, seed=11)
    planted = {f.entity for rec in corpus for f in rec.spans}
    assert planted == set(pii.REGEX_ENTITIES)
    score = synth.score_pii(corpus, SCANNER)
    assert score.tp + score.fn >= 500
    assert score.recall >= 0.99, score.as_dict()
    assert score.precision >= 0.99, score.as_dict()


@pytest.mark.parametrize(
    "text",
    [
        "Version 2.3.1 was released on 2024-03-15 at 12:30:45.",
        "The ISBN is 978-3-16-148410-0 and the price is $1,299.99.",
        "MAC address 00:1A:2B:3C:4D:5E belongs to the printer.",
        "In C++ use std::vector<int> and std::map::find.",
        "The card 1234 5678 9012 3456 from the docs is a placeholder.",
        "Pi is about 3.14159265358979.",
        "The range 192.168.x.x is private; 999.1.1.1 is not an address.",
        "The password must be at least 12 characters long.",
        "Order 48293017 ships in 3-5 business days.",
        "clone ssh://git@github.com/org/repo.git (a user, no password)",
    ],
)
def test_lookalikes_are_not_pii(text: str) -> None:
    assert SCANNER.scan(text) == []


def test_validators() -> None:
    assert pii.luhn_ok("4111111111111111")
    assert not pii.luhn_ok("4111111111111112")
    assert pii.iban_ok("DE89370400440532013000")
    assert pii.iban_ok("GB82WEST12345698765432")
    assert not pii.iban_ok("DE89370400440532013001")  # checksum
    assert not pii.iban_ok("DE8937040044053201300")  # length for DE
    assert pii.ssn_ok("123", "45", "6780")
    for bad in (
        ("000", "12", "3456"),
        ("666", "12", "3456"),
        ("912", "12", "3456"),
        ("123", "00", "4567"),
        ("123", "45", "0000"),
        ("078", "05", "1120"),
    ):
        assert not pii.ssn_ok(*bad)


def test_card_with_bad_checksum_or_unknown_issuer_is_ignored() -> None:
    assert SCANNER.scan("card 4111 1111 1111 1112") == []
    assert SCANNER.scan("card 9111 1111 1111 1111") == []  # Luhn-valid, no issuer starts with 9
    assert [f.entity for f in SCANNER.scan("card 4111 1111 1111 1111")] == ["CREDIT_CARD"]


def test_overlaps_resolve_by_priority_and_spans_are_sorted() -> None:
    text = "db postgres://admin:hunter22@db.example.com/x and mail bob@example.com, ip 10.0.0.1"
    found = SCANNER.scan(text)
    assert [f.entity for f in found] == ["URL_CREDENTIALS", "EMAIL", "IPV4"]
    assert text[found[0].start : found[0].end] == "admin:hunter22"
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))


def test_private_key_block_is_one_finding() -> None:
    key = synth.make_pii("PRIVATE_KEY", random.Random(3))
    found = SCANNER.scan(f"key:\n{key}\nend")
    assert [f.entity for f in found] == ["PRIVATE_KEY"]


def test_assigned_secret_redacts_only_the_value() -> None:
    text = 'config: api_key = "Zx81kQ0pLm3Nv7Rt" and password: s3cr3tPassw0rd9'
    redacted, counts = SCANNER.redact(text)
    assert counts == {"API_KEY": 2}
    assert redacted == 'config: api_key = "<API_KEY>" and password: <API_KEY>'


def test_redaction_is_idempotent() -> None:
    for rec in synth.pii_corpus(n=120, seed=5):
        once, _ = SCANNER.redact(rec.text)
        twice, counts = SCANNER.redact(once)
        assert twice == once and counts == {}


def test_entity_subset_and_errors() -> None:
    only_email = pii.PIIScanner(["EMAIL"])
    assert [f.entity for f in only_email.scan("a@example.com 10.0.0.1")] == ["EMAIL"]
    with pytest.raises(ValueError, match="unknown PII entities"):
        pii.PIIScanner(["EMAIL", "SOCIAL"])
    ner_less = pii.PIIScanner(["EMAIL", "PERSON"])
    assert ner_less.unsupported == {"PERSON"}


def test_ner_hook_adds_person_findings() -> None:
    def fake_ner(text: str) -> list[pii.Finding]:
        i = text.find("Alice")
        return [pii.Finding("PERSON", i, i + 5)] if i >= 0 else []

    scanner = pii.PIIScanner(["EMAIL", "PERSON"], ner=fake_ner)
    assert scanner.unsupported == frozenset()
    assert scanner.redact("Alice wrote to a@example.com")[0] == "<PERSON> wrote to <EMAIL>"


def test_module_level_api() -> None:
    assert pii.scan("mail a@example.com") == [pii.Finding("EMAIL", 5, 18)]
    assert pii.redact("call +1 415-555-0132 now") == ("call <PHONE> now", {"PHONE": 1})
    assert tuple(e for e in pii.ENTITIES) == pii.ENTITIES  # order is the shared API enum order
    assert set(pii.ENTITIES) == {e.value for e in __import__("maestro.api", fromlist=["PIIEntity"]).PIIEntity}
