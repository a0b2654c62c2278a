"""API keys: loaded from the mounted Secret directory, kept in memory only as SHA-256 digests.

A request's bearer token is hashed and looked up: the digest dict makes the comparison
constant-time in the key material, and a memory dump of the guard yields no usable key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from maestro.workers.guard.config import Policy
from maestro.workers.guard.errors import GuardError

log = logging.getLogger("maestro.guard")

_HEX64 = re.compile(r"[0-9a-f]{64}")
ANONYMOUS = "anonymous"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(slots=True)
class KeyStore:
    """digest -> key id. Replaced wholesale on reload (readers see the old or the new, never half)."""

    by_digest: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ids(self) -> set[str]:
        return set(self.by_digest.values())

    def lookup(self, token: str) -> str | None:
        return self.by_digest.get(hashlib.sha256(token.encode()).hexdigest())


def load_keys(directory: str | Path) -> KeyStore:
    """Read one key per file (name = key id; content = the key, or `sha256:<hex>` of it).

    Kubernetes Secret volumes hold `..data`-style dot entries and symlinks; dot files are skipped.
    A bad file is reported in `errors` and skipped rather than failing the whole store.
    """
    store = KeyStore()
    root = Path(directory)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return store
    except OSError as exc:
        store.errors.append(f"{root}: cannot list: {exc.strerror}")
        return store
    for name in names:
        if name.startswith("."):
            continue
        path = root / name
        if not path.is_file():
            continue
        try:
            content = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            store.errors.append(f"{path}: unreadable key file: {exc}")
            continue
        if not content:
            store.errors.append(f"{path}: empty key file")
            continue
        if content.startswith("sha256:"):
            digest = content[len("sha256:") :].strip().lower()
            if not _HEX64.fullmatch(digest):
                store.errors.append(f"{path}: 'sha256:' must be followed by 64 hex digits")
                continue
        else:
            digest = hash_key(content)
        store.by_digest[digest] = name
    return store


def keys_signature(directory: str | Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detector for the key directory (names + inode/mtime of each file behind links)."""
    sig: list[tuple[str, int, int]] = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    st = os.stat(entry.path)
                except OSError:
                    continue
                sig.append((entry.name, st.st_ino, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(sorted(sig))


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def authenticate(policy: Policy, keys: KeyStore, authorization: str | None) -> str:
    """Return the key id for the request, or raise 401. With auth off, a valid key is still named."""
    token = bearer_token(authorization)
    key_id = keys.lookup(token) if token else None
    if key_id is not None:
        return key_id
    if not policy.auth_required:
        return ANONYMOUS
    if token is None:
        raise GuardError(
            401, "Missing API key: send it as 'Authorization: Bearer <key>'.", "missing_api_key", rule="auth"
        )
    if not keys.by_digest:
        raise GuardError(
            401,
            "No API keys are configured for this endpoint; ask its owner for a key "
            "(the keys Secret is empty or not mounted).",
            "invalid_api_key",
            rule="auth",
        )
    raise GuardError(401, "Invalid API key.", "invalid_api_key", rule="auth")
