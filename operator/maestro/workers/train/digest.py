"""Content digest of a model directory: what status.model.digest and the model card pin.

sha256 over the sorted relative paths and each file's own sha256, so renaming, adding, removing or
changing any file changes the digest, and the same files always give the same digest wherever
they live. Stdlib only: the operator (or a deployment check) can recompute it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_dir(root: Path, exclude: frozenset[str] = frozenset()) -> str:
    """'sha256:<hex>' over every regular file under `root` (relative POSIX paths, sorted)."""
    if not root.is_dir():
        raise FileNotFoundError(f"cannot digest {root}: not a directory")
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in exclude)
    for p in files:
        h.update(p.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(file_sha256(p).encode())
        h.update(b"\n")
    return f"sha256:{h.hexdigest()}"
