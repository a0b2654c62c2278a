"""A small async client for the API server, authenticated like a kubelet with the kubeconfig's
client certificate. Only the calls the executor makes: get/list/create/patch/delete and watch."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

log = logging.getLogger("maestro.executor")

Obj = dict[str, Any]
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


def _ssl_from_kubeconfig(path: Path, keep_dir: Path) -> tuple[str, ssl.SSLContext]:
    cfg = yaml.safe_load(path.read_text())
    ctx_name = cfg.get("current-context")
    context = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == context["user"])
    keep_dir.mkdir(parents=True, exist_ok=True)
    keep_dir.chmod(0o700)

    def material(key: str) -> str:
        if f"{key}-data" in cluster or f"{key}-data" in user:
            data = base64.b64decode((cluster if f"{key}-data" in cluster else user)[f"{key}-data"])
            out = keep_dir / key
            out.write_bytes(data)
            out.chmod(0o600)
            return str(out)
        value: str = (cluster if key in cluster else user)[key]
        return value

    ctx = ssl.create_default_context(cafile=material("certificate-authority"))
    if "client-certificate-data" in user or "client-certificate" in user:
        ctx.load_cert_chain(material("client-certificate"), material("client-key"))
    return str(cluster["server"]).rstrip("/"), ctx


class Api:
    def __init__(self, kubeconfig: Path, cert_dir: Path | None = None) -> None:
        keep = cert_dir or Path(tempfile.mkdtemp(prefix="maestro-executor-"))
        self.server, self._ssl = _ssl_from_kubeconfig(kubeconfig, keep)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Api(...)`"
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Obj:
        data = json.dumps(body) if body is not None else None
        async with self.session.request(
            method,
            self.server + path,
            data=data,
            params=params,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise ApiError(resp.status, method, path, text)
            out: Obj = json.loads(text) if text else {}
            return out

    async def get(self, path: str, params: dict[str, str] | None = None) -> Obj | None:
        try:
            return await self.request("GET", path, params=params)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def patch(self, path: str, body: Obj, content_type: str = MERGE) -> Obj:
        return await self.request("PATCH", path, body, content_type)

    async def watch(self, path: str, params: dict[str, str] | None = None) -> AsyncIterator[tuple[str, Obj]]:
        """List, then watch from the list's resourceVersion, forever; relists when the watch expires.
        Yields ("SYNC", list) after every (re)list so callers can drop what vanished meanwhile."""
        params = dict(params or {})
        while True:
            try:
                listing = await self.request("GET", path, params=params)
                yield "SYNC", listing
                rv = listing["metadata"]["resourceVersion"]
                while True:
                    q = {
                        **params,
                        "watch": "1",
                        "resourceVersion": rv,
                        "allowWatchBookmarks": "true",
                        "timeoutSeconds": "300",
                    }
                    async with self.session.get(
                        self.server + path, params=q, timeout=aiohttp.ClientTimeout(total=None, sock_read=330)
                    ) as resp:
                        if resp.status >= 400:
                            raise ApiError(resp.status, "WATCH", path, await resp.text())
                        async for line in resp.content:
                            if not line.strip():
                                continue
                            ev = json.loads(line)
                            if ev["type"] == "ERROR":
                                raise ApiError(
                                    int(ev["object"].get("code", 500)),
                                    "WATCH",
                                    path,
                                    ev["object"].get("message", ""),
                                )
                            rv = ev["object"]["metadata"].get("resourceVersion", rv)
                            if ev["type"] != "BOOKMARK":
                                yield ev["type"], ev["object"]
            except asyncio.CancelledError:
                raise
            except (TimeoutError, ApiError, aiohttp.ClientError, ValueError) as e:
                if not (isinstance(e, ApiError) and e.status == 410):
                    log.warning("watch %s: %s; relisting in 1s", path, e)
                    await asyncio.sleep(1)
