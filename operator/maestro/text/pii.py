"""PII and secret detection with validators, and typed redaction.

Stdlib only, plus the shared entity list from the API.

Shared by the dataset worker (every record) and the guard sidecar (every request), so a dataset and an
endpoint governed by the same policy agree on what an e-mail address is. It is built for the common
case of text that holds no PII at all: each recognizer sits behind a prefilter that costs a substring
test (`'@' in text`, a digit search), and the regexes run only when it passes. Candidates then go
through validators (Luhn, IBAN mod-97, SSN area rules, `ipaddress` parsing), which is what keeps
precision up on numbers that merely look like PII.

PERSON and LOCATION need a NER model; pass one as `ner` (see `maestro.text.ner`).
Without it those entities are not detected, and `PIIScanner.unsupported` says so.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

from maestro.api.common import PIIEntity

ENTITIES: tuple[str, ...] = tuple(e.value for e in PIIEntity)  # the API enum, in its order
REGEX_ENTITIES: frozenset[str] = frozenset(ENTITIES) - {"PERSON", "LOCATION"}
NER_ENTITIES: frozenset[str] = frozenset({"PERSON", "LOCATION"})

# When spans overlap, the earlier entity here wins (a key block beats the base64 "API key" inside it,
# URL credentials beat the `pass@host` that looks like an email, a card beats a phone number).
PRIORITY: dict[str, int] = {
    e: i
    for i, e in enumerate(
        (
            "PRIVATE_KEY",
            "URL_CREDENTIALS",
            "API_KEY",
            "EMAIL",
            "IBAN",
            "CREDIT_CARD",
            "US_SSN",
            "IPV6",
            "IPV4",
            "PHONE",
            "PERSON",
            "LOCATION",
        )
    )
}


class Finding(NamedTuple):
    entity: str
    start: int
    end: int


NerFn = Callable[[str], Iterable[Finding]]


def placeholder(entity: str) -> str:
    """The typed placeholder a redacted span becomes; it contains nothing the scanner matches."""
    return f"<{entity}>"


# --- validators ------------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_brand_ok(d: str) -> bool:
    """Known issuer prefixes and lengths: random 16-digit numbers pass Luhn one time in ten."""
    n = len(d)
    if d[0] == "4":
        return n in (13, 16, 19)  # Visa
    p2 = int(d[:2])
    if 51 <= p2 <= 55 or 2221 <= int(d[:4]) <= 2720:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # Amex
    if d.startswith("6011") or p2 == 65 or 644 <= int(d[:3]) <= 649:
        return n in (16, 19)  # Discover
    if 3528 <= int(d[:4]) <= 3589:
        return 16 <= n <= 19  # JCB
    if p2 in (36, 38, 39) or 300 <= int(d[:3]) <= 305:
        return 14 <= n <= 19  # Diners
    if p2 == 62:
        return 16 <= n <= 19  # UnionPay
    return False


# ISO 13616 registry lengths (the countries that issue IBANs).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "LY": 25,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "SA": 24,
    "SC": 31,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
}


def iban_ok(compact: str) -> bool:
    """`compact` is the IBAN without spaces; checks the country length and the mod-97 checksum."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """SSA structure: no 000/666/9xx area, no 00 group, no 0000 serial.

    Unlike Presidio, the famous sample numbers (078-05-1120, …) still count: in training data they
    appear exactly where someone typed "my SSN is …", which is what a cleaner must remove.
    """
    return not (area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000")


def _entropy(s: str) -> float:
    counts: dict[str, int] = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


# --- patterns --------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+/-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"  # not scheme://user@host
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.\w)"
)
_URL_CRED = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://([^\s:/?#@<>\"']*)(?::([^\s/?#@<>\"']*))?@[\w.-]")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----"
    r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,-]*)",
    re.DOTALL,
)
_KNOWN_KEYS = re.compile(
    r"(?<![\w-])(?:"
    r"(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{40,255}"
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic style
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe secret / restricted
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|npm_[A-Za-z0-9]{36}"
    r"|SG\.[\w-]{22}\.[\w-]{43}"  # SendGrid
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r")(?![\w-])"
)
# `api_key = "…"`, `token: …`, `Authorization: Bearer …`: only the value is the secret. Runs on the
# lowercased text (no IGNORECASE: it defeats the regex engine's literal-prefix skip).
_ASSIGNED_SECRET = re.compile(
    r"(?:(?<![a-z0-9])(?:api[_-]?key|apikey|secret(?:[_-]?key)?|client[_-]?secret|access[_-]?key|"
    r"(?:access|auth|api|refresh)[_-]?token|token|password|passwd|pwd)(?![a-z0-9])[\"']?\s*[:=]\s*[\"']?"
    r"|(?<![a-z0-9])bearer\s+)"
    r"([a-z0-9_\-./+=~]{8,200})"
)
_ASSIGNED_SECRET_I = re.compile(_ASSIGNED_SECRET.pattern, re.IGNORECASE)
_SECRET_WORDS = ("key", "secret", "token", "passw", "pwd", "bearer")
# Numeric patterns start with the character class they consume and check the preceding character
# with a lookbehind *after* it: a leading lookbehind stops the regex engine from skipping ahead to
# candidate characters, which made these passes 3-5x slower.
_IPV4 = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![\w]|\.[0-9])")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}(?![\w:])")
_IPV6_HINT = re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f]{0,4}:")
_SSN = re.compile(r"([0-9]{3})(?<![\w-][0-9]{3})([- ])([0-9]{2})\2([0-9]{4})(?![\w-])")
_CARD = re.compile(r"[0-9](?<![\w-][0-9])(?:[ -]?[0-9]){12,18}(?![\w-])")
_PHONE = re.compile(r"[+(0-9](?<![\w+.-][+(0-9])[0-9 ().+-]{5,19}[0-9](?![\w]|-[0-9]|\.[0-9])")
_PHONE_SHAPE = re.compile(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\) ?|\d{1,5}[ .-]?)(?:\d{1,5}[ .-]?)*\d")
_DATE_LIKE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_IBAN = re.compile(
    r"[A-Z]{2}(?<![A-Za-z0-9][A-Z]{2})[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
)
# 7+ characters of digits and number punctuation: every numeric entity holds such a run (an IPv4
# address too); ASCII classes, since \d is Unicode-aware and twice as slow to scan
_NUMERIC_HINT = re.compile(r"[0-9(+][0-9 .()/+-]{6,}")
_PHONE_SPLIT = re.compile(r"[ ().+-]+")


def _find_email(text: str, out: list[Finding]) -> None:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        local = m.group().split("@", 1)[0]
        if ".." in local or local.endswith("."):
            continue
        out.append(Finding("EMAIL", m.start(), m.end()))


def _find_url_credentials(text: str, out: list[Finding]) -> None:
    if "://" not in text or "@" not in text:
        return
    for m in _URL_CRED.finditer(text):
        user, password = m.group(1), m.group(2)
        if password:  # user:password@host
            out.append(Finding("URL_CREDENTIALS", m.start(1), m.end(2)))
        elif len(user) >= 20 and _entropy(user) >= 3.5:  # https://<token>@host; a bare user is no secret
            out.append(Finding("URL_CREDENTIALS", m.start(1), m.end(1)))


def _find_private_key(text: str, out: list[Finding]) -> None:
    if "-----BEGIN" not in text:
        return
    for m in _PRIVATE_KEY.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1].isspace():
            end -= 1
        out.append(Finding("PRIVATE_KEY", m.start(), end))


def _find_api_key(text: str, out: list[Finding]) -> None:
    if (
        "_" in text  # ghp_ hf_ npm_ sk_live_ github_pat_
        or ("-" in text and ("sk-" in text or "xox" in text or "glpat-" in text))
        or "AKIA" in text
        or "ASIA" in text
        or "AIza" in text
        or "eyJ" in text
        or "SG." in text
    ):
        for m in _KNOWN_KEYS.finditer(text):
            out.append(Finding("API_KEY", m.start(), m.end()))
    if ":" not in text and "=" not in text and "earer" not in text and "EARER" not in text:
        return
    low = text.lower()
    # every _ASSIGNED_SECRET match contains one of these words: a cheap exact prefilter for the regex
    if not any(w in low for w in _SECRET_WORDS):
        return
    # lower() keeps offsets for all but a few characters (e.g. "İ"); fall back to IGNORECASE then
    matches = _ASSIGNED_SECRET.finditer(low) if len(low) == len(text) else _ASSIGNED_SECRET_I.finditer(text)
    for m in matches:
        value = text[m.start(1) : m.end(1)].rstrip(".,;")
        # a value must look like a secret, not a word: letters and digits, some entropy
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value) and _entropy(value) >= 2.8:
            out.append(Finding("API_KEY", m.start(1), m.start(1) + len(value)))


def _find_ipv6(text: str, out: list[Finding]) -> None:
    if "::" not in text and text.count(":") < 7:
        return
    if _IPV6_HINT.search(text) is None and "::" not in text:
        return
    for m in _IPV6.finditer(text):
        cand = m.group()
        groups = [g for g in cand.split(":") if g]
        if len(groups) < 2 or ("::" not in cand and cand.count(":") != 7):
            continue
        if sum(c in "0123456789abcdefABCDEF" for c in cand) < 3:
            continue
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        out.append(Finding("IPV6", m.start(), m.end()))


def _find_numeric(text: str, out: list[Finding], want: frozenset[str]) -> None:
    """IPv4, IBAN, card, SSN and phone: all hold a run of digits, so one search gates them all."""
    # one search rules out years, prices, versions and counts before five finditer passes
    if _NUMERIC_HINT.search(text) is None:
        return
    if "IPV4" in want and "." in text:
        for m in _IPV4.finditer(text):
            if all(len(o) == 1 or (o[0] != "0" and int(o) <= 255) for o in m.group().split(".")):
                out.append(Finding("IPV4", m.start(), m.end()))
    if "IBAN" in want:
        for m in _IBAN.finditer(text):
            span = m.group()
            compact = span.replace(" ", "")
            n = IBAN_LENGTHS.get(compact[:2])
            if n is None or len(compact) < n or not iban_ok(compact[:n]):
                continue
            # the match may run into a following code word; end at the n-th IBAN character
            seen, end = 0, m.start()
            for i, ch in enumerate(span):
                if ch != " ":
                    seen += 1
                    if seen == n:
                        end = m.start() + i + 1
                        break
            out.append(Finding("IBAN", m.start(), end))
    if "CREDIT_CARD" in want:
        for m in _CARD.finditer(text):
            span = m.group()
            seps = {c for c in span if not c.isdigit()}
            if len(seps) > 1:
                continue
            digits = span.replace(" ", "").replace("-", "")
            if 13 <= len(digits) <= 19 and _card_brand_ok(digits) and luhn_ok(digits):
                out.append(Finding("CREDIT_CARD", m.start(), m.end()))
    if "US_SSN" in want:
        for m in _SSN.finditer(text):
            if ssn_ok(m.group(1), m.group(3), m.group(4)):
                out.append(Finding("US_SSN", m.start(), m.end()))
    if "PHONE" in want:
        for m in _PHONE.finditer(text):
            cand = m.group().rstrip(" .-(")
            if _phone_ok(cand):
                out.append(Finding("PHONE", m.start(), m.start() + len(cand)))


def _phone_ok(cand: str) -> bool:
    ndigits = sum(c.isdigit() for c in cand)
    plus = cand.startswith("+")
    if not (10 <= ndigits <= 15 or (plus and 8 <= ndigits <= 15)):
        return False
    if not plus and cand.isdigit():
        return False  # a bare digit run is an id or an amount far more often than a phone
    if cand.count("(") != cand.count(")") or "  " in cand or ".." in cand or "--" in cand:
        return False
    if _DATE_LIKE.fullmatch(cand) or (cand.count(".") == 3 and cand.replace(".", "").isdigit()):
        return False
    if _PHONE_SHAPE.fullmatch(cand) is None:
        return False
    groups = [g for g in _PHONE_SPLIT.split(cand) if g]
    if plus:
        return True
    # national formats have 3+ groups ("415 555 0132") or a parenthesized area code; a two-group
    # number is a decimal, and a one-digit group past the first is an ISBN or a part number
    if len(groups) < 3 and not cand.startswith("("):
        return False
    return len(groups) <= 6 and all(len(g) > 1 for g in groups[1:])


# --- scanner ---------------------------------------------------------------------------------------


class PIIScanner:
    """Scan and redact a fixed set of entities. Build once, reuse for every record or request."""

    def __init__(self, entities: Iterable[str] | None = None, ner: NerFn | None = None) -> None:
        want = frozenset(ENTITIES if entities is None else entities)
        unknown = want - frozenset(ENTITIES)
        if unknown:
            raise ValueError(f"unknown PII entities {sorted(unknown)}; supported: {', '.join(ENTITIES)}")
        self.entities = want
        self.ner = ner if want & NER_ENTITIES else None
        #: Requested entities this scanner cannot detect (NER ones without a model).
        self.unsupported = frozenset() if ner is not None else want & NER_ENTITIES
        self._numeric = want & {"IPV4", "IBAN", "CREDIT_CARD", "US_SSN", "PHONE"}
        self._passes: list[Callable[[str, list[Finding]], None]] = []
        for entity, fn in (
            ("PRIVATE_KEY", _find_private_key),
            ("URL_CREDENTIALS", _find_url_credentials),
            ("API_KEY", _find_api_key),
            ("EMAIL", _find_email),
            ("IPV6", _find_ipv6),
        ):
            if entity in want:
                self._passes.append(fn)

    def scan(self, text: str) -> list[Finding]:
        """Non-overlapping findings sorted by start (higher-priority entity wins an overlap)."""
        found: list[Finding] = []
        for fn in self._passes:
            fn(text, found)
        if self._numeric:
            _find_numeric(text, found, self._numeric)
        if self.ner is not None:
            found.extend(f for f in self.ner(text) if f.entity in self.entities)
        if len(found) < 2:
            return found
        return _resolve(found)

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """Replace every finding with its typed placeholder; return the text and counts by entity."""
        found = self.scan(text)
        if not found:
            return text, {}
        return apply_redactions(text, found)


def _resolve(found: list[Finding]) -> list[Finding]:
    found.sort(key=lambda f: (PRIORITY[f.entity], f.start - f.end))
    kept: list[Finding] = []
    for f in found:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    kept.sort(key=lambda f: f.start)
    return kept


def apply_redactions(text: str, findings: list[Finding]) -> tuple[str, dict[str, int]]:
    """Splice placeholders in; `findings` must be non-overlapping and sorted by start."""
    parts: list[str] = []
    counts: dict[str, int] = {}
    pos = 0
    for f in findings:
        parts.append(text[pos : f.start])
        parts.append(placeholder(f.entity))
        counts[f.entity] = counts.get(f.entity, 0) + 1
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts), counts


_DEFAULT: PIIScanner | None = None


def _default() -> PIIScanner:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = PIIScanner(REGEX_ENTITIES)
    return _DEFAULT


def scan(text: str, entities: Iterable[str] | None = None) -> list[Finding]:
    """Findings for `entities` (default: every regex-detectable entity)."""
    scanner = _default() if entities is None else PIIScanner(entities)
    return scanner.scan(text)


def redact(text: str, entities: Iterable[str] | None = None) -> tuple[str, dict[str, int]]:
    """`(redacted text, {entity: count})`; build a PIIScanner yourself in a loop to skip setup."""
    scanner = _default() if entities is None else PIIScanner(entities)
    return scanner.redact(text)
