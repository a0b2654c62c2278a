"""Single-layer OCI image archives for the node's system images (pause, CoreDNS, the storage
provisioner and its helper), written from static binaries without a container engine or registry.

Each system program is one static binary, so its image is one layer plus a config: the same shape
as the upstream `FROM scratch` images. The archive is an OCI image layout in a tar that
`ctr images import` reads; file times are fixed, so the same binaries give the same digest and a
re-import can be skipped by comparing digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class ImageFile:
    """A file placed in the image: host `source` at image path `path` (no leading slash)."""

    path: str
    source: Path
    mode: int = 0o755


@dataclass(frozen=True)
class StaticImage:
    """An image made of static files, run as `user` with `entrypoint`."""

    ref: str
    files: tuple[ImageFile, ...]
    entrypoint: tuple[str, ...]
    user: str = "65532:65532"
    symlinks: dict[str, str] = field(default_factory=dict)  # image path -> target
    labels: dict[str, str] = field(default_factory=dict)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(image: StaticImage) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(f.path).parent) for f in image.files} | {"tmp"} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755, 0
            tar.addfile(info)
        for f in sorted(image.files, key=lambda f: f.path):
            data = f.source.read_bytes()
            info = tarfile.TarInfo(f.path)
            info.size, info.mode, info.mtime = len(data), f.mode, 0
            tar.addfile(info, io.BytesIO(data))
        for path, target in sorted(image.symlinks.items()):
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
            tar.addfile(info)
    return buf.getvalue()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def archive(image: StaticImage) -> tuple[bytes, str]:
    """The OCI layout tar for `image` and its manifest digest (what containerd reports as target)."""
    layer = _layer(image)
    layer_digest = _digest(layer)
    config = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": list(image.entrypoint),
                "User": image.user,
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "Labels": dict(image.labels),
            },
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "maestro devcluster (static binaries)"}],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": len(layer)}],
        }
    )
    manifest_digest = _digest(manifest)
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [
                {
                    "mediaType": MANIFEST_MEDIA_TYPE,
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": image.ref,
                        "org.opencontainers.image.ref.name": image.ref.rpartition(":")[2],
                    },
                }
            ],
        }
    )
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        add("index.json", index)
        for blob in (layer, config, manifest):
            add("blobs/sha256/" + _digest(blob).removeprefix("sha256:"), blob)
    return out.getvalue(), manifest_digest
