"""Operator process settings (ports, webhook, namespaces), read once from the environment.

| env | default | what |
|---|---|---|
| MAESTRO_METRICS_PORT | 8080 | `/metrics`, `/healthz`, `/readyz` (0 disables) |
| MAESTRO_PROGRESS_PORT | 8090 | training progress endpoint `POST /v1/progress/{ns}/{name}` (0 disables) |
| MAESTRO_PROGRESS_URL | http://maestro-operator.maestro-system.svc:8090 | base URL training pods use |
| MAESTRO_WEBHOOK | on | serve the validating webhook (`off` disables) |
| MAESTRO_WEBHOOK_PORT, _ADDR, _HOST | 9443, 0.0.0.0 | port, address; `_HOST`: URL host for the apiserver |
| MAESTRO_WEBHOOK_SERVICE | - | `namespace/name` of the operator Service the apiserver calls |
| MAESTRO_WEBHOOK_CERT_DIR | temp dir | where the self-signed serving certificate is written |
| MAESTRO_NAMESPACE | maestro-system | the operator's namespace |
| MAESTRO_WORKERS | 16 | concurrent reconciles |
| MAESTRO_RESYNC_SECONDS | 600 | full re-apply of every object (repairs children deleted by hand) |
| MAESTRO_NAMESPACES | - | comma-separated namespaces to manage (set by `maestro run -n`); default all |
| MAESTRO_POLL_SECONDS | 30 | re-check interval for waits no watch event ends (missing claim, crash loop) |
| MAESTRO_*_IMAGE, MAESTRO_JOB_NODE_SELECTOR, ... | | see `maestro.builders.settings.Settings` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from maestro.builders.settings import Settings


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{key}={raw!r} is not an integer") from None


def _settings(env: Mapping[str, str]) -> Settings:
    try:
        return Settings.from_env(env)
    except ValueError as e:
        raise SystemExit(str(e)) from None


@dataclass(frozen=True)
class OperatorConfig:
    settings: Settings = field(default_factory=Settings)
    metrics_port: int = 8080
    progress_port: int = 8090
    webhook: bool = True
    webhook_port: int = 9443
    webhook_addr: str = "0.0.0.0"
    webhook_host: str | None = None
    webhook_service: str | None = None
    webhook_cert_dir: str | None = None
    namespace: str = "maestro-system"
    workers: int = 16
    resync_seconds: float = 600.0
    #: Namespaces the operator manages (empty: all); `maestro run -n` sets MAESTRO_NAMESPACES.
    namespaces: tuple[str, ...] = ()
    poll_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        return cls(
            settings=_settings(env),
            metrics_port=_int(env, "MAESTRO_METRICS_PORT", 8080),
            progress_port=_int(env, "MAESTRO_PROGRESS_PORT", 8090),
            webhook=(env.get("MAESTRO_WEBHOOK", "on").lower() not in ("off", "false", "0", "no")),
            webhook_port=_int(env, "MAESTRO_WEBHOOK_PORT", 9443),
            webhook_addr=env.get("MAESTRO_WEBHOOK_ADDR") or "0.0.0.0",
            webhook_host=env.get("MAESTRO_WEBHOOK_HOST") or None,
            webhook_service=env.get("MAESTRO_WEBHOOK_SERVICE") or None,
            webhook_cert_dir=env.get("MAESTRO_WEBHOOK_CERT_DIR") or None,
            namespace=env.get("MAESTRO_NAMESPACE") or "maestro-system",
            workers=max(1, _int(env, "MAESTRO_WORKERS", 16)),
            resync_seconds=float(_int(env, "MAESTRO_RESYNC_SECONDS", 600)),
            poll_seconds=float(_int(env, "MAESTRO_POLL_SECONDS", 30)),
            namespaces=tuple(n for n in (env.get("MAESTRO_NAMESPACES") or "").split(",") if n),
        )
