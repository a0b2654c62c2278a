"""Operator process settings (ports, webhook, namespaces), read once from the environment.

pydantic-settings, like `maestro.builders.settings.Settings` (which this carries as `settings`): each
field is the variable `MAESTRO_` + its name in capitals, and its default and meaning are on the field.

MAESTRO_METRICS_PORT, MAESTRO_PROGRESS_PORT, MAESTRO_WEBHOOK (on/off), MAESTRO_WEBHOOK_PORT,
MAESTRO_WEBHOOK_ADDR, MAESTRO_WEBHOOK_HOST, MAESTRO_WEBHOOK_SERVICE, MAESTRO_WEBHOOK_CERT_DIR,
MAESTRO_NAMESPACE, MAESTRO_WORKERS, MAESTRO_RESYNC_SECONDS, MAESTRO_NAMESPACES, MAESTRO_POLL_SECONDS;
MAESTRO_*_IMAGE, MAESTRO_PROGRESS_URL, MAESTRO_JOB_NODE_SELECTOR, ...: see `Settings`.
An empty variable is the same as an unset one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, field_validator

from maestro.builders.settings import EnvSettings, Settings


class OperatorConfig(EnvSettings):
    settings: Settings = Field(
        default_factory=Settings, description="What shapes the generated workloads (read from the same env)."
    )
    metrics_port: int = Field(8080, description="`/metrics`, `/healthz`, `/readyz` (0 disables).")
    progress_port: int = Field(
        8090, description="Training progress endpoint `POST /v1/progress/{ns}/{name}` (0 disables)."
    )
    webhook: bool = Field(True, description="Serve the validating webhook (`off` disables).")
    webhook_port: int = Field(9443, description="Port of the webhook server.")
    webhook_addr: str = Field("0.0.0.0", description="Address the webhook server listens on.")
    webhook_host: str | None = Field(None, description="Host in the webhook URL the apiserver calls.")
    webhook_service: str | None = Field(
        None, description="`namespace/name` of the operator Service the apiserver calls."
    )
    webhook_cert_dir: str | None = Field(
        None, description="Where the self-signed serving certificate is written (default: a temp dir)."
    )
    namespace: str = Field("maestro-system", description="The operator's own namespace.")
    workers: int = Field(16, description="Concurrent reconciles (at least 1).")
    resync_seconds: float = Field(
        600.0, description="Full re-apply of every object (repairs children deleted by hand)."
    )
    #: Namespaces the operator manages (empty: all); `maestro run -n` sets MAESTRO_NAMESPACES.
    namespaces: tuple[str, ...] = Field((), description="Comma-separated namespaces to manage; default all.")
    poll_seconds: float = Field(
        30.0, description="Re-check interval for waits no watch event ends (missing claim, crash loop)."
    )

    not_from_env: ClassVar[frozenset[str]] = frozenset({"settings"})

    @field_validator("workers")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        return max(1, value)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return tuple(n for n in value.split(",") if n) if isinstance(value, str) else value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> OperatorConfig:
        """The process's (or `env`'s) configuration; a bad variable stops the operator, naming it."""
        try:
            settings = Settings.from_env(env)
            return super().from_env(env, **{"settings": settings, **overrides})
        except ValueError as e:
            raise SystemExit(str(e)) from None
