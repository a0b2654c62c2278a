"""The async API client: raw JSON dicts in and out, server-side apply under the `maestro` manager.

Manifests stay plain dicts end to end (builders produce them, the server returns them), so there is
no model round-trip per request. Configuration and authentication (kubeconfig, in-cluster service
account, exec plugins, token refresh) come from the official `kubernetes` client, through k8s.config.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Mapping
from typing import Any

import httpx2 as httpx
from kubernetes.client import Configuration

from maestro.k8s.config import ConfigAuth, explicit_proxy, load_config, ssl_context
from maestro.k8s.errors import ApiError, NotFound, from_status
from maestro.k8s.resources import ResourceType, resource_type

__all__ = ["FIELD_MANAGER", "Kube", "load_config"]

#: The one field manager every write uses, so ownership of fields is unambiguous.
FIELD_MANAGER = "maestro"

Obj = dict[str, Any]
ObjList = list[Obj]
#: 429 answers (throttling, storage initialising) are retried this often, honouring Retry-After.
RETRIES_429 = 5


class Kube:
    """A small typed facade over the REST API (one connection pool per process)."""

    def __init__(
        self, config: Configuration | None = None, *, timeout: float = 15.0, max_connections: int = 64
    ) -> None:
        cfg = load_config() if config is None else config
        self._http = httpx.AsyncClient(
            base_url=cfg.host,
            verify=ssl_context(cfg),
            auth=ConfigAuth(cfg),
            proxy=explicit_proxy(cfg),
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        # kubeconfig `tls-server-name`: the name the server's certificate is checked against (and SNI)
        self._extensions = {"sni_hostname": cfg.tls_server_name} if cfg.tls_server_name else None
        self.config = cfg

    async def close(self) -> None:
        await self._http.aclose()

    # -- plumbing ------------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = content_type
        for attempt in range(RETRIES_429 + 1):
            try:
                resp = await self._http.request(
                    method, path, content=content, params=params, headers=headers, extensions=self._extensions
                )
            except httpx.HTTPError as exc:  # connection refused, timeouts: transient by nature
                raise ApiError(0, "Unreachable", f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
            if resp.status_code != 429 or attempt == RETRIES_429:
                break
            # Priority & fairness throttling or a CRD's storage still initialising: the server says when.
            await asyncio.sleep(min(float(resp.headers.get("Retry-After") or 1), 5.0))
        if resp.status_code >= 400:
            try:
                payload = resp.json()
            except ValueError:
                payload = {"message": resp.text[:500]}
            raise from_status(resp.status_code, payload if isinstance(payload, dict) else None)
        if not resp.content:
            return {}
        data = resp.json()
        return data if isinstance(data, dict) else {"items": data}

    @staticmethod
    def _type(api_version: str, kind: str) -> ResourceType:
        return resource_type(api_version, kind)

    # -- reads ---------------------------------------------------------------------------------
    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", self._type(api_version, kind).item(name, namespace))
        except NotFound:
            return None

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        label_selector: str | None = None,
    ) -> ObjList:
        params: dict[str, str] = {}
        selector = label_selector or ",".join(f"{k}={v}" for k, v in (labels or {}).items())
        if selector:
            params["labelSelector"] = selector
        data = await self.request("GET", self._type(api_version, kind).collection(namespace), params=params)
        items: builtins.list[Obj] = data.get("items") or []
        for item in items:  # list items come without apiVersion/kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    # -- writes --------------------------------------------------------------------------------
    async def apply(self, manifest: Obj, *, force: bool = True) -> Obj:
        """Server-side apply: create or converge the fields `maestro` owns, never touch the others."""
        rt = self._type(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        return await self.request(
            "PATCH",
            rt.item(meta["name"], meta.get("namespace")),
            body=manifest,
            params={"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"},
            content_type="application/apply-patch+yaml",
        )

    async def create(self, manifest: Obj) -> Obj:
        rt = self._type(manifest["apiVersion"], manifest["kind"])
        return await self.request(
            "POST",
            rt.collection(manifest["metadata"].get("namespace")),
            body=manifest,
            params={"fieldManager": FIELD_MANAGER},
        )

    async def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str | None, status: Obj
    ) -> Obj:
        """JSON merge patch of the status subresource (`None` values delete fields)."""
        rt = self._type(api_version, kind)
        return await self.request(
            "PATCH",
            rt.item(name, namespace) + "/status",
            body={"status": status},
            params={"fieldManager": FIELD_MANAGER},
            content_type="application/merge-patch+json",
        )

    async def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        body: Obj,
        *,
        subresource: str = "",
    ) -> Obj:
        rt = self._type(api_version, kind)
        path = rt.item(name, namespace) + (f"/{subresource}" if subresource else "")
        return await self.request(
            "PATCH",
            path,
            body=body,
            params={"fieldManager": FIELD_MANAGER},
            content_type="application/merge-patch+json",
        )

    async def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str = "Background",
    ) -> bool:
        """Delete; False when it was already gone (deletion is idempotent)."""
        try:
            await self.request(
                "DELETE",
                self._type(api_version, kind).item(name, namespace),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
            )
        except NotFound:
            return False
        return True

    # -- helpers -------------------------------------------------------------------------------
    async def token_review(self, token: str, audiences: builtins.list[str]) -> Obj:
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        }
        result = await self.request(
            "POST", self._type("authentication.k8s.io/v1", "TokenReview").collection(None), body=review
        )
        status: Obj = result.get("status") or {}
        return status

    async def crd_exists(self, name: str) -> bool:
        return await self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name) is not None

    async def gather(self, *manifests: Obj) -> ObjList:
        """Apply several independent objects concurrently (one round-trip of latency, not n)."""
        return list(await asyncio.gather(*(self.apply(m) for m in manifests)))
