"""Operator settings that shape generated workloads (images, local executor, endpoints).

A frozen dataclass built from an env mapping, so builders stay pure: the controllers read
`os.environ` once at start-up and pass the result down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_WORKER_IMAGE = "ghcr.io/maestro-llmops/maestro-worker:0.1.0"
DEFAULT_SIDECAR_IMAGE = "ghcr.io/maestro-llmops/maestro-sidecar:0.1.0"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.33.0"
LOCAL_EXECUTOR_NODE = "maestro-local"
PROGRESS_AUDIENCE = "maestro-progress"


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on", "all"}


@dataclass(frozen=True)
class Settings:
    #: Image with `maestro data validate` and `maestro train` (env MAESTRO_WORKER_IMAGE).
    worker_image: str = DEFAULT_WORKER_IMAGE
    #: Image with `maestro guard` and `maestro monitor` (env MAESTRO_SIDECAR_IMAGE).
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    #: vLLM image when spec.runtime.image is not set (env MAESTRO_VLLM_IMAGE).
    vllm_image: str = DEFAULT_VLLM_IMAGE
    #: Mark worker pods for the local executor (env MAESTRO_LOCAL_EXECUTOR=true, or =jobs for workers only).
    local_executor: bool = False
    #: Mark serving pods too (MAESTRO_LOCAL_EXECUTOR=true; not with =jobs).
    local_executor_serving: bool = False
    #: Node the local executor runs pods on (env MAESTRO_LOCAL_EXECUTOR_NODE).
    local_executor_node: str = LOCAL_EXECUTOR_NODE
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
            local_executor=_flag(env.get("MAESTRO_LOCAL_EXECUTOR"))
            or env.get("MAESTRO_LOCAL_EXECUTOR") == "jobs",
            local_executor_serving=_flag(env.get("MAESTRO_LOCAL_EXECUTOR")),
            local_executor_node=env.get("MAESTRO_LOCAL_EXECUTOR_NODE") or LOCAL_EXECUTOR_NODE,
            progress_url=env.get("MAESTRO_PROGRESS_URL", cls.progress_url),
            progress_audience=env.get("MAESTRO_PROGRESS_AUDIENCE") or PROGRESS_AUDIENCE,
            storage_class=env.get("MAESTRO_STORAGE_CLASS") or None,
        )
