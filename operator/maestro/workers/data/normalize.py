"""Text normalization and the exact-duplicate key.

Output text: Unicode NFKC, LF line ends, no control or zero-width characters, no outer whitespace.
The dedup key is stricter (lowercased, whitespace collapsed) so "Hello  World" and "hello world"
count as one record, while the output keeps the first record's casing.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\u2060\ufeff]")


def normalize_text(s: str) -> str:
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
    if "\r" in s:
        s = s.replace("\r\n", "\n").replace("\r", "\n")
    if not s.isprintable():  # also false for \n and \t, which the regex keeps
        s = _CONTROL.sub("", s)
    return s.strip()


def dedup_key(roles: tuple[str, ...] | None, words: list[str]) -> bytes:
    """16-byte digest of the record's roles and lowercased words (`"\n".join(texts).lower().split()`).

    Case and whitespace differences vanish; stable across runs and machines. Message boundaries are
    not part of the key: two chats with the same roles and the same words split differently between
    turns count as duplicates, which costs nothing in practice and saves a split per message.
    """
    folded = " ".join(words)
    if roles is not None:
        folded = ",".join(roles) + "\x1e" + folded
    return hashlib.blake2b(folded.encode(), digest_size=16).digest()
