"""Pod volumes as host directories, kept in sync the way a kubelet keeps them.

- `emptyDir` → `<pod dir>/volumes/<name>` (gone with the pod; `medium: Memory` is a plain dir too).
- `persistentVolumeClaim` → `<state>/volumes/<namespace>/<claim>`: outlives pods, so the dataset
  job's output is there for the training job. The claim must exist (kubelet waits for it, so do we).
- `configMap`, `secret`, `downwardAPI`, `projected` → files written atomically with the kubelet's
  `..data` symlink swap, rewritten when the objects change (the guard hot-reloads its policy
  file) and, for `serviceAccountToken` sources, when 80% of the token's lifetime has passed. Tokens
  are real TokenRequests for the pod's ServiceAccount, bound to the pod.
- `hostPath` → the host path itself.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maestro.devcluster.executor.api import Api, ApiError
from maestro.devcluster.executor.fields import ConfigError, data_of, field_value, resource_value

Obj = dict[str, Any]
Fetch = Callable[[str, str, str], Awaitable[Obj | None]]  # (kind, namespace, name) -> object or None
FILE_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")


def write_atomic(target: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    """Publish `files` (relative path -> (content, mode)) in `target` like the kubelet's
    AtomicWriter: a fresh timestamped dir, `..data` swapped to it with one rename, and top-level
    symlinks through `..data`. Returns False when nothing changed."""
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / "..data"
    if data_link.is_symlink():
        current = target / os.readlink(data_link)
        existing = {str(p.relative_to(current)): p for p in current.rglob("*") if p.is_file()}
        if set(existing) == set(files) and all(
            existing[k].read_bytes() == v and (existing[k].stat().st_mode & 0o777) == mode
            for k, (v, mode) in files.items()
        ):
            return False
    else:
        current = None
    stamp = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for rel, (content, mode) in files.items():
        p = stamp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        p.chmod(mode)
    tmp_link = target / "..data_tmp"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    tmp_link.symlink_to(stamp.name)
    os.replace(tmp_link, data_link)
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link) if link.is_dir() else link.unlink()
            link.symlink_to(f"..data/{top}")
    for entry in target.iterdir():
        if entry.name.startswith("..") and entry.name not in ("..data", stamp.name):
            shutil.rmtree(entry, ignore_errors=True)
        elif not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink() if entry.is_symlink() else shutil.rmtree(entry, ignore_errors=True)
    del current
    return True


@dataclass
class Volumes:
    api: Api
    fetch: Fetch
    state_dir: Path
    node_alloc: Mapping[str, str]
    _tokens: dict[tuple[str, str, str], tuple[bytes, float]] = field(default_factory=dict)

    @staticmethod
    def references(pod: Obj) -> set[tuple[str, str]]:
        """(kind, name) of the ConfigMaps/Secrets the pod's volumes project."""
        refs: set[tuple[str, str]] = set()
        for v in pod["spec"].get("volumes", []):
            sources = v["projected"].get("sources", []) if "projected" in v else [v]
            for s in sources:
                if "configMap" in s:
                    refs.add(("ConfigMap", s["configMap"]["name"]))
                if "secret" in s:
                    refs.add(("Secret", s["secret"].get("secretName") or s["secret"].get("name", "")))
        return refs

    def claim_dir(self, namespace: str, claim: str) -> Path:
        return self.state_dir / "volumes" / namespace / claim

    async def prepare(self, pod: Obj, pod_dir: Path, pod_ip: str, host_ip: str) -> dict[str, Path]:
        """Materialise every volume; returns volume name -> host path. Raises ConfigError while a
        referenced object is missing (the caller retries, as a kubelet does)."""
        ns = pod["metadata"]["namespace"]
        paths: dict[str, Path] = {}
        for v in pod["spec"].get("volumes", []):
            name = v["name"]
            if "emptyDir" in v:
                paths[name] = pod_dir / "volumes" / name
                paths[name].mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                if await self.fetch("PersistentVolumeClaim", ns, claim) is None:
                    raise ConfigError(f"persistentvolumeclaim {claim!r} not found")
                paths[name] = self.claim_dir(ns, claim)
                paths[name].mkdir(parents=True, exist_ok=True)
            elif "hostPath" in v:
                hp = v["hostPath"]
                p = Path(hp["path"])
                if hp.get("type") == "DirectoryOrCreate":
                    p.mkdir(parents=True, exist_ok=True)
                elif hp.get("type") == "FileOrCreate" and not p.exists():
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.touch()
                elif not p.exists():
                    raise ConfigError(f"hostPath {p} does not exist (volume {name!r})")
                paths[name] = p
            elif any(k in v for k in FILE_VOLUMES):
                paths[name] = pod_dir / "volumes" / name
            else:
                kinds = sorted(set(v) - {"name"})
                raise ConfigError(f"volume {name!r}: type {kinds} is not supported by the local executor")
        await self.refresh(pod, pod_dir, pod_ip, host_ip, strict=True)
        return paths

    async def refresh(
        self, pod: Obj, pod_dir: Path, pod_ip: str, host_ip: str, strict: bool = False
    ) -> list[str]:
        """Rewrite the file-backed volumes whose content changed; returns their names. A missing
        optional-less object raises in `strict` mode (start) and keeps the old files otherwise."""
        changed: list[str] = []
        for v in pod["spec"].get("volumes", []):
            if not any(k in v for k in FILE_VOLUMES):
                continue
            try:
                files = await self._files(pod, v, pod_ip, host_ip)
            except ConfigError:
                if strict:
                    raise
                continue
            if write_atomic(pod_dir / "volumes" / v["name"], files):
                changed.append(v["name"])
        return changed

    async def _files(self, pod: Obj, v: Obj, pod_ip: str, host_ip: str) -> dict[str, tuple[bytes, int]]:
        if "projected" in v:
            mode = v["projected"].get("defaultMode", 0o644)
            files: dict[str, tuple[bytes, int]] = {}
            for src in v["projected"].get("sources", []):
                files |= await self._source(pod, src, mode, pod_ip, host_ip)
            return files
        key = next(k for k in FILE_VOLUMES if k in v)
        src = dict(v[key])
        if key == "secret":
            src["name"] = src.get("secretName", "")
        return await self._source(pod, {key: src}, src.get("defaultMode", 0o644), pod_ip, host_ip)

    async def _source(
        self, pod: Obj, src: Obj, mode: int, pod_ip: str, host_ip: str
    ) -> dict[str, tuple[bytes, int]]:
        ns = pod["metadata"]["namespace"]
        if "configMap" in src or "secret" in src:
            kind, ref = ("ConfigMap", src["configMap"]) if "configMap" in src else ("Secret", src["secret"])
            obj = await self.fetch(kind, ns, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    return {}
                raise ConfigError(f"{kind.lower()} {ref['name']!r} not found")
            data = data_of(obj)
            items = ref.get("items")
            if not items:
                return {k: (d, mode) for k, d in data.items()}
            out: dict[str, tuple[bytes, int]] = {}
            for it in items:
                if it["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f"key {it['key']!r} not found in {kind.lower()} {ref['name']!r}")
                out[it["path"]] = (data[it["key"]], it.get("mode", mode))
            return out
        if "downwardAPI" in src:
            out = {}
            for it in src["downwardAPI"].get("items", []):
                if "fieldRef" in it:
                    value = field_value(pod, it["fieldRef"]["fieldPath"], pod_ip, host_ip)
                else:
                    ref = it["resourceFieldRef"]
                    ctr = next(
                        (c for c in pod["spec"]["containers"] if c["name"] == ref.get("containerName")), None
                    )
                    value = resource_value(ctr, ref, self.node_alloc)
                out[it["path"]] = (value.encode(), it.get("mode", mode))
            return out
        if "serviceAccountToken" in src:
            sat = src["serviceAccountToken"]
            token = await self._token(pod, sat.get("audience", ""), int(sat.get("expirationSeconds", 3600)))
            return {sat["path"]: (token, mode)}
        if "clusterTrustBundle" in src or "podCertificate" in src:
            raise ConfigError(f"projected source {sorted(src)} is not supported by the local executor")
        return {}

    async def _token(self, pod: Obj, audience: str, seconds: int) -> bytes:
        meta = pod["metadata"]
        key = (meta["uid"], audience, str(seconds))
        cached = self._tokens.get(key)
        if cached and time.time() < cached[1]:
            return cached[0]
        sa = pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            resp = await self.api.request(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body
            )
        except ApiError as e:
            raise ConfigError(f"token request for serviceaccount {sa!r} failed: {e}") from e
        token = str(resp["status"]["token"]).encode()
        self._tokens[key] = (token, time.time() + 0.8 * seconds)  # refresh at 80% of the lifetime
        return token

    def forget(self, pod_uid: str) -> None:
        for key in [k for k in self._tokens if k[0] == pod_uid]:
            del self._tokens[key]
