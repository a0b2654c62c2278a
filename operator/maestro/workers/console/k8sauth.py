"""Who is asking, and may they: TokenReview and SubjectAccessReview over the API server's REST API.

The console never stores or forwards a user's token: it asks the API server who the token belongs
to (TokenReview), then, with its own service account, whether that user may do what they ask
(SubjectAccessReview with the user's name and groups). So the console's RBAC *is* Kubernetes RBAC,
and a RoleBinding change shows up within `cache_ttl` seconds.

Positive answers are cached briefly (denials never: a grant takes effect at once); the token cache
is keyed by the token's sha256, and no token is ever logged. The console's own token is re-read from
its file on each call, because projected service-account tokens rotate.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from maestro.workers.console import contract as c

log = logging.getLogger(__name__)

TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
SA_PREFIX = "system:serviceaccount:"


class AuthUnavailable(RuntimeError):
    """The API server could not answer (down, or the console's own RBAC is missing): a 503, not a 403."""


@dataclass(frozen=True)
class Identity:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()

    @property
    def service_account_namespace(self) -> str | None:
        """The namespace of a `system:serviceaccount:<ns>:<name>` user; None for anyone else."""
        if not self.username.startswith(SA_PREFIX):
            return None
        ns, _, name = self.username[len(SA_PREFIX) :].partition(":")
        return ns if ns and name else None


class _TTLCache:
    def __init__(self, ttl: float, size: int = 4096) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> Any:
        hit = self._items.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._items[key]
            return None
        return hit[1]

    def put(self, key: Any, value: Any) -> None:
        if self.ttl <= 0:
            return
        self._items[key] = (time.monotonic() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class KubeAuth:
    """TokenReview + SubjectAccessReview client (see the module docstring)."""

    def __init__(
        self,
        api_server: str,
        token: Callable[[], str],
        ca_file: str | None = None,
        cache_ttl: float = c.DEFAULT_AUTH_CACHE_TTL,
        timeout: float = 5.0,
    ) -> None:
        self.api_server = api_server.rstrip("/")
        self._token = token
        self._ssl: ssl.SSLContext | bool = True
        if ca_file:
            try:
                self._ssl = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as e:
                raise AuthUnavailable(
                    f"cannot load the API server's CA {ca_file}: {e}; mount the service-account CA or set "
                    f"{c.ENV_API_CA_FILE} (empty: the system CAs)"
                ) from e
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._tokens = _TTLCache(cache_ttl)
        self._access = _TTLCache(cache_ttl)
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def token_file(path: str) -> Callable[[], str]:
        """A token source reading `path` on each call (rotated projected tokens stay valid)."""

        def read() -> str:
            try:
                with open(path, encoding="utf-8") as fh:
                    return fh.read().strip()
            except OSError as e:
                raise AuthUnavailable(
                    f"cannot read the console's API token {path}: {e.strerror}; mount the service-account "
                    f"token or set {c.ENV_API_TOKEN_FILE}"
                ) from e

        return read

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Authorization": f"Bearer {await asyncio.to_thread(self._token)}"}
        try:
            async with self._session.post(
                self.api_server + path, json=body, headers=headers, ssl=self._ssl
            ) as resp:
                if resp.status in (401, 403):
                    raise AuthUnavailable(
                        f"the API server refused the console's own credentials for {path} "
                        f"(HTTP {resp.status}): bind its service account to system:auth-delegator "
                        "(create tokenreviews and subjectaccessreviews)"
                    )
                if resp.status >= 300:
                    raise AuthUnavailable(f"the API server answered {path} with HTTP {resp.status}")
                data: dict[str, Any] = await resp.json(content_type=None)
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise AuthUnavailable(f"cannot reach the API server at {self.api_server}: {e}") from e

    async def review_token(self, token: str, audiences: Sequence[str] = ()) -> Identity | None:
        """The user a bearer token belongs to, or None when the API server does not accept it.

        With `audiences`, the token must be bound to one of them (spec.audiences): the monitors' pushes
        carry a projected token for the console only. The answer must name one of them in
        status.audiences too; an authenticator that ignores audiences answers with none, and a token it
        accepted that way is valid for the API server, not for us.
        """
        if not token:
            return None
        wanted = tuple(audiences)
        key = (hashlib.sha256(token.encode()).digest(), wanted)
        hit: Identity | None = self._tokens.get(key)
        if hit is not None:
            return hit
        spec: dict[str, Any] = {"token": token}
        if wanted:
            spec["audiences"] = list(wanted)
        data = await self._post(
            TOKEN_REVIEW_PATH,
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
        )
        status = data.get("status") or {}
        if not status.get("authenticated"):
            return None
        if wanted and not set(wanted) & set(status.get("audiences") or ()):
            log.warning(
                "TokenReview accepted a token but not for audience %s (answered %s): refused",
                ",".join(wanted),
                status.get("audiences") or "none",
            )
            return None
        user = status.get("user") or {}
        name = user.get("username")
        if not isinstance(name, str) or not name:
            return None
        identity = Identity(name, str(user.get("uid") or ""), tuple(str(g) for g in user.get("groups") or ()))
        self._tokens.put(key, identity)
        return identity

    async def allowed(
        self, who: Identity, verb: str, namespace: str, name: str = "", subresource: str = c.RBAC_SUBRESOURCE
    ) -> bool:
        """SubjectAccessReview: may `who` `verb` llmdeployments/<subresource> [name] in `namespace`?"""
        key = (who, verb, namespace, name, subresource)
        if self._access.get(key):
            return True
        attrs: dict[str, Any] = {
            "namespace": namespace,
            "verb": verb,
            "group": c.RBAC_GROUP,
            "resource": c.RBAC_RESOURCE,
        }
        if subresource:
            attrs["subresource"] = subresource
        if name:
            attrs["name"] = name
        spec: dict[str, Any] = {"resourceAttributes": attrs, "user": who.username, "groups": list(who.groups)}
        if who.uid:
            spec["uid"] = who.uid
        data = await self._post(
            SAR_PATH,
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
        )
        ok = bool((data.get("status") or {}).get("allowed"))
        if ok:
            self._access.put(key, True)
        return ok
