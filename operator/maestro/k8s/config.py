"""Where the API server is and how to authenticate, from the official `kubernetes` client's loaders.

kubeconfig (contexts, merged $KUBECONFIG lists, client certificates, tokens and token files, exec
credential plugins, the OIDC auth provider), the in-cluster service account and token refresh are the
official client's: it is the implementation Kubernetes maintains, and Kopf's login takes its credentials
from the same `load_config` (controllers.login), so the operator has one credential source. Maestro keeps
only the result, a `kubernetes.client.Configuration`, and turns it into what its own async transport
needs (k8s.client): a base URL, a TLS context, and an Authorization header read through the
Configuration's refresh hook, so rotated service-account tokens and expiring exec-plugin tokens are
picked up without a restart.

Only `kubernetes.config` and `kubernetes.client.Configuration` are used: the requests themselves go
through `k8s.client.Kube` (raw dicts, server-side apply, one async connection pool).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import AsyncGenerator, Generator

import httpx2 as httpx
import yaml
from kubernetes.client import Configuration
from kubernetes.config import ConfigException, load_incluster_config, load_kube_config

from maestro.k8s.errors import ApiError

#: Where kubectl looks when $KUBECONFIG is unset. Read at call time, not import time (the official
#: client's KUBE_CONFIG_DEFAULT_LOCATION freezes $KUBECONFIG when it is first imported).
DEFAULT_KUBECONFIG = "~/.kube/config"
#: How often the refresh hook is consulted at most. The official hooks renew an exec-plugin token
#: 5 minutes before it expires and re-read the in-cluster token file once a minute, so a few seconds
#: between looks never lets a token lapse, and requests in between pay nothing.
RECHECK_SECONDS = 5.0


def load_config(kubeconfig: str | os.PathLike[str] | None = None) -> Configuration:
    """The explicit kubeconfig if one is given; else the in-cluster service account when running in a
    pod; else $KUBECONFIG (a `:`-separated list, merged like kubectl does) or ~/.kube/config."""
    if kubeconfig:
        return _from_kubeconfig(os.fspath(kubeconfig))
    cfg = Configuration()
    try:
        load_incluster_config(client_configuration=cfg)
    except ConfigException as exc:
        not_in_cluster = f"not in a cluster ({exc})"
    else:
        return cfg
    return _from_kubeconfig(os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG, also=not_in_cluster)


def _from_kubeconfig(path: str, also: str = "") -> Configuration:
    cfg = Configuration()
    try:
        # persist_config=False: refreshed auth-provider tokens stay in memory; the operator never
        # rewrites a kubeconfig it was handed (often a read-only Secret mount).
        load_kube_config(config_file=path, client_configuration=cfg, persist_config=False)
    except (ConfigException, OSError, yaml.YAMLError) as exc:
        where = f"{also}; " if also else ""
        raise ApiError(
            0,
            "NoConfig",
            f"no usable Kubernetes configuration: {where}kubeconfig {path}: {_why(exc)}. "
            "Set KUBECONFIG to a valid kubeconfig, or run in a pod with a service account",
        ) from None
    return cfg


def _why(exc: Exception) -> str:
    """The loader's reason, except a YAML error's quoted snippet (it could be a line holding a token)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        return f"not valid YAML (line {line}: {exc.problem})"
    if isinstance(exc, yaml.YAMLError):
        return "not valid YAML"
    return str(exc)


def authorization(cfg: Configuration) -> str | None:
    """The Authorization header value ("Bearer …", or "Basic …" for a kubeconfig user/password), after
    the Configuration's refresh hook has run (it re-runs an exec plugin or re-reads a token file when
    due). May block (an exec plugin is a subprocess): async callers go through ConfigAuth."""
    header: str | None = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
    if header is None and cfg.username and cfg.password:
        header = cfg.get_basic_auth_token()
    return header


def ssl_context(cfg: Configuration) -> ssl.SSLContext:
    """Server verification against the cluster's CA (or the default trust store when the kubeconfig
    names none), plus the client certificate when the user authenticates with one."""
    if not cfg.verify_ssl:  # insecure-skip-tls-verify
        ctx = httpx.create_ssl_context(verify=False)
    elif cfg.ssl_ca_cert:  # the loaders hand even inline certificate-authority-data over as a file
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    else:
        ctx = httpx.create_ssl_context(verify=True, trust_env=True)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    return ctx


def explicit_proxy(cfg: Configuration) -> str | None:
    """The kubeconfig's `proxy-url`, if any. A proxy the official client merely copied from the
    environment is left to httpx (trust_env), which also honours NO_PROXY (the client does not)."""
    proxy: str | None = cfg.proxy
    if not proxy or proxy in {os.environ.get(name) for name in _PROXY_ENV}:
        return None
    return proxy


_PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class ConfigAuth(httpx.Auth):
    """Sets the Authorization header from a Configuration, refreshing it through the official hook.

    The hook is consulted at most every `recheck_seconds` (in a worker thread: an exec plugin is a
    subprocess, which must not stall the event loop), and once more after a 401 — then the request is
    retried once if that produced a different credential. Without a hook (a static token, client
    certificates) the header is read once. The token never appears in this object's repr.
    """

    def __init__(self, cfg: Configuration, *, recheck_seconds: float | None = None) -> None:
        self._cfg = cfg
        self._recheck = RECHECK_SECONDS if recheck_seconds is None else recheck_seconds
        self._refreshes = cfg.refresh_api_key_hook is not None
        self._header = authorization(cfg)
        self._due = time.monotonic() + self._recheck
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ConfigAuth(host={self._cfg.host!r}, refreshes={self._refreshes})"

    async def _current(self, *, force: bool = False) -> str | None:
        if self._refreshes and (force or time.monotonic() >= self._due):
            async with self._lock:
                if force or time.monotonic() >= self._due:
                    self._header = await asyncio.to_thread(authorization, self._cfg)
                    self._due = time.monotonic() + self._recheck
        return self._header

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        sent = await self._current()
        if sent:
            request.headers["Authorization"] = sent
        response = yield request
        if response.status_code == 401 and self._refreshes:
            fresh = await self._current(force=True)
            if fresh and fresh != sent:
                request.headers["Authorization"] = fresh
                yield request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """The synchronous flow (a sync httpx.Client): the hook runs inline, blocking is fine there."""
        if self._refreshes:
            self._header = authorization(self._cfg)
        if self._header:
            request.headers["Authorization"] = self._header
        yield request
