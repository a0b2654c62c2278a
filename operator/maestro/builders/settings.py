"""Operator settings that shape generated workloads (images, placement, endpoints).

Read with pydantic-settings from an env mapping: a field's variable is `MAESTRO_` + its name in
capitals (placement for Jobs: MAESTRO_JOB_*), its default is the field's, written once. `Settings()`
is the defaults (plus keyword overrides) and never looks at `os.environ`, so builders stay pure: the
controllers read the environment once at start-up (`OperatorConfig.from_env`) and pass it down.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from maestro.api.deployment import DEFAULT_VLLM_IMAGE

DEFAULT_WORKER_IMAGE = "ghcr.io/maestro-llmops/maestro-worker:0.1.0"
DEFAULT_SIDECAR_IMAGE = "ghcr.io/maestro-llmops/maestro-sidecar:0.1.0"
PROGRESS_AUDIENCE = "maestro-progress"
ENV_PREFIX = "MAESTRO_"


class _EnvMapping(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env_vars = {k if self.case_sensitive else k.lower(): v for k, v in env.items()}


class EnvSettings(BaseSettings):
    """Base of the operator's process settings: `MAESTRO_*` variables from a mapping, nothing implicit.

    An empty variable means "not set" (the default applies), except for the fields in `keep_empty`,
    where empty is a value of its own. Nested models read `<PREFIX><FIELD>_<SUBFIELD>` (see
    `Placement`). Values are never JSON-decoded implicitly: fields that take JSON parse it
    themselves, so an error names the variable and says what is wrong with it.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        enable_decoding=False,
        extra="ignore",
        frozen=True,
        validate_by_name=True,
    )

    #: Fields whose empty variable is kept as an empty string instead of meaning "use the default".
    keep_empty: ClassVar[frozenset[str]] = frozenset()
    #: Fields no variable sets (programmatic only).
    not_from_env: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment only through from_env: constructing stays pure

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "" and info.field_name is not None and info.field_name not in cls.keep_empty:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """The settings the variables in `env` (default: the process's) describe, plus `overrides`.

        Raises ValueError naming the variable that is wrong and why.
        """
        env = os.environ if env is None else env
        values = {k: v for k, v in _EnvMapping(cls, env)().items() if k not in cls.not_from_env}
        try:
            return cls(**{**values, **overrides})
        except ValidationError as exc:
            raise ValueError(cls._describe(exc, env)) from None

    @classmethod
    def _describe(cls, exc: ValidationError, env: Mapping[str, str]) -> str:
        """The first error as `VARIABLE[index]: message`, the value shown when it is not a JSON one."""
        err = exc.errors(include_url=False)[0]
        loc = [str(p) for p in err["loc"]]
        if not loc:
            return f"{cls.__name__}: {err['msg']}"
        field = cls.model_fields.get(loc[0])
        alias = field.validation_alias if field is not None else None
        parts = [alias if isinstance(alias, str) else ENV_PREFIX + loc[0]]
        rest = loc[1:]
        if (
            field is not None
            and isinstance(field.annotation, type)
            and issubclass(field.annotation, BaseModel)
        ):
            parts += rest[:1]  # a nested model's field is a variable of its own
            rest = rest[1:]
        name = "_".join(parts).upper() + "".join(f"[{p}]" for p in rest)
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, ValueError):  # our own parsers: the message says what is wrong
            return f"{name} {cause}"
        shown = f"={env[name]!r}" if name in env else ""
        return f"{name}{shown}: {err['msg']}"


def _json(kind: type, what: str) -> Callable[[Any], Any]:
    """A before-validator for a field given as JSON text in one variable."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"must be JSON ({e.msg} at character {e.pos})") from None
        if not isinstance(decoded, kind):
            raise ValueError(f"must be a JSON {what}, got {value[:80]!r}")
        return decoded

    return parse


class Placement(BaseModel):
    """Operator-wide scheduling defaults for one kind of workload (a node pool for training Jobs,
    another for serving). A spec's own `resources.nodeSelector` wins key by key; its tolerations are
    added to these. Each field is one JSON variable, e.g. MAESTRO_JOB_NODE_SELECTOR='{"pool": "gpu"}'."""

    model_config = ConfigDict(frozen=True)

    node_selector: dict[str, str] = Field(default_factory=dict, description="JSON object.")
    tolerations: tuple[dict[str, Any], ...] = Field((), description="JSON array of Kubernetes tolerations.")

    @field_validator("node_selector", mode="before")
    @classmethod
    def _selector(cls, value: Any) -> Any:
        value = _json(dict, "object")(value) if value != "" else {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("tolerations", mode="before")
    @classmethod
    def _tolerations(cls, value: Any) -> Any:
        return _json(list, "array")(value) if value != "" else ()


class Settings(EnvSettings):
    """What the builders need from the operator's deployment: images, placement, endpoints, storage.

    Variables: MAESTRO_WORKER_IMAGE, MAESTRO_SIDECAR_IMAGE, MAESTRO_VLLM_IMAGE, MAESTRO_JOB_NODE_SELECTOR,
    MAESTRO_JOB_TOLERATIONS, MAESTRO_SERVING_NODE_SELECTOR, MAESTRO_SERVING_TOLERATIONS,
    MAESTRO_PROGRESS_URL, MAESTRO_PROGRESS_AUDIENCE, MAESTRO_STORAGE_CLASS, MAESTRO_GUARD_LIMITS_REDIS_URL,
    MAESTRO_GUARD_LIMITS_REDIS_PASSWORD_SECRET, MAESTRO_GUARD_LIMITS_REDIS_PASSWORD_KEY, MAESTRO_TRACKING_URI,
    MAESTRO_TRACKING_EXPERIMENT, MAESTRO_TRACKING_CREDENTIALS_SECRET, MAESTRO_PROMETHEUS_URL,
    MAESTRO_ANALYSIS_WINDOW, MAESTRO_ANALYSIS_INTERVAL_SECONDS, MAESTRO_ANALYSIS_MIN_EFFECT,
    MAESTRO_CONSOLE_URL (the Helm chart sets them).
    """

    worker_image: str = Field(
        DEFAULT_WORKER_IMAGE, description="Image with `maestro data validate` and `maestro train`."
    )
    sidecar_image: str = Field(
        DEFAULT_SIDECAR_IMAGE, description="Image with `maestro guard` and `maestro monitor`."
    )
    vllm_image: str = Field(DEFAULT_VLLM_IMAGE, description="vLLM image when spec.runtime.image is not set.")
    jobs: Placement = Field(
        default_factory=Placement,
        validation_alias=f"{ENV_PREFIX}JOB",
        description="Where dataset and training Jobs run (MAESTRO_JOB_NODE_SELECTOR, _TOLERATIONS).",
    )
    serving: Placement = Field(
        default_factory=Placement,
        description="Where serving pods run (MAESTRO_SERVING_NODE_SELECTOR, _TOLERATIONS).",
    )
    progress_url: str = Field(
        "http://maestro-operator.maestro-system.svc:8090",
        description="Base URL training pods POST progress to; empty disables reporting.",
    )
    progress_audience: str = Field(
        PROGRESS_AUDIENCE, description="Audience of the projected token training pods present."
    )
    storage_class: str | None = Field(
        None, description="Storage class for claims the operator creates when the spec names none."
    )
    guard_limits_redis_url: str | None = Field(
        None,
        description="Redis every guard replica shares per-key rate limits through (redis://host:port/db, "
        "rediss:// for TLS); unset, each guard pod limits on its own.",
    )
    guard_limits_redis_password_secret: str | None = Field(
        None,
        description="Secret holding the Redis password, in each namespace that serves LLMDeployments; "
        "passed to the guards as a secretKeyRef (the operator never reads it).",
    )
    guard_limits_redis_password_key: str = Field("password", description="Data key of that Secret.")
    tracking_uri: str | None = Field(
        None,
        description="Default MLflow tracking server for LLMTrainingJobs without spec.tracking.uri "
        "(http(s)://, no credentials in it); unset: jobs are tracked only when their spec names a server.",
    )
    tracking_experiment: str | None = Field(
        None, description="Default MLflow experiment; unset: the job's namespace name."
    )
    tracking_credentials_secret: str | None = Field(
        None,
        description="Secret with MLFLOW_TRACKING_USERNAME/_PASSWORD or MLFLOW_TRACKING_TOKEN for the default "
        "server, in each namespace that trains; passed to trainers as secretKeyRefs (never read here).",
    )
    prometheus_url: str | None = Field(
        None,
        description="Prometheus HTTP API the operator reads variant statistics from (status.variants), "
        "e.g. http://prometheus.monitoring.svc:9090; unset: status.variants carries no statistics "
        "(condition Analyzed=False, PrometheusNotConfigured).",
    )
    analysis_window: str = Field(
        "1h",
        pattern=r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$",
        description="Window of the variant statistics (a Prometheus duration: 30m, 1h, 1d).",
    )
    analysis_interval_seconds: float = Field(
        60.0, ge=5, description="How often a deployment with spec.variants re-reads its statistics."
    )
    analysis_min_effect: float = Field(
        0.02,
        gt=0,
        lt=1,
        description="Smallest absolute difference of a variant's error/refusal rate from the baseline's "
        "worth detecting: what samplesNeeded is computed for.",
    )
    console_url: str | None = Field(
        None,
        description="The review console (maestro.workers.console) every LLMDeployment's monitor pushes "
        "review samples to, e.g. http://maestro-console.maestro-system.svc:8090 (the chart sets it with "
        "console.enabled); unset: monitors push nothing and get no console token.",
    )
    #: Extra labels on every generated pod (not configurable by env; for tests).
    extra_pod_labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("tracking_uri")
    @classmethod
    def _tracking_uri(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from maestro.api.training import _NO_USERINFO, TRACKING_URI_SCHEMES

        if not value.startswith(tuple(f"{s}://" for s in TRACKING_URI_SCHEMES)):
            raise ValueError("must be an http:// or https:// URL (e.g. http://mlflow.mlflow.svc:5000)")
        if not re.match(_NO_USERINFO, value):
            raise ValueError("must not carry credentials (user:password@); use the credentials Secret")
        return value

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                "must be an http:// or https:// URL (e.g. http://prometheus.monitoring.svc:9090)"
            )
        if not re.match(r"^[a-z]+://[^/@]*$|^[a-z]+://[^/@]*/", value):
            raise ValueError("must not carry credentials (user:password@)")
        return value.rstrip("/")

    @field_validator("console_url")
    @classmethod
    def _console_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.match(r"^https?://[^/@]+(/.*)?$", value):
            raise ValueError(
                "must be an http:// or https:// URL without credentials "
                "(e.g. http://maestro-console.maestro-system.svc:8090)"
            )
        return value.rstrip("/")

    @field_validator("guard_limits_redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "must be a redis://, rediss:// or unix:// URL (e.g. redis://redis.infra.svc:6379/0)"
            )
        return value

    keep_empty: ClassVar[frozenset[str]] = frozenset({"progress_url"})
    not_from_env: ClassVar[frozenset[str]] = frozenset({"extra_pod_labels"})
