"""Deterministic synthetic data: a labelled PII corpus and realistic chat records.

The tests, the benchmark and the quickstart all need data that nobody has to download; a seeded
`random.Random` makes every run (and every machine) produce the same bytes.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from maestro.text import pii

_FIRST = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "niaj",
    "olivia",
    "peggy",
    "rupert",
    "sybil",
    "trent",
    "victor",
    "walter",
    "yasmin",
]
_DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "uni-example.edu", "example.co.uk"]


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        if pii.luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always satisfies Luhn")


def _rand(rng: random.Random, n: int, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _iban(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def make_pii(entity: str, rng: random.Random) -> str:
    """One valid, realistically formatted value of `entity`."""
    if entity == "EMAIL":
        sep = rng.choice([".", "_", "", "+"])
        return f"{rng.choice(_FIRST)}{sep}{rng.choice(_FIRST)}{rng.randint(1, 99)}@{rng.choice(_DOMAINS)}"
    if entity == "PHONE":
        a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
        return rng.choice(
            [
                f"+1 {a}-{b}-{c:04d}",
                f"({a}) {b}-{c:04d}",
                f"{a}.{b}.{c:04d}",
                f"+44 20 {rng.randint(7000, 7999)} {c:04d}",
                f"+49 30 {rng.randint(1000000, 99999999)}",
                "+33 1 " + " ".join(str(rng.randint(10, 99)) for _ in range(4)),
                f"1-800-{b}-{c:04d}",
            ]
        )
    if entity == "CREDIT_CARD":
        kind = rng.choice(["visa", "mc", "amex", "disc"])
        if kind == "amex":
            d = _luhn_complete(rng.choice(["34", "37"]), 15, rng)
            return rng.choice([d, f"{d[:4]} {d[4:10]} {d[10:]}", f"{d[:4]}-{d[4:10]}-{d[10:]}"])
        prefix = {"visa": "4", "mc": str(rng.randint(51, 55)), "disc": "6011"}[kind]
        d = _luhn_complete(prefix, 16, rng)
        sep = rng.choice([" ", "-", ""])
        return sep.join(d[i : i + 4] for i in range(0, 16, 4))
    if entity == "IBAN":
        country = rng.choice(["DE", "GB", "FR", "NL", "ES"])
        shape = {"DE": (0, 18), "GB": (4, 14), "FR": (0, 23), "NL": (4, 10), "ES": (0, 20)}[country]
        bban = _rand(rng, shape[0], string.ascii_uppercase) + _rand(rng, shape[1], string.digits)
        iban = _iban(country, bban)
        if rng.random() < 0.5:
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban
    if entity == "US_SSN":
        area = rng.choice([rng.randint(1, 665), rng.randint(667, 899)])
        sep = rng.choice(["-", "-", " "])
        return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"
    if entity == "IPV4":
        return f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if entity == "IPV6":
        addr = ipaddress.IPv6Address(
            rng.getrandbits(128) if rng.random() < 0.5 else (0x20010DB8 << 96) | rng.getrandbits(16)
        )
        return addr.compressed if rng.random() < 0.7 else addr.exploded
    if entity == "API_KEY":
        alnum = string.ascii_letters + string.digits

        def r(n: int, cs: str = alnum) -> str:
            return _rand(rng, n, cs)

        return rng.choice(
            [
                "AKIA" + r(16, string.ascii_uppercase + string.digits),
                "ghp_" + r(36),
                "sk-proj-" + r(48),
                "xoxb-" + r(12, string.digits) + "-" + r(24),
                "AIza" + r(35),
                "hf_" + r(34),
                "sk_live_" + r(24),
                "eyJ" + r(20) + ".eyJ" + r(30) + "." + r(43),
            ]
        )
    if entity == "PRIVATE_KEY":
        body = base64.b64encode(rng.randbytes(96)).decode()
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
        return f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----"
    if entity == "URL_CREDENTIALS":
        scheme = rng.choice(["postgres", "https", "mysql", "redis", "amqp"])
        pw = "".join(rng.choice(string.ascii_letters + string.digits + "!$*") for _ in range(12))
        return f"{scheme}://{rng.choice(_FIRST)}:{pw}@db{rng.randint(1, 9)}.internal.example.com"
    raise ValueError(f"no generator for {entity}")


_TEMPLATES: dict[str, list[str]] = {
    "EMAIL": ["Please email me at {} with the report.", "Contact: {}", "cc {} on the thread"],
    "PHONE": ["Call me on {} after 5pm.", "Phone: {}", "my cell is {}, text first"],
    "CREDIT_CARD": ["Charge it to card {} please.", "CC number {} exp 09/27", "card: {}"],
    "IBAN": ["Wire the refund to IBAN {} today.", "Account {} (BIC DEUTDEFF)", "iban: {}"],
    "US_SSN": ["My SSN is {}.", "social security number {} on file", "SSN: {}"],
    "IPV4": ["The server at {} is down.", "ssh into {} and restart", "client ip {} was blocked"],
    "IPV6": ["Ping {} to check.", "listening on [{}]:443", "the host resolves to {}"],
    "API_KEY": ["Use the key {} for the API.", "export TOKEN={}", "my api key is {}, keep it safe"],
    "PRIVATE_KEY": ["Here is the deploy key:\n{}\nDo not share.", "{}"],
    "URL_CREDENTIALS": ["Connect with {}/app", "DATABASE_URL={}:5432/prod", "clone from {}/repo.git"],
}

# Text that looks like PII and is not: the precision half of the evaluation.
_NEGATIVES = [
    "Version 2.3.1 was released on 2024-03-15 at 12:30:45.",
    "The ISBN is 978-3-16-148410-0 and the price is $1,299.99.",
    "Order 48293017 ships in 3-5 business days; ref 2023-10-05T14:48:00Z.",
    "Set the ratio to 16:9 and the port to localhost:8080.",
    "In C++ use std::vector<int> and std::map::find.",
    "MAC address 00:1A:2B:3C:4D:5E belongs to the printer.",
    "Coordinates 37.7749, -122.4194 point to San Francisco.",
    "Pi is about 3.14159265358979 and e is 2.718281828.",
    "The card 1234 5678 9012 3456 from the docs is a placeholder.",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "Request id 8f3a9c21-7b4d-4e2a-9c1f-3d5e6a7b8c9d failed after 3 retries.",
    "Build 10.0.19041.1 fixed the token count: 1024 limit.",
    "The password must be at least 12 characters long.",
    "Meet at 10:30 in room 4.12; bring 2 copies of form 1040.",
    "Our revenue grew 12.5% to 4,500,000 in Q3 2024.",
    "Tracking number 1Z999AA10123456784 is in transit.",
    "Use the API key from your dashboard, not a hard-coded one.",
    "Reach support via the contact form at example.com/help.",
    "The range 192.168.x.x is private; 999.1.1.1 is not an address.",
    "Send it to alice at example dot com (spelled out on purpose).",
    "Temperatures ranged from -5.5 to 32.0 degrees across 14-21 days.",
    "Invoice INV-2024-000123 totals 1,250.00 EUR.",
    "Chapter 3, verses 16-18, pages 200-215.",
    "The model has 7B parameters and a 4096-token context.",
]


@dataclass
class LabelledRecord:
    text: str
    spans: list[pii.Finding] = field(default_factory=list)


def pii_corpus(n: int = 600, seed: int = 7) -> list[LabelledRecord]:
    """`n` records: every regex entity planted in several formats, plus hard negatives, with gold spans."""
    rng = random.Random(seed)
    entities = sorted(pii.REGEX_ENTITIES)
    out: list[LabelledRecord] = []
    for i in range(n):
        parts: list[str] = []
        spans: list[pii.Finding] = []
        pos = 0
        # every record gets 0..2 planted values (cycling through the entities) and often a negative
        k = i % 3
        for j in range(k):
            entity = entities[(i + j * 5) % len(entities)]
            value = make_pii(entity, rng)
            template = rng.choice(_TEMPLATES[entity])
            before, after = template.split("{}")
            chunk = before + value + after + " "
            start, end = pos + len(before), pos + len(before) + len(value)
            if entity == "URL_CREDENTIALS":  # only the userinfo is the secret; the host stays
                start, end = start + value.index("://") + 3, start + value.index("@")
            spans.append(pii.Finding(entity, start, end))
            parts.append(chunk)
            pos += len(chunk)
        if k == 0 or rng.random() < 0.6:
            neg = rng.choice(_NEGATIVES) + " "
            parts.append(neg)
            pos += len(neg)
        out.append(LabelledRecord("".join(parts).rstrip(" "), spans))
    return out


@dataclass
class PIIScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    by_entity: dict[str, list[int]] = field(default_factory=dict)  # entity -> [tp, fp, fn]

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def as_dict(self) -> dict[str, object]:
        per = {}
        for e, (tp, fp, fn) in sorted(self.by_entity.items()):
            per[e] = {
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
                "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
            }
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "by_entity": per,
        }


def score_pii(corpus: list[LabelledRecord], scanner: pii.PIIScanner) -> PIIScore:
    """Entity-level scoring: a finding counts if it has the gold type and covers the gold span exactly."""
    score = PIIScore()
    for rec in corpus:
        got = set(scanner.scan(rec.text))
        gold = set(rec.spans)
        for f in got | gold:
            row = score.by_entity.setdefault(f.entity, [0, 0, 0])
            if f in got and f in gold:
                score.tp += 1
                row[0] += 1
            elif f in got:
                score.fp += 1
                row[1] += 1
            else:
                score.fn += 1
                row[2] += 1
    return score


# --- chat records for benchmarks and the quickstart ------------------------------------------------

_WORDS_TEXT = (
    "the of and to in is that for it as with was on be by this are from or have an they which one you "
    "model data training system user request response answer question quality value result process "
    "network server cluster deploy config policy language token sequence batch memory latency output "
    "input example reason method approach problem solution function variable method class object error "
    "would could should about there their what when where while because between through during before"
)
_WORDS = _WORDS_TEXT.split()


def chat_records(
    n: int, seed: int = 1, dup_rate: float = 0.05, pii_rate: float = 0.05, near_rate: float = 0.0
) -> Iterator[dict[str, Any]]:
    """Chat records of ~60–120 words (30% with numbers) with planted exact duplicates, near duplicates
    (a recent record with one answer word changed) and PII at the given rates."""
    rng = random.Random(seed)
    recent: list[dict[str, Any]] = []
    entities = sorted(pii.REGEX_ENTITIES)
    for i in range(n):
        if recent and rng.random() < dup_rate:
            yield rng.choice(recent)
            continue
        if recent and near_rate and rng.random() < near_rate:
            src = rng.choice(recent)["messages"]
            words = src[1]["content"].split()
            words[rng.randrange(len(words))] = "changed"
            yield {"messages": [src[0], {"role": "assistant", "content": " ".join(words)}]}
            continue
        q = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "?"
        a = (
            ". ".join(
                " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 16))).capitalize() for _ in range(5)
            )
            + "."
        )
        if rng.random() < 0.3:  # real chat data is full of numbers: exercise the numeric PII path
            steps, year, share = rng.randint(2, 500), rng.randint(1990, 2025), rng.random() * 100
            a += f" It took {steps} steps in {year}, about {share:.1f}%."
        if rng.random() < pii_rate:
            a += " " + make_pii(entities[i % len(entities)], rng)
        rec = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        if len(recent) < 1000:
            recent.append(rec)
        else:
            recent[rng.randrange(1000)] = rec
        yield rec


def write_jsonl(path: str, records: Iterator[dict[str, Any]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n
