"""Prompt-injection and jailbreak detection: offline, pure Python, regex only.

Why rules and not a classifier: the guard checks every request inline, on the sidecar image, with no
model weights and no network, and a policy needs an answer it can explain ("rule
override.ignore_previous matched these characters"). Known attacks are phrased in a small number of
ways; what makes them hard to catch is obfuscation, so most of this module undoes obfuscation and
then runs one table of phrase rules (`injection_rules`) over every view of the text.

Families (`FAMILIES`, stable names):
- `instruction_override`: the text tells the model to drop what it was told ("ignore all previous
  instructions", "your previous instructions are void", "new instructions: ...").
- `roleplay_jailbreak`: a persona without rules (DAN / "do anything now", developer mode, "pretend you
  are an AI without restrictions", "you are no longer bound by ...", jailbroken, evil/unfiltered AI).
- `prompt_extraction`: the text asks for the system prompt or what came before the conversation
  ("reveal your system prompt", "repeat the words above starting with ...").
- `embedded_injection`: instructions planted in content the model reads on someone's behalf: hidden
  HTML (comments, `display:none`, white or zero-size text) holding instructions, forged role markers
  (`<|im_start|>system`, `[system]`, `### Instruction:`) followed by instructions, text addressed to
  "the AI reading this", markdown images whose URL carries a placeholder for data to leak.
- `encoded`: instructions hidden behind an encoding (base64, hex, URL or HTML escapes, ROT13, reversed
  text, Unicode tag characters) or the request to use one to get past a filter. A rule that matches
  inside decoded text reports family `encoded`, the inner rule's id (say `override.ignore_previous`)
  and the decoding as `layer`: a policy can treat "hid an attack behind an encoding" apart from the
  attack itself, and the rule still says what was hidden. Obfuscation that is not an encoding
  (zero-width characters, homoglyphs, leetspeak, spaced-out letters) keeps the inner family: the
  `normalized` layer only undoes noise.

Layers (where a finding was seen): `plain` (the text lowercased, accents stripped, typographic quotes
and dashes, fullwidth forms and odd spaces made ASCII, emphasis markers and underscores read as spaces:
every change one character for one, so spans are exact); `normalized` (what NFKC turns into letters,
invisible and format characters removed, Latin-lookalike Cyrillic/Greek/small capitals folded to
ASCII, emphasis inside words dropped, spaced-out letters joined, leetspeak undone in words the rules
use, and "l" read as "i" so `1`, `l`, `|` and `!` agree; spans mapped back best effort); `base64`,
`hex`, `url`, `html`, `unicode_tags`, `rot13`, `reversed` (decoded views; the span is the encoded
blob's, or for ROT13 and reversed text the exact matching characters).

Scoring: each rule tries its variants strongest first (see `injection_rules`). Weak cues (below 0.5,
e.g. "stay in character", "evil AI", "from now on you will") never fire alone; two different weak or
medium cues of one family within `COMBINE_WINDOW` characters combine by noisy-or into a
`<family>.combined` finding. Benign uses of the vocabulary ("ignore whitespace in git diff", "write a
system prompt for my bot", "pretend we are pirates") do not match any variant: rules need a verb, an
instruction-like object and a scope (previous/your/all) together. Known limits: an attack phrase quoted
to talk about it ("why is 'ignore all previous instructions' dangerous?") is flagged like the attack,
and so is a chat-role token with a role (`<|im_start|>system`) pasted into a message.

Cost: one pass of a trie regex over the text finds the rules' anchors (rare stems each rule needs);
only the rules whose anchors occur run, each tried with `match` at its anchors, so a long benign
document costs about one scan. The normalized layer works on overlapping chunks and scans only the
chunks normalization changed. Other views are built only when a cheap probe (a substring test, a
byte-table translation, a regex with a literal first character) says the text has some. Decoding is
bounded (`MAX_ATTEMPTS` candidates, `MAX_DECODED` blobs, `MAX_BLOB` characters each, `MAX_DEPTH`).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import codecs
import html
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from maestro.text.injection_rules import (
    EMBEDDED,
    ENCODED,
    EXTRACTION,
    OVERRIDE,
    PHRASE_RULES,
    ROLEPLAY,
    SQUASHED_RULES,
    Rule,
)

FAMILIES: tuple[str, ...] = (OVERRIDE, ROLEPLAY, EXTRACTION, EMBEDDED, ENCODED)
LAYERS: tuple[str, ...] = (
    "plain",
    "normalized",
    "base64",
    "hex",
    "url",
    "html",
    "unicode_tags",
    "rot13",
    "reversed",
)
#: Prefix of the rule ids of each family (`<prefix>.combined` for combined weak cues).
RULE_PREFIX: dict[str, str] = {
    OVERRIDE: "override",
    ROLEPLAY: "roleplay",
    EXTRACTION: "extraction",
    EMBEDDED: "embedded",
    ENCODED: "encoded",
}

#: `first` stops at the first finding at least this strong.
EARLY_STOP = 0.9
#: Two cues of one family combine when they start at most this many characters apart.
COMBINE_WINDOW = 400
#: Anchor hits tried per rule: a bound for pathological input only (a 100 KB document has a few hundred).
MAX_HITS = 4096
MAX_DECODED = 8
MAX_ATTEMPTS = 48
MAX_BLOB = 8192
MAX_DEPTH = 2
MAX_CONTAINERS = 16
#: Longest word the normalization steps look at (a longer "word" is a blob, not a word).
MAX_WORD = 64
#: Places a structural probe ("![", "<img", "style") is looked at.
MAX_PROBES = 256
#: The normalized layer works on chunks of this many characters, overlapping by `CHUNK_OVERLAP`.
CHUNK = 1024
CHUNK_OVERLAP = 256


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that matched: what kind of attack, how sure, where (in the input), in which view."""

    family: str  # one of FAMILIES
    rule: str  # stable rule id, e.g. "override.ignore_previous"
    score: float  # 0..1
    start: int  # span in the original text (for decoded layers: the encoded blob)
    end: int
    layer: str  # one of LAYERS


# --- compiling the rules -----------------------------------------------------------------------------


def _bare(ch: str) -> str:
    """The base letter of an accented one ("é" -> "e", "й" -> "и"), or "" when it has none."""
    d = unicodedata.normalize("NFD", ch)
    return d[0] if len(d) > 1 and all(unicodedata.combining(c) for c in d[1:]) else ""


def _accent_insensitive(pattern: str) -> str:
    """Let every accented letter of a pattern also match its bare form (the normalized layer has none)."""
    out: list[str] = []
    in_class = escaped = False
    for ch in pattern:
        if escaped:
            out.append(ch)
            escaped = False
            continue
        if ch == "\\":
            escaped = True
        elif ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        base = _bare(ch) if ord(ch) > 127 else ""
        if base:
            out.append(ch + base if in_class else f"[{ch}{base}]")
        else:
            out.append(ch)
    return "".join(out)


def _skeleton(pattern: str) -> str:
    """The normalized layer reads "l" as "i" (leetspeak "1" and "|" are ambiguous): so must its patterns."""
    out: list[str] = []
    escaped = False
    for ch in pattern:
        out.append("i" if ch == "l" and not escaped else ch)
        escaped = ch == "\\" and not escaped
    return "".join(out)


def _char_class(chars: Iterable[str]) -> str:
    """A regex character class of `chars` written as ranges (sre scans a short class much faster)."""
    points = sorted(set(map(ord, chars)))
    parts: list[str] = []
    i = 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        a, b = re.escape(chr(points[i])), re.escape(chr(points[j]))
        parts.append(a if i == j else f"{a}-{b}")
        i = j + 1
    return "[" + "".join(parts) + "]"


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _class_search(chars: Iterable[str]) -> Callable[[str], bool]:
    """A fast "does the text hold one of `chars`": sre checks a class of BMP characters against a bitmap,
    but one that also holds astral characters range by range, so those go into a second class that is
    searched only when the text has astral characters at all."""
    chars = set(chars)
    bmp = re.compile(_char_class(c for c in chars if c <= "\uffff"))
    astral = [c for c in chars if c > "\uffff"]
    far = re.compile(_char_class(astral)) if astral else None

    def search(s: str) -> bool:
        if bmp.search(s) is not None:
            return True
        return far is not None and _ASTRAL.search(s) is not None and far.search(s) is not None

    return search


def _is_cjk(ch: str) -> bool:
    return "\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\u3000" <= ch <= "\u303f"


_Node = dict[str, "_Node"]


def _trie(words: Iterable[str]) -> str:
    """A prefix-factored alternation (sre tries one branch per character instead of every word)."""
    root: _Node = {}
    for w in words:
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: _Node) -> str:
        alts = [
            ("(?!\\w)" if ch == "$" else re.escape(ch)) + emit(sub) for ch, sub in sorted(node.items()) if ch
        ]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


@dataclass(slots=True)
class _RuleSet:
    """Rules compiled for one layer, with the anchor index that decides which of them run."""

    rules: list[Rule]
    variants: list[list[tuple[float, re.Pattern[str]]]]
    befores: list[re.Pattern[str] | None]
    by_anchor: dict[str, list[int]]
    word_anchors: re.Pattern[str] | None
    word_anchors_unicode: re.Pattern[str] | None
    free_anchors: re.Pattern[str] | None
    always: list[int]

    @classmethod
    def build(cls, rules: Iterable[Rule], skeleton: bool) -> _RuleSet:
        rules = list(rules)

        def compile_(source: str) -> re.Pattern[str]:
            src = _accent_insensitive(source)
            return re.compile(_skeleton(src) if skeleton else src)

        variants = [[(score, compile_(source)) for score, source in rule.variants] for rule in rules]
        befores = [compile_(f"(?:{rule.before})\\Z") if rule.before else None for rule in rules]
        keyed: dict[str, set[int]] = {}
        always: list[int] = []
        for i, rule in enumerate(rules):
            if not rule.anchors:
                always.append(i)
            for anchor in rule.anchors:
                forms = {anchor, _strip_accents(anchor)}
                if skeleton:
                    forms = {_skeleton(_strip_accents(a)) for a in forms}
                for form in forms:
                    keyed.setdefault(form, set()).add(i)
        # an anchor that another one starts with is covered by it: its rules move to the shorter one
        keys = sorted(keyed, key=len)
        merged: dict[str, list[int]] = {}
        for k in keys:
            owner = next((m for m in merged if not m.endswith("$") and k.startswith(m)), None)
            merged.setdefault(owner or k, [])
            merged[owner or k] = sorted(set(merged[owner or k]) | keyed[k])
        word = [k for k in merged if not _is_cjk(k[0]) and (k[0].isalnum() or k[0] == "_")]
        free = [k for k in merged if k not in word]
        return cls(
            rules,
            variants,
            befores,
            merged,
            # a literal first character lets sre jump from space to space (see `_hay`); non-ASCII text keeps
            # its punctuation (re-mapping it costs more than a class)
            re.compile(" (" + _trie(word) + ")") if word else None,
            re.compile(_HAY_CLASS + "(" + _trie(word) + ")") if word else None,
            re.compile("(" + _trie(free) + ")") if free else None,
            always,
        )

    def hits(self, text: str) -> dict[int, list[int] | None]:
        """Rule index -> positions of its anchors in `text` (None: an anchorless rule, it runs everywhere)."""
        by_stem: dict[str, list[int]] = {}
        hay, ascii_hay = _hay(text)
        rx = self.word_anchors if ascii_hay else self.word_anchors_unicode
        if rx is not None:
            for m in rx.finditer(hay):
                by_stem.setdefault(m.group(1), []).append(m.start(1) - 1)
        if self.free_anchors is not None and not text.isascii():
            for m in self.free_anchors.finditer(text):
                by_stem.setdefault(m.group(1), []).append(m.start(1))
        found: dict[int, list[int] | None] = dict.fromkeys(self.always)
        for stem, positions in by_stem.items():
            for i in self.by_anchor.get(stem) or self.by_anchor[stem + "$"]:
                known = found.get(i)
                found[i] = positions if known is None else known + positions
        return found

    def run(self, text: str) -> Iterator[tuple[Rule, float, int, int]]:
        """(rule, score, start, end) for every rule that matches `text`, its strongest variant."""
        for i, positions in self.hits(text).items():
            rule, before = self.rules[i], self.befores[i]
            for score, rx in self.variants[i]:
                span = _find(rx, before, rule.back, text, positions)
                if span is not None:
                    yield rule, score, span[0], max(span[1], span[0] + 1)
                    break


def _find(
    rx: re.Pattern[str], before: re.Pattern[str] | None, back: int, text: str, positions: list[int] | None
) -> tuple[int, int] | None:
    """Where a variant matches at an anchor, preceded by what `before` asks (no anchors: anywhere)."""
    if positions is None:
        m = rx.search(text)
        return None if m is None else m.span()
    for p in positions[:MAX_HITS]:
        m = rx.match(text, p)
        if m is None:
            continue
        if before is None:
            return m.span()
        b = before.search(text, max(0, p - back), p)
        if b is not None:
            return b.start(), m.end()
    return None


# the anchor pass reads words after a space: punctuation and line breaks read as spaces (same length)
_HAY_PUNCT = "\n\t\r\"'()[]{}<>*/\\-_.,:;!?`|~^=+&%#@$"
_HAY_BYTES = bytes(32 if chr(i) in _HAY_PUNCT else i for i in range(256))
_HAY_CLASS = "[\\s" + re.escape(_HAY_PUNCT) + "«»¿¡“”‘’„…·•—–]"
# letters no ASCII stand-in can carry: Greek, Cyrillic and beyond (CJK anchors have their own pass)
_NON_LATIN = re.compile("[\u0370-\u1dff\u2c00-\u2dff\ua640-\ua69f]")


def _hay(text: str) -> tuple[str, bool]:
    """(" " + the text with punctuation as spaces, whether it is ASCII), same length as " " + text.

    Text in the Latin script (accents are already stripped) goes through a byte table: a symbol or an
    emoji becomes "?" and then a space. Text with other letters stays as it is (see `_RuleSet.build`)."""
    if text.isascii() or _NON_LATIN.search(text) is None:
        return " " + text.encode("ascii", "replace").translate(_HAY_BYTES).decode(), True
    return " " + text, False


# --- normalization -----------------------------------------------------------------------------------

_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_INVISIBLE: dict[int, None] = dict.fromkeys(
    [
        0x00AD,  # soft hyphen
        0x034F,  # combining grapheme joiner
        0x061C,  # Arabic letter mark
        0x115F,
        0x1160,
        0x17B4,
        0x17B5,
        0x180E,
        *range(0x200B, 0x2010),  # zero-width space/joiners, LRM, RLM
        *range(0x202A, 0x202F),  # bidi embeddings and overrides
        *range(0x2060, 0x2070),  # word joiner, invisible operators, bidi isolates
        0x3164,
        0xFEFF,
        0xFFA0,
        *range(0xFE00, 0xFE10),  # variation selectors
        *range(0xE0000, 0xE0080),  # tag characters (decoded on their own layer)
        *range(0xE0100, 0xE01F0),
    ]
)
# What NFKC leaves alone but reads as ASCII: small capitals, dotless i, typographic quotes and dashes.
_LATIN_LOOKALIKES = {
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
    "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ǫ": "q", "ʀ": "r", "ꜱ": "s", "ᴛ": "t",
    "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ɩ": "i",
    "‘": "'", "’": "'", "‛": "'", "′": "'", "“": '"', "”": '"', "„": '"', "‐": "-", "‑": "-", "‒": "-",
    "–": "-", "—": "-", "−": "-",
}  # fmt: skip
# Cyrillic and Greek letters that look like Latin ones (upper and lower case).
_SCRIPT_LOOKALIKES = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "һ": "h", "ӏ": "l", "ү": "y", "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o",
    "Р": "p", "С": "c", "Т": "t", "Х": "x", "У": "y", "Ѕ": "s", "І": "i", "Ј": "j", "Ԛ": "q", "Ԝ": "w",
    "Һ": "h", "Ӏ": "l", "Ү": "y", "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i",
    "Κ": "k", "Μ": "m", "Ν": "n", "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
}  # fmt: skip
_LATIN_FOLD: dict[str, str] = {**dict.fromkeys(map(chr, _INVISIBLE), ""), **_LATIN_LOOKALIKES}
# a character class finds the few such characters at C speed (str.translate costs ~50 ns per character)
_LATIN_FOLD_RE = re.compile(_char_class(_LATIN_FOLD))
_has_latin_fold = _class_search(_LATIN_FOLD)
# characters NFKC turns into letters or digits: the BMP, mathematical alphanumerics, enclosed letters
_NFKC_CHARS = [
    ch
    for ch in map(chr, (*range(0xA0, 0x10000), *range(0x1D400, 0x1D800), *range(0x1F100, 0x1F1E6)))
    if (n := unicodedata.normalize("NFKC", ch)) != ch and any(c.isalnum() for c in n)
]
_NFKC_LETTERS = re.compile(_char_class(_NFKC_CHARS))
_has_nfkc_letters = _class_search(_NFKC_CHARS)
_SCRIPT_FOLD = str.maketrans(_SCRIPT_LOOKALIKES)
_CYRILLIC_GREEK = re.compile("[\u0370-\u052f]")
_LOOKALIKE_CLASS = _char_class(_SCRIPT_LOOKALIKES)
_LOOKALIKES = re.compile(_LOOKALIKE_CLASS)
# a Cyrillic or Greek letter that is no lookalike: the text really is in that script
_GENUINE_SCRIPT = re.compile(
    _char_class(
        chr(c) for c in range(0x0370, 0x0530) if chr(c).isalpha() and chr(c) not in _SCRIPT_LOOKALIKES
    )
)
# a lookalike next to a Latin letter: a mixed-script word, the homoglyph trick's signature
_MIXED_EDGE = re.compile(f"[a-zA-Z]{_LOOKALIKE_CLASS}|{_LOOKALIKE_CLASS}[a-zA-Z]")
# emphasis inside a word ("ig**no**re"): the normalized layer drops it; elsewhere both layers read these
# characters (and "_") as spaces, one for one (see `_phrase_text`)
# the same, only inside a word (first a class, then the look-behind: sre skips to candidates fast)
_INWORD_EMPHASIS = re.compile(r"[*~`](?<=[^\W_][*~`])[*~`]*(?=[^\W_])")
_EMPHASIS_BYTES = bytes(32 if chr(i) in "*~`_" else i for i in range(256))
_SEPS = r"[ \t.\-·•*/,:]"
# a separator, one character, a separator: where a spaced-out run may start; the run is matched from there
_SPACED_PROBE = re.compile(rf"{_SEPS}[a-z0-9@$]{_SEPS}{{1,3}}[a-z0-9@$]{_SEPS}")
# the same with a literal first character, which sre finds much faster than a class
_SPACED_QUICK = re.compile(rf" [a-z0-9@$]{_SEPS}{{1,3}}[a-z0-9@$]{_SEPS}")
_SPACED = re.compile(rf"[a-z0-9@$](?:{_SEPS}{{1,3}}[a-z0-9@$](?![a-z0-9@$])){{3,}}")
_SEP_RUN = re.compile(rf"{_SEPS}{{1,3}}")
_LEET_PROBE = re.compile(r"[0-9@$|!+](?:(?<=[a-z].)|(?=[a-z]))")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789@$|!+")
_LEET = str.maketrans("0134578@$|!+9", "oieastbasiitg")

_Offsets = list[int] | None


def _deaccented(ch: str) -> str:
    base = _bare(ch)
    return base if base and (base.isascii() or "\u0400" <= base <= "\u04ff") else ""


# one character for one (so plain spans stay exact): lowercase accented letters -> their base letter,
# typographic quotes and dashes, fullwidth forms and odd spaces -> ASCII (what normalization would do)
_DEACCENT = {
    **{
        ch: base
        for ch in map(chr, (*range(0xC0, 0x250), *range(0x1E00, 0x1F00), 0x439, 0x451))
        if ch == ch.lower() and (base := _deaccented(ch))
    },
    **{chr(c): chr(c - 0xFEE0).lower() for c in range(0xFF01, 0xFF5F)},
    **dict.fromkeys(map(chr, (0xA0, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000)), " "),
    "‘": "'", "’": "'", "‛": "'", "“": '"', "”": '"', "„": '"',
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-",
}  # fmt: skip
_ACCENTED = re.compile(_char_class(_DEACCENT))


def _strip_accents(s: str) -> str:
    if _ACCENTED.search(s) is not None:
        s = _ACCENTED.sub(lambda m: _DEACCENT[m.group()], s)
    return _MARKS.sub("", s) if _MARKS.search(s) is not None else s


def _lower(text: str) -> str:
    """Lowercase without accents, keeping every character at its index (the plain layer's text)."""
    if text.isascii():
        return text.lower()
    low = text.replace("İ", "i").lower()  # U+0130 is the one letter that lowercases to two
    return _ACCENTED.sub(lambda m: _DEACCENT[m.group()], low) if _ACCENTED.search(low) else low


def _map(fn: Callable[[str], str], s: str, offs: _Offsets) -> tuple[str, _Offsets]:
    if offs is None:
        return fn(s), None
    parts: list[str] = []
    new: list[int] = []
    for ch, o in zip(s, offs, strict=True):
        r = fn(ch)
        parts.append(r)
        new.extend([o] * len(r))
    return "".join(parts), new


def _sub(
    rx: re.Pattern[str], repl: Callable[[re.Match[str]], str], s: str, offs: _Offsets
) -> tuple[str, _Offsets]:
    if offs is None:
        return rx.sub(repl, s), None
    parts: list[str] = []
    new: list[int] = []
    last = 0
    for m in rx.finditer(s):
        a, b = m.span()
        parts.append(s[last:a])
        new.extend(offs[last:a])
        r = repl(m)
        parts.append(r)
        span = offs[a:b] or [offs[a - 1] if a else 0]
        new.extend(span[min(k * len(span) // len(r), len(span) - 1)] for k in range(len(r)))
        last = b
    parts.append(s[last:])
    new.extend(offs[last:])
    return "".join(parts), new


def _nfkc(s: str) -> str:
    """NFKC for the characters it turns into letters or digits (fullwidth, mathematical, circled,
    ligatures...), then the fold NFKC leaves to us. Symbols keep their form ("…" is no "..."): they hide
    no phrase, and a chunk that differs from the plain layer costs a second pass."""
    if _has_nfkc_letters(s):
        s = _NFKC_LETTERS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), s)
    return _LATIN_FOLD_RE.sub(lambda m: _LATIN_FOLD[m.group()], s) if _has_latin_fold(s) else s


def _fold_scripts(s: str) -> str:
    """Fold lookalikes everywhere when the text has no genuine Cyrillic/Greek, else only in mixed words."""
    if _CYRILLIC_GREEK.search(s) is None:
        return s
    if _GENUINE_SCRIPT.search(s) is None:
        return s.translate(_SCRIPT_FOLD)
    words = _spans_around(s, _MIXED_EDGE, str.isalnum)
    return _replace(s, None, words, lambda w: w.translate(_SCRIPT_FOLD))[0] if words else s


# "i.g.n.o.r.e", "i-g-n-o-r-e": one probe per separator, each with a literal first character
_DOTTED = tuple(
    (sep, re.compile(f"{re.escape(sep)}[a-z0-9@$]{re.escape(sep)}[a-z0-9@$]{re.escape(sep)}"))
    for sep in ".-/,:·•"
)


def _spaced_probe(s: str) -> bool:
    """Whether `s` may hold spaced-out letters: separated by spaces, or by punctuation."""
    if _SPACED_QUICK.search(s) is not None or _SPACED.match(s) is not None:
        return True
    return any(sep in s and rx.search(s) is not None for sep, rx in _DOTTED)


def _spaced_runs(s: str) -> list[tuple[int, int]]:
    """Spans of spaced-out letters ("i g n o r e", "i.g.n.o.r.e"), found from the probe's hits."""
    runs: list[tuple[int, int]] = []
    if s[:1] in _TOKEN_CHARS and (run := _SPACED.match(s, 0)) is not None:
        runs.append(run.span())  # a run at the very start has no separator before it
    for m in _SPACED_PROBE.finditer(s):
        start = m.start() + 1
        if runs and start < runs[-1][1]:
            continue
        run = _SPACED.match(s, start)
        if run is not None:
            runs.append(run.span())
    return runs


def _spans_around(s: str, probe: re.Pattern[str], inside: Callable[[str], bool]) -> list[tuple[int, int]]:
    """The words (maximal runs of characters `inside` accepts) around each hit of `probe`."""
    spans: list[tuple[int, int]] = []
    n = len(s)
    for m in probe.finditer(s):
        i = m.start()
        if spans and i < spans[-1][1]:
            continue
        a = i
        while a > 0 and i - a < MAX_WORD and inside(s[a - 1]):
            a -= 1
        b = i + 1
        while b < n and b - i < MAX_WORD and inside(s[b]):
            b += 1
        spans.append((a, b))
    return spans


def _leet_tokens(s: str) -> list[tuple[int, int]]:
    """Spans of the words that mix letters with leetspeak digits or symbols and read as a word of the rules
    ("1gn0r3", "4ll", "ru1es"; not "20mb", "gpt4" or "mp3", which would only cost a second pass)."""
    spans = _spans_around(s, _LEET_PROBE, _TOKEN_CHARS.__contains__)
    return [(a, b) for a, b in spans if b - a <= MAX_WORD and _known(s[a:b])]


def _known(token: str) -> bool:
    """Whether a token, leetspeak undone, is or starts with a word the rules spell out."""
    word = _unleet(token).rstrip("!|+").replace("l", "i")
    return any(word[:k] in _VOCABULARY for k in range(3, min(len(word), MAX_WORD) + 1))


def _replace(
    s: str, offs: _Offsets, spans: list[tuple[int, int]], fn: Callable[[str], str]
) -> tuple[str, _Offsets]:
    """`s` with each span replaced by `fn` of it (offsets spread over the replacement when tracked)."""
    parts: list[str] = []
    new: list[int] | None = None if offs is None else []
    last = 0
    for a, b in spans:
        r = fn(s[a:b])
        parts += (s[last:a], r)
        if new is not None and offs is not None:
            new += offs[last:a]
            span = offs[a:b]
            new += (span[min(k * len(span) // len(r), len(span) - 1)] for k in range(len(r)))
        last = b
    parts.append(s[last:])
    if new is not None and offs is not None:
        new += offs[last:]
    return "".join(parts), new


def _chunks(text: str) -> list[tuple[int, int]]:
    """Overlapping spans of about `CHUNK` characters, cut at whitespace, covering `text`."""
    n = len(text)
    if n <= CHUNK:
        return [(0, n)]
    spans: list[tuple[int, int]] = []
    a = 0
    while a < n:
        b = min(n, a + CHUNK)
        if b < n:
            cut = text.rfind(" ", a + CHUNK // 2, b)
            b = cut if cut != -1 else b
        spans.append((a, b))
        if b >= n:
            break
        back = text.rfind(" ", b - CHUNK_OVERLAP, b)
        a = back + 1 if back > a else b - CHUNK_OVERLAP
    return spans


def _changes(text: str, low: str, phrase: str) -> Iterator[int]:
    """Positions where normalization may change the text (whole-text scans, no Python loop per character):
    what NFKC turns into letters, invisible and lookalike characters, combining marks, Cyrillic or Greek
    lookalikes, emphasis inside a word, spaced-out letters, leetspeak words."""
    if not text.isascii():
        for has, rx in ((_has_nfkc_change, _NFKC_CHANGE), (_has_fold_change, _FOLD_CHANGE)):
            if has(text):
                yield from map(re.Match.start, rx.finditer(text))
        if _MARKS.search(low) is not None:
            yield from map(re.Match.start, _MARKS.finditer(low))
        if _CYRILLIC_GREEK.search(text) is not None:
            rx = _LOOKALIKES if _GENUINE_SCRIPT.search(text) is None else _MIXED_EDGE
            yield from map(re.Match.start, rx.finditer(text))
    if "*" in low or "~" in low or "`" in low:
        yield from map(re.Match.start, _INWORD_EMPHASIS.finditer(low))
    if _spaced_probe(phrase):
        yield from (a for a, _ in _spaced_runs(phrase))
    if _LEET_PROBE.search(phrase) is not None:
        yield from (a for a, _ in _leet_tokens(phrase))


# the same without what the plain layer folds alike (typographic quotes and dashes, fullwidth forms)
_FOLD_CHANGE = re.compile(_char_class(c for c, r in _LATIN_FOLD.items() if _DEACCENT.get(c) != r))
_has_fold_change = _class_search(c for c, r in _LATIN_FOLD.items() if _DEACCENT.get(c) != r)
_NFKC_ONLY = [c for c in _NFKC_CHARS if _DEACCENT.get(c.lower()) != unicodedata.normalize("NFKC", c).lower()]
_NFKC_CHANGE = re.compile(_char_class(_NFKC_ONLY))
_has_nfkc_change = _class_search(_NFKC_ONLY)


def _chunks_to_normalize(view: _View) -> list[tuple[int, int]]:
    """The chunks of a view that hold a change (a short text is one chunk, normalized right away)."""
    chunks = _chunks(view.text)
    if len(chunks) == 1:
        return chunks
    points = sorted(set(_changes(view.text, view.low, view.phrase)))
    return [(a, b) for a, b in chunks if bisect.bisect_left(points, a) < bisect.bisect_left(points, b)]


def _join_spaced(run: str) -> str:
    """ "i g n o r e   a l l" -> "ignore all": the most common gap is inside words, any other between."""
    seps = _SEP_RUN.findall(run)
    letters = _SEP_RUN.split(run)
    inner = max(set(seps), key=seps.count)
    out = [letters[0]]
    for sep, ch in zip(seps, letters[1:], strict=True):
        out.append(ch if sep == inner else " " + ch)
    return "".join(out)


def _unleet(token: str) -> str:
    core = token.rstrip("!|+")  # trailing punctuation stays punctuation
    return core.translate(_LEET) + token[len(core) :]


def _phrase_text(low: str) -> str:
    """What the phrase rules read: the plain text with emphasis markers and underscores as spaces
    ("**ignore** all", "ignore_all_previous"), each one character for one."""
    if low.isascii():
        return low.encode().translate(_EMPHASIS_BYTES).decode()
    for ch in "*~`_":
        if ch in low:
            low = low.replace(ch, " ")
    return low


def _normalize(text: str, low: str, track: bool = False) -> tuple[str, _Offsets, bool]:
    """(normalized text before the l->i skeleton, offsets into `text` or None, spaced-out runs seen)."""
    offs: _Offsets = list(range(len(text))) if track else None
    if text.isascii():
        s = low
    else:
        s, offs = _map(_nfkc, text, offs)
        s = _fold_scripts(s)  # one character for one: offsets unchanged
        s, offs = _map(_lower, s, offs)
        if not s.isascii():
            s, offs = _map(_strip_accents, s, offs)
    if ("*" in s or "~" in s or "`" in s) and _INWORD_EMPHASIS.search(s) is not None:
        s, offs = _sub(_INWORD_EMPHASIS, lambda m: "", s, offs)
    s = _phrase_text(s)
    runs = _spaced_runs(s) if _spaced_probe(s) else []
    if runs:
        s, offs = _replace(s, offs, runs, _join_spaced)
    if _LEET_PROBE.search(s) is not None:
        s, offs = _replace(s, offs, _leet_tokens(s), _unleet)
    return s, offs, bool(runs)


# --- decoders ----------------------------------------------------------------------------------------

_B64_BYTES = bytes(
    ord("a") if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "+/=_-") else ord(" ") for i in range(256)
)
_HEX_BYTES = bytes(ord("a") if chr(i) in "0123456789abcdefABCDEF" else ord(" ") for i in range(256))
_MIN_RUN = b"a" * 16  # shortest base64 or hex blob decoded (12 or 8 bytes)
# each starts with a literal or a plain class: sre then skips to candidates at C speed
_HEX_ESCAPES = re.compile(r"\\x[0-9a-fA-F]{2}(?:\\x[0-9a-fA-F]{2}){3,}")
_HEX_0X = re.compile(r"0x[0-9a-fA-F]{2}(?:[\s,]*0x[0-9a-fA-F]{2}){3,}")
_PCT_RUN = re.compile(r"%[0-9a-fA-F]{2}(?:[^\s%]{0,40}%[0-9a-fA-F]{2})*[^\s%]{0,40}")
_NUM_ENTITY = re.compile(r"&#(?:[0-9]{1,7}|[xX][0-9a-fA-F]{1,6});?")
_TAG_RUN = re.compile("[\U000e0020-\U000e007e][\U000e0020-\U000e007e]{3,}")
_ROT13 = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM",
)
# stems of the rules' vocabulary as ROT13 and reversed text shows them: two distinct ones trigger that view
_CUE_WORDS = (
    "ignor", "instruct", "previous", "prompt", "system", "disregard", "rules", "restrict", "reveal",
    "you are", "forget", "pretend",
)  # fmt: skip
_ROT13_CUES = tuple(codecs.encode(w, "rot13") for w in _CUE_WORDS)
_REVERSED_CUES = tuple(w[::-1] for w in _CUE_WORDS)


def _runs(text: str, table: bytes, probe: bytes) -> Iterator[tuple[int, int]]:
    """Spans of maximal runs of `table`'s characters at least `len(probe)` long (C-speed translation)."""
    t = text.encode("ascii", "replace").translate(table)
    pos = t.find(probe)
    while pos != -1:
        end = t.find(b" ", pos)
        end = len(t) if end == -1 else end
        yield pos, end
        pos = t.find(probe, end)


def _readable(raw: bytes) -> str | None:
    """The bytes as text when they are mostly printable UTF-8 with some letters, else None."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(s) < 6:
        return None
    printable = sum(map(str.isprintable, s)) + s.count("\n") + s.count("\t")
    letters = sum(map(str.isalpha, s))
    return s if printable >= 0.9 * len(s) and letters >= 0.5 * len(s.replace(" ", "")) else None


def _b64(blob: str) -> str | None:
    s = blob.rstrip("=")
    if len(s) % 4 == 1 or s.islower() or s.isupper():
        return None
    s = s.translate(str.maketrans("-_", "+/")) + "=" * (-len(s) % 4)
    try:
        return _readable(base64.b64decode(s, validate=True))
    except (binascii.Error, ValueError):
        return None


def _hex(blob: str) -> str | None:
    digits = re.sub(r"\\x|0x|[\s,]", "", blob)
    if len(digits) % 2:
        return None
    try:
        return _readable(bytes.fromhex(digits))
    except ValueError:
        return None


def _decodings(text: str) -> Iterator[tuple[str, str, int, int]]:
    """(layer, decoded text, start, end) for each encoded blob in `text`, cheap probes first.

    At most `MAX_ATTEMPTS` base64/hex candidates are tried (most long tokens are not blobs).
    """
    attempts = 0
    for layer, table, decode in (("base64", _B64_BYTES, _b64), ("hex", _HEX_BYTES, _hex)):
        for a, b in _runs(text, table, _MIN_RUN):
            attempts += 1
            if attempts > MAX_ATTEMPTS:
                break
            if b - a <= MAX_BLOB * 2 and (decoded := decode(text[a:b])) is not None:
                yield layer, decoded, a, b
    for probe, rx in (("\\x", _HEX_ESCAPES), ("0x", _HEX_0X)):
        if probe in text:
            for m in rx.finditer(text):
                if (decoded := _hex(m.group())) is not None:
                    yield "hex", decoded, m.start(), m.end()
    if text.count("%") >= 3:
        for m in _PCT_RUN.finditer(text):
            if m.group().count("%") >= 3:
                a = m.start()
                while a > 0 and m.start() - a < 40 and not text[a - 1].isspace():
                    a -= 1
                decoded = urllib.parse.unquote_plus(text[a : m.end()])
                if _readable(decoded.encode()) is not None:
                    yield "url", decoded, a, m.end()
    if "&#" in text:
        yield from _entity_clusters(text)
    if not text.isascii():
        for m in _TAG_RUN.finditer(text):
            yield "unicode_tags", "".join(chr(ord(c) - 0xE0000) for c in m.group()), m.start(), m.end()


def _entity_clusters(text: str) -> Iterator[tuple[str, str, int, int]]:
    """Runs of numeric HTML entities (at least four, at most 20 other characters apart), decoded."""
    start = end = count = 0
    for m in _NUM_ENTITY.finditer(text):
        if count and m.start() - end > 20:
            if count >= 4:
                yield "html", html.unescape(text[start:end]), start, end
            count = 0
        if not count:
            start = m.start()
            while start > 0 and m.start() - start < 40 and not text[start - 1].isspace():
                start -= 1  # the word the first entity is in
        end, count = m.end(), count + 1
    if count >= 4:
        yield "html", html.unescape(text[start:end]), start, end


def _cued(low: str, cues: tuple[str, ...]) -> bool:
    seen = 0
    for cue in cues:
        if cue in low:
            seen += 1
            if seen == 2:
                return True
    return False


# --- embedded structure ------------------------------------------------------------------------------

_HIDDEN_OPEN = re.compile(
    r"<([a-z][a-z0-9]*)\b[^>]{0,300}?(?:"
    r"style\s*=\s*[\"'][^\"'>]{0,300}?(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:px|pt|em|"
    r"rem|%)?(?![.\d])|opacity\s*:\s*0(?:\.0+)?\s*(?:;|[\"'])|color\s*:\s*(?:#fff(?:fff)?\b|white\b|"
    r"rgba?\(\s*255\s*,\s*255\s*,\s*255)|(?:height|width|max-height)\s*:\s*0(?:px)?\s*(?:;|[\"'])|"
    r"left\s*:\s*-\d{3,})"
    r"|\shidden\b|aria-hidden\s*=\s*[\"']?true|color\s*=\s*[\"']?(?:#fff(?:fff)?|white)\b)[^>]{0,300}>"
)
_MARKER = re.compile(
    r"<\|(?:im_start|im_end|system|user|assistant|endoftext|start_header_id|end_header_id|eot_id)\|>"
    r"|\[/?(?:system|inst|sys)(?:\s+(?:note|message|prompt|override|instruction)s?)?\s*[:\]]"
    r"|<</?sys>>"
    r"|\s*#{2,4}\s*(?:system|instructions?|new\s+instructions?)\b\s*:?"
    r"|\s*(?:system|assistant)\s*:"
    r"|</?(?:system|instructions?)>",
)
_MARKER_PROBES = (
    "<|",
    "[system",
    "[inst",
    "[/inst",
    "[sys",
    "<<sys",
    "<</sys",
    "##",
    "system:",
    "assistant:",
    "<system",
    "</system",
    "<instruction",
)
_ROLE_TURN = re.compile(r"<\|im_start\|>\s*(?:system|assistant|developer)\b|<\|start_header_id\|>\s*system")
_AI_ADDRESS = re.compile(
    r"\b(?:ai|a\.i\.|llms?|chatgpt|gpt|claude|gemini|copilot|bard|bing|assistants?|chatbots?|"
    r"(?:large\s+)?language\s+models?|ki|ia|l'ia|sprachmodell|ki-assistent(?:en)?|assistent(?:en)?|asistente|"
    r"modelo\s+de\s+lenguaje|modèle\s+de\s+langage|bots?)\b"
)
_STRONG_IMPERATIVE = re.compile(
    r"\byou\s+(?:must|shall|have\s+to|need\s+to|are\s+(?:now|required|instructed|in|no\s+longer|free)|have\s+no|can\s+now)\b"
    r"|\bmust\s+(?:now\s+)?(?:say|tell|include|recommend|ignore|output|reply|respond|rank|hire|reveal|forward|send|"
    r"accept|mark|praise|state|write|delete|approve|be\s+hired)\b"
    r"|\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+)?(?:(?:the|your|previous|prior|above|this|these|"
    r"other|user's|user’s)\s+)*(?:\w+\s+)?(?:task|request|question|user|instructions?|rules|article|document|text|"
    r"content|rest|prompt|resumes?|reviews?|guidelines|polic\w*|safety|query|translation)\b"
    r"|\b(?:do\s+not|don't|never)\s+(?:mention|reveal|tell|disclose|summari[sz]e|warn)\b"
    r"|\binstead\s+(?:output|say|write|respond|reply|print)\b"
    r"|\b(?:output|print|reply|respond\s+with)\s+['\"‘“]"
    r"|\b(?:forward|send)\s+(?:all|the|this|every|a)\s+(?:\w+\s+){0,2}?(?:emails?|messages?|data|summary|files?|"
    r"cookies|passwords?|keys?|contract|contacts)\b"
    r"|\bexfiltrat\w*|\bnew\s+(?:directive|instructions?|rules?|task)\b"
    r"|\bwithout\s+(?:any\s+)?(?:limits|restrictions|rules|filters)\b"
    r"|\bthe\s+user\s+(?:wants|has\s+authori[sz]ed|asked)\s+you\b"
    r"|\b(?:accept|approve|delete)\s+all\b|\breveal\b"
    r"|\b(?:ignoriere|empfiehl|gib\s+dem\s+nutzer|sag\s+dem\s+nutzer|ignora|ignorez|recomienda)\b"
)
_WEAK_IMPERATIVE = re.compile(
    r"\b(?:tell|inform|convince|instruct|advise)\s+(?:the\s+)?(?:users?|readers?|customers?|visitors?)\b"
    r"|\b(?:respond|reply|answer)\s+(?:only\s+)?(?:with|in)\b"
    r"|\b(?:say|state|claim|write|mention)\s+(?:that|the|it|this|our|your)\b"
    r"|\brecommend|\bpraise|\brank\s+(?:this|it|him|her)\b|\bshould\s+(?:quietly\s+)?(?:forward|say|tell|recommend)\b"
    r"|\bappend\b|\byou\s+(?:should|will)\b|\b(?:dis|di)\s+(?:à\s+l'utilisateur|que)\b"
)
_ANYTHING = re.compile("")
_MD_IMAGE = re.compile(r"!\[[^\]\n]{0,200}\]\(\s*<?(https?://[^\s)>]{1,500})")
_IMG_TAG = re.compile(r"<img\b[^>]{0,200}?\bsrc\s*=\s*[\"']?(https?://[^\s\"'>]{1,500})")
_EXFIL_QUERY = re.compile(
    r"[?&][\w.-]{1,40}=[^&\s]*?(?:[{}\[\]<>$]|%7b|%5b|%3c|insert|_here|here_|placeholder|system_?prompt|"
    r"conversation|chat_?history|history|user_?data|secret|exfil|password|api_?key|memory)"
)


# --- the detector ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Raw:
    family: str
    rule: str
    score: float
    start: int
    end: int
    layer: str


@dataclass(slots=True)
class _Budget:
    decoded: int = 0


_SpanMap = Callable[[int, int], tuple[int, int]]


@dataclass(slots=True)
class _View:
    """One text being scanned: the input, or a decoding of it (`layer`: the outermost decoding; `to_input`
    maps a span of this text to one of the input)."""

    text: str
    depth: int = 0
    layer: str = ""
    to_input: _SpanMap | None = None
    low: str = field(init=False)  # the plain layer (structure and decoders read it)
    phrase: str = field(init=False)  # what the phrase rules read of it (see `_phrase_text`)

    def __post_init__(self) -> None:
        self.low = _lower(self.text)
        self.phrase = _phrase_text(self.low)

    def finding(self, family: str, rule: str, score: float, start: int, end: int, layer: str) -> _Raw:
        if self.to_input is None:
            return _Raw(family, rule, score, start, end, layer)
        a, b = self.to_input(start, end)
        return _Raw(ENCODED, rule, score, a, b, self.layer)

    def child(self, text: str, layer: str, to_parent: _SpanMap) -> _View:
        up = self.to_input
        to_input = to_parent if up is None else (lambda a, b: up(*to_parent(a, b)))
        return _View(text, self.depth + 1, self.layer or layer, to_input)


_PLAIN = _RuleSet.build(PHRASE_RULES, skeleton=False)
# every word (or stem: "ignor") of four letters or more the rules spell out, and the short words they
# need, skeleton form: what leetspeak may hide. Shorter pieces of the sources are regex fragments
# ("ies" of "polic(?:y|ies)") that would admit "135m" or "gpt4".
_VOCABULARY = frozenset(
    _skeleton(word)
    for word in (
        *(
            word
            for r in (*PHRASE_RULES, *SQUASHED_RULES)
            for source in (r.before, *(v for _, v in r.variants))
            for word in re.findall(r"(?<![\\(?])[a-z]{4,}", source)
        ),
        *("all", "any", "you", "the", "now", "new", "old", "dan", "not", "and", "are", "act", "own", "off"),
    )
)
_NORMALIZED = _RuleSet.build(PHRASE_RULES, skeleton=True)
_SQUASHED = _RuleSet.build(SQUASHED_RULES, skeleton=True)


class InjectionDetector:
    """Scans texts for injection and jailbreak attempts; build once, reuse (stateless, thread-safe)."""

    __slots__ = ("families", "threshold")

    def __init__(self, threshold: float = 0.5, families: frozenset[str] | None = None) -> None:
        unknown = (families or frozenset()) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown families {sorted(unknown)}; known: {FAMILIES}")
        self.threshold = threshold
        self.families = frozenset(FAMILIES) if families is None else families

    def scan(self, text: str) -> list[Finding]:
        """All findings at or above the threshold, best first (one per family and rule)."""
        return self._finish(list(self._raw(text)))

    def first(self, text: str) -> Finding | None:
        """The best finding, or None. Stops at the first one of at least `EARLY_STOP`."""
        seen: list[_Raw] = []
        for raw in self._raw(text):
            seen.append(raw)
            if raw.score >= max(EARLY_STOP, self.threshold) and raw.family in self.families:
                return Finding(raw.family, raw.rule, round(raw.score, 3), raw.start, raw.end, raw.layer)
        best = self._finish(seen)
        return best[0] if best else None

    # -- internals --

    def _finish(self, raws: list[_Raw]) -> list[Finding]:
        best: dict[tuple[str, str], _Raw] = {}
        for raw in [*raws, *_combine(raws)]:
            if raw.family not in self.families or raw.score < self.threshold:
                continue
            key = (raw.family, raw.rule)
            if key not in best or raw.score > best[key].score:
                best[key] = raw
        ordered = sorted(best.values(), key=lambda r: (-r.score, r.start, FAMILIES.index(r.family)))
        return [Finding(r.family, r.rule, round(r.score, 3), r.start, r.end, r.layer) for r in ordered]

    def _raw(self, text: str) -> Iterator[_Raw]:
        yield from self._view(_View(text), _Budget())

    def _view(self, view: _View, budget: _Budget) -> Iterator[_Raw]:
        plain: dict[str, float] = {}
        for rule, score, a, b in _PLAIN.run(view.phrase):
            plain[rule.id] = max(score, plain.get(rule.id, 0.0))
            yield view.finding(rule.family, rule.id, score, a, b, "plain")
        if EMBEDDED in self.families or view.layer:
            yield from self._structure(view)
        yield from self._normalized(view, plain)
        if view.depth < MAX_DEPTH and ENCODED in self.families:
            yield from self._decoded(view, budget)

    def _normalized(self, view: _View, plain: dict[str, float]) -> Iterator[_Raw]:
        """The rules again on the normalized text, chunk by chunk: only chunks normalization changed are
        scanned, and offsets are tracked (a Python loop per character) only for those with a new finding
        (one the plain layer did not already make as strongly)."""
        for a, b in _chunks_to_normalize(view):
            text, low = view.text[a:b], view.low[a:b]
            norm, _, spaced = _normalize(text, low)
            if norm == view.phrase[a:b]:
                continue
            skeleton = norm.replace("l", "i")
            hits = list(_NORMALIZED.run(skeleton))
            if spaced:
                hits += list(_SQUASHED.run(skeleton))
            hits = [h for h in hits if h[1] > plain.get(h[0].id, 0.0)]
            if not hits:
                continue
            tracked, offs, _ = _normalize(text, low, track=True)
            assert offs is not None
            tracked = tracked.replace("l", "i")
            spans: dict[str, tuple[int, int]] = {}
            for rule, score, x, y in hits:
                if tracked != skeleton:  # composed characters: find the rule again in the tracked string
                    spans = spans or {
                        r.id: (i, j) for r, _, i, j in [*_NORMALIZED.run(tracked), *_SQUASHED.run(tracked)]
                    }
                    x, y = spans.get(rule.id, (0, len(tracked)))
                start = offs[x] if x < len(offs) else 0
                end = offs[y - 1] + 1 if 0 < y <= len(offs) else len(text)
                yield view.finding(
                    rule.family, rule.id, score, a + start, a + max(end, start + 1), "normalized"
                )

    def _structure(self, view: _View) -> Iterator[_Raw]:
        """Hidden HTML holding instructions, forged role markers, image URLs built to leak data.

        Every scan starts from `str.find` hits of a probe and is bounded: a 200 KB run of `<!--` or `![`
        costs a few hundred regex attempts, not one per occurrence."""
        low = view.low
        for a, b in _comments(low):
            score = _judge_hidden(low[a + 4 : b - 3])
            if score:
                yield view.finding(EMBEDDED, "embedded.html_comment", score, a, b, "plain")
        for m in _hidden_elements(low):
            close = low.find("</" + m.group(1), m.end(), m.end() + 2000)
            end = close if close != -1 else min(len(low), m.end() + 600)
            score = _judge_hidden(low[m.end() : end])
            if score:
                yield view.finding(EMBEDDED, "embedded.hidden_text", score, m.start(), end, "plain")
        if any(p in low for p in _MARKER_PROBES):
            yield from _markers(view)
        for probe, rx in (("![", _MD_IMAGE), ("<img", _IMG_TAG)):
            for m in _matches_at(low, probe, rx):
                if _EXFIL_QUERY.search(m.group(1)):
                    yield view.finding(
                        EMBEDDED, "embedded.markdown_exfiltration", 0.86, m.start(), m.end(), "plain"
                    )

    def _decoded(self, view: _View, budget: _Budget) -> Iterator[_Raw]:
        """ROT13 keeps every character in place and reversal mirrors it (exact spans); a decoded blob maps
        to the blob."""
        low, n = view.low, len(view.low)
        if _cued(low, _ROT13_CUES):
            yield from self._view(view.child(low.translate(_ROT13), "rot13", lambda a, b: (a, b)), budget)
        if _cued(low, _REVERSED_CUES):
            yield from self._view(view.child(low[::-1], "reversed", lambda a, b: (n - b, n - a)), budget)
        for layer, decoded, a, b in _decodings(view.text):
            if budget.decoded >= MAX_DECODED:
                return
            budget.decoded += 1
            yield from self._view(view.child(decoded[:MAX_BLOB], layer, _constant((a, b))), budget)


def _constant(span: tuple[int, int]) -> _SpanMap:
    """Every span of a decoded blob maps to the blob."""
    return lambda _a, _b: span


def _judge_hidden(content: str) -> float:
    """How much hidden content (a comment, invisible text) reads as instructions to a model; 0 if not."""
    inner = max((score for _, score, _, _ in _PLAIN.run(_phrase_text(content))), default=0.0)
    if inner >= 0.5:
        return min(1.0, max(0.86, inner + 0.04))
    ai = _AI_ADDRESS.search(content) is not None
    strong = _STRONG_IMPERATIVE.search(content) is not None
    weak = strong or _WEAK_IMPERATIVE.search(content) is not None
    if ai and weak:
        return 0.84
    return 0.62 if strong else 0.0


def _matches_at(low: str, probe: str, rx: re.Pattern[str]) -> Iterator[re.Match[str]]:
    """`rx` tried where `probe` occurs, at most `MAX_PROBES` times."""
    i = low.find(probe)
    for _ in range(MAX_PROBES):
        if i == -1:
            return
        m = rx.match(low, i)
        if m is not None:
            yield m
        i = low.find(probe, i + len(probe))


def _comments(low: str) -> Iterator[tuple[int, int]]:
    """Spans of HTML comments (at most `MAX_CONTAINERS`, bodies up to 3000 characters)."""
    i = low.find("<!--")
    for _ in range(MAX_CONTAINERS):
        if i == -1:
            return
        j = low.find("-->", i + 4, i + 3007)
        if j == -1:
            i = low.find("<!--", i + 4)
            continue
        yield i, j + 3
        i = low.find("<!--", j + 3)


def _hidden_elements(low: str) -> Iterator[re.Match[str]]:
    """Opening tags that hide their content (`display:none`, white or zero-size text, `hidden`), found from
    the styling words back to their `<`, at most `MAX_PROBES` of each."""
    seen: set[int] = set()
    for probe in ("style", "hidden", "color"):
        for m in _matches_at(low, probe, _ANYTHING):
            lt = low.rfind("<", max(0, m.start() - 300), m.start())
            if lt == -1 or lt in seen:
                continue
            seen.add(lt)
            tag = _HIDDEN_OPEN.match(low, lt)
            if tag is not None:
                yield tag


def _marker_hits(low: str) -> Iterator[re.Match[str]]:
    """Matches of `_MARKER` at the places its probes occur (`str.find` is far cheaper than a regex scan)."""
    for probe in _MARKER_PROBES:
        i = low.find(probe)
        seen = 0
        while i != -1 and seen < MAX_CONTAINERS:
            seen += 1
            start = low.rfind("\n", 0, i) + 1 if probe in ("##", "system:", "assistant:") else i
            m = _MARKER.match(low, start) if low[start:i].isspace() or start == i else None
            if m is not None:
                yield m
            i = low.find(probe, i + len(probe))


def _markers(view: _View) -> Iterator[_Raw]:
    """Forged chat-role markers followed by instructions (`<|im_start|>system`, `[system]`, `### System:`)."""
    low = view.low
    for m in _marker_hits(low):
        after = low[m.end() : m.end() + 240]
        score = _judge_hidden(after)
        if _ROLE_TURN.match(low, m.start()):
            score = max(score, 0.8)
        if score >= 0.6:
            yield view.finding(
                EMBEDDED, "embedded.role_marker", score, m.start(), m.end() + len(after), "plain"
            )
            return


def _combine(raws: list[_Raw]) -> list[_Raw]:
    """Noisy-or of up to three different rules of one family whose matches start close together."""
    out: list[_Raw] = []
    for family in {r.family for r in raws}:
        cues = sorted((r for r in raws if r.family == family and r.score < EARLY_STOP), key=lambda r: r.start)
        for i, first in enumerate(cues):
            near = {first.rule: first}
            for other in cues[i + 1 :]:
                if other.start - first.start > COMBINE_WINDOW:
                    break
                if other.rule not in near or other.score > near[other.rule].score:
                    near[other.rule] = other
            if len(near) < 2:
                continue
            top = sorted(near.values(), key=lambda r: -r.score)[:3]
            miss = 1.0
            for r in top:
                miss *= 1.0 - r.score
            end = max(r.end for r in top)
            out.append(
                _Raw(family, RULE_PREFIX[family] + ".combined", 1.0 - miss, first.start, end, top[0].layer)
            )
    return out


_DEFAULT = InjectionDetector()


def detect(text: str) -> Finding | None:
    """The best finding with the default threshold and all families, or None."""
    return _DEFAULT.first(text)
