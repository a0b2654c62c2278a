"""Operator settings that shape generated workloads (images, placement, endpoints).

A frozen dataclass built from an env mapping, so builders stay pure: the controllers read
`os.environ` once at start-up and pass the result down.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_WORKER_IMAGE = "ghcr.io/maestro-llmops/maestro-worker:0.1.0"
DEFAULT_SIDECAR_IMAGE = "ghcr.io/maestro-llmops/maestro-sidecar:0.1.0"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.33.0"
PROGRESS_AUDIENCE = "maestro-progress"


@dataclass(frozen=True)
class Placement:
    """Operator-wide scheduling defaults for one kind of workload (a node pool for training Jobs,
    another for serving). A spec's own `resources.nodeSelector` wins key by key; its tolerations are
    added to these."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str) -> Placement:
        selector = _json_env(env, f"{prefix}_NODE_SELECTOR", dict)
        tolerations = _json_env(env, f"{prefix}_TOLERATIONS", list)
        return cls(
            {str(k): str(v) for k, v in (selector or {}).items()},
            tuple(dict(t) for t in tolerations or []),
        )


def _json_env(env: Mapping[str, str], name: str, kind: type) -> Any:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name} must be JSON ({e.msg} at character {e.pos})") from e
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be a JSON {'object' if kind is dict else 'array'}, got {raw[:80]!r}")
    return value


@dataclass(frozen=True)
class Settings:
    #: Image with `maestro data validate` and `maestro train` (env MAESTRO_WORKER_IMAGE).
    worker_image: str = DEFAULT_WORKER_IMAGE
    #: Image with `maestro guard` and `maestro monitor` (env MAESTRO_SIDECAR_IMAGE).
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    #: vLLM image when spec.runtime.image is not set (env MAESTRO_VLLM_IMAGE).
    vllm_image: str = DEFAULT_VLLM_IMAGE
    #: Where dataset and training Jobs run (env MAESTRO_JOB_NODE_SELECTOR / MAESTRO_JOB_TOLERATIONS, JSON).
    jobs: Placement = field(default_factory=Placement)
    #: Where serving pods run (env MAESTRO_SERVING_NODE_SELECTOR / MAESTRO_SERVING_TOLERATIONS, JSON).
    serving: Placement = field(default_factory=Placement)
    #: Base URL training pods POST progress to (env MAESTRO_PROGRESS_URL); empty disables reporting.
    progress_url: str = "http://maestro-operator.maestro-system.svc:8090"
    #: Audience of the projected token training pods present (env MAESTRO_PROGRESS_AUDIENCE).
    progress_audience: str = PROGRESS_AUDIENCE
    #: Storage class for claims the operator creates when the spec names none (env MAESTRO_STORAGE_CLASS).
    storage_class: str | None = None
    #: Extra labels on every generated pod (not configurable by env; for tests).
    extra_pod_labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            worker_image=env.get("MAESTRO_WORKER_IMAGE") or DEFAULT_WORKER_IMAGE,
            sidecar_image=env.get("MAESTRO_SIDECAR_IMAGE") or DEFAULT_SIDECAR_IMAGE,
            vllm_image=env.get("MAESTRO_VLLM_IMAGE") or DEFAULT_VLLM_IMAGE,
            jobs=Placement.from_env(env, "MAESTRO_JOB"),
            serving=Placement.from_env(env, "MAESTRO_SERVING"),
            progress_url=env.get("MAESTRO_PROGRESS_URL", cls.progress_url),
            progress_audience=env.get("MAESTRO_PROGRESS_AUDIENCE") or PROGRESS_AUDIENCE,
            storage_class=env.get("MAESTRO_STORAGE_CLASS") or None,
        )
