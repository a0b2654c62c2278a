"""LLMDeployment -> guard ConfigMap, Deployment (vLLM + guard + monitor), Service, NetworkPolicy,
PodDisruptionBudget, autoscaler (HPA or KEDA ScaledObject) and ServiceMonitor.

Replicas: the autoscaler targets the LLMDeployment's scale subresource, which writes
`spec.replicas`; the Deployment copies it. So exactly one writer decides replicas, and the operator
never fights an autoscaler over the child Deployment.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from maestro.api.common import API_VERSION
from maestro.api.deployment import DEFAULT_VLLM_IMAGE, LLMDeploymentSpec, ScalingMetric
from maestro.builders import guard_config, pods
from maestro.builders.meta import (
    ANNOTATION_CONFIG_DIGEST,
    ANNOTATION_POLICY,
    LABEL_DEPLOYMENT,
    ChildRef,
    child_name,
    object_meta,
)
from maestro.builders.settings import Settings
from maestro.workers.guard import contract as guard
from maestro.workers.monitor import contract as monitor

Obj = dict[str, Any]
COMPONENT = "serving"
VLLM_PORT = guard.UPSTREAM_PORT
GUARD_PORT = guard.DEFAULT_PORT
MONITOR_PORT = monitor.DEFAULT_PORT
MODEL_ROOT = "/mnt/maestro/models"
EVENTS_DIR = "/var/run/maestro"
API_GROUP_VERSION = API_VERSION
#: Label of the metrics Service (what scrape configurations select) and its port names.
METRICS_LABEL = "llmops.dev/metrics"
METRICS_PORT_NAME = "metrics"
GUARD_METRICS_PORT_NAME = "guard-metrics"
#: The projected token the monitor pushes review samples to the console with (settings.console_url).
CONSOLE_TOKEN_VOLUME = "console-token"
CONSOLE_TOKEN_FILE = f"{monitor.CONSOLE_TOKEN_DIR}/token"

#: HPA Pods-metric names (served by a Prometheus adapter) per scaling signal.
HPA_METRICS = {
    ScalingMetric.QUEUE_DEPTH: "vllm_num_requests_waiting",
    ScalingMetric.KV_CACHE_USAGE: "vllm_kv_cache_usage_perc",
    ScalingMetric.REQUESTS_PER_SECOND: "maestro_guard_requests_per_second",
}
#: PromQL per scaling signal for KEDA (per-replica average over the deployment's pods).
KEDA_QUERIES = {
    ScalingMetric.QUEUE_DEPTH: 'avg(vllm:num_requests_waiting{{namespace="{ns}",pod=~"{name}-.*"}})',
    ScalingMetric.KV_CACHE_USAGE: 'avg(vllm:kv_cache_usage_perc{{namespace="{ns}",pod=~"{name}-.*"}})',
    ScalingMetric.REQUESTS_PER_SECOND: (
        'sum(rate(maestro_guard_requests_total{{namespace="{ns}",pod=~"{name}-.*"}}[1m]))'
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """The model to serve, after resolving trainingJobRef/uri (see reconcile.deployment)."""

    uri: str
    served_name: str
    digest: str | None = None
    #: LoRA adapters to load: served name -> uri.
    adapters: dict[str, str] = field(default_factory=dict)
    revision: str | None = None
    #: LoRA rank (hyperparameters.lora.r) of the adapters whose rank is known: served name -> r.
    #: Adapters given by uri have no known rank; vLLM's default limit (16) applies to them.
    adapter_ranks: dict[str, int] = field(default_factory=dict)
    #: Weight digests of the adapters that come from a training job: served name -> sha256.
    adapter_digests: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """Optional APIs present in the cluster."""

    keda: bool = False
    service_monitor: bool = False
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"


def deployment_name(owner: Obj) -> str:
    return str(owner["metadata"]["name"])


def config_map_name(owner: Obj) -> str:
    return child_name(owner["metadata"]["name"], "guard")


def audit_key_secret_name(owner: Obj) -> str:
    """The optional Secret whose `key` keys the guard's audit digests of prompts (users create it)."""
    return f"{owner['metadata']['name']}-{guard.AUDIT_KEY_SECRET_SUFFIX}"


def metrics_service_name(owner: Obj) -> str:
    return child_name(owner["metadata"]["name"], "metrics")


def selector(owner: Obj) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: owner["metadata"]["name"]}


def selector_string(owner: Obj) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(owner).items())


def endpoint(owner: Obj) -> str:
    meta = owner["metadata"]
    return f"http://{deployment_name(owner)}.{meta['namespace']}.svc:{GUARD_PORT}/v1"


class _Mounts:
    """Collects volumes and the vLLM mounts for model sources on claims."""

    def __init__(self) -> None:
        self.volumes: list[Obj] = []
        self.mounts: list[Obj] = []
        self._claims: set[str] = set()

    def local_path(self, uri: str) -> str:
        """What vLLM is given for a model URI: a local path for pvc:// and file://, a hub id for hf://."""
        if uri.startswith("pvc://"):
            claim, path = pods.split_pvc_uri(uri)
            if claim not in self._claims:
                self._claims.add(claim)
                vol = f"model-{len(self._claims)}"
                self.volumes.append(pods.pvc_volume(vol, claim, read_only=True))
                self.mounts.append({"name": vol, "mountPath": f"{MODEL_ROOT}/{claim}", "readOnly": True})
            return f"{MODEL_ROOT}/{claim}/{path}".rstrip("/")
        if uri.startswith("file://"):
            return uri.removeprefix("file://")
        if uri.startswith("hf://"):
            return uri.removeprefix("hf://")
        return uri  # s3://: vLLM streams it (runai streamer)


#: The values vLLM accepts for --max-lora-rank (vllm.config.lora.MaxLoRARanks, without 1).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def max_lora_rank(ranks: Iterable[int]) -> int | None:
    """--max-lora-rank for adapters of these ranks: the largest rounded up to a value vLLM accepts.

    None when no rank is known (vLLM then allows 16). A rank above 512 is returned unrounded: no
    accepted value fits it, and vLLM's own error at start names the limit.
    """
    top = max(ranks, default=None)
    if top is None:
        return None
    return next((allowed for allowed in VLLM_LORA_RANKS if allowed >= top), top)


def vllm_args(spec: LLMDeploymentSpec, model: ResolvedModel, mounts: _Mounts) -> list[str]:
    rt = spec.runtime
    args = [
        mounts.local_path(model.uri),
        "--host",
        "0.0.0.0",  # probes reach the pod IP; the NetworkPolicy admits only guard and metrics ports
        "--port",
        str(VLLM_PORT),
        "--served-model-name",
        model.served_name,
        "--tensor-parallel-size",
        str(rt.tensor_parallel_size),
        "--gpu-memory-utilization",
        f"{rt.gpu_memory_utilization:g}",
        "--dtype",
        rt.dtype.value,
    ]
    if model.revision:
        args += ["--revision", model.revision]
    if model.uri.startswith("s3://"):
        args += ["--load-format", "runai_streamer"]
    if rt.max_model_len:
        args += ["--max-model-len", str(rt.max_model_len)]
    if rt.quantization:
        args += ["--quantization", rt.quantization.value]
    if rt.enforce_eager:
        args.append("--enforce-eager")
    if model.adapters:
        args += ["--enable-lora", "--lora-modules"]
        args += [f"{name}={mounts.local_path(uri)}" for name, uri in sorted(model.adapters.items())]
        if rt.max_loras:
            args += ["--max-loras", str(rt.max_loras)]
        rank = max_lora_rank(model.adapter_ranks.values())
        if rank is not None and not _has_flag(rt.extra_args, "--max-lora-rank"):
            args += ["--max-lora-rank", str(rank)]
    return [*args, *rt.extra_args]


def _has_flag(args: Iterable[str], flag: str) -> bool:
    """True when the user passed the flag in runtime.extraArgs (`--flag v` or `--flag=v`): theirs wins."""
    return any(a == flag or a.startswith(f"{flag}=") for a in args)


def build_config_map(owner: Obj, doc: Obj) -> Obj:
    """The guard's policy file. Its digest and policy name are on the ConfigMap, never on the pod
    template: a policy edit must reach the running guards through the mounted volume (the kubelet
    swaps the file, the guard polls and reloads it) without replacing the pod and reloading the model."""
    annotations = {ANNOTATION_CONFIG_DIGEST: guard_config.config_digest(doc)}
    if doc.get("name"):
        annotations[ANNOTATION_POLICY] = str(doc["name"])
    meta = object_meta(owner, config_map_name(owner), COMPONENT, annotations=annotations)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {guard.CONFIG_FILE_NAME: guard_config.dumps(doc)},
    }


def _http_probe(path: str, port: int, *, period: int, failures: int, timeout: int = 5) -> Obj:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def cpu_kv_cache_gib(resources: Obj) -> int:
    """vLLM on CPU keeps its KV cache in the container's memory (4 GiB unless told): sized from the
    memory limit — a quarter of it, at least 1 GiB — so weights, activations and cache fit under the
    limit instead of the kernel OOM-killing the server at start."""
    limit = (resources.get("limits") or {}).get("memory")
    if not limit:
        return 4
    return max(1, int(parse_quantity(str(limit)) / 2**30) // 4)


def build_deployment(
    owner: Obj,
    spec: LLMDeploymentSpec,
    model: ResolvedModel,
    settings: Settings,
    *,
    api_keys_secret: str | None = None,
) -> Obj:
    name = deployment_name(owner)
    meta = object_meta(owner, name, COMPONENT, extra_labels=selector(owner))
    mounts = _Mounts()
    args = vllm_args(spec, model, mounts)
    res = spec.resources
    image = spec.runtime.image if spec.runtime.image != DEFAULT_VLLM_IMAGE else settings.vllm_image
    vllm: Obj = {
        "name": "vllm",
        "image": image,
        "command": ["vllm", "serve"],
        "args": args,
        "ports": [{"name": "vllm", "containerPort": VLLM_PORT}],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HOME", "value": "/cache/huggingface"},
            {"name": "XDG_CACHE_HOME", "value": "/cache"},
            {"name": "VLLM_CACHE_ROOT", "value": "/cache/vllm"},
        ],
        "resources": pods.resource_requirements(
            res, default_cpu="8" if res.gpus else "4", default_memory="64Gi" if res.gpus else "16Gi"
        ),
        # Large models take minutes to download and load: the startup probe allows 30 minutes before
        # liveness takes over, so a slow first load is never killed (NIM #589, KServe #5634).
        "startupProbe": _http_probe(guard.UPSTREAM_HEALTH_PATH, VLLM_PORT, period=10, failures=180),
        "readinessProbe": _http_probe(guard.UPSTREAM_HEALTH_PATH, VLLM_PORT, period=10, failures=3),
        "livenessProbe": _http_probe(
            guard.UPSTREAM_HEALTH_PATH, VLLM_PORT, period=15, failures=6, timeout=10
        ),
        "volumeMounts": [
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "cache", "mountPath": "/cache"},
            {"name": "tmp", "mountPath": "/tmp"},
            *mounts.mounts,
        ],
        "securityContext": pods.container_security_context(read_only_root=True),
    }
    if not res.gpus:
        vllm["env"].append(
            {"name": "VLLM_CPU_KVCACHE_SPACE", "value": str(cpu_kv_cache_gib(vllm["resources"]))}
        )
    if spec.model.credentials_secret_ref:
        vllm["envFrom"] = [{"secretRef": {"name": spec.model.credentials_secret_ref.name}}]
    guard_env = [
        {"name": guard.CONFIG_ENV, "value": guard.DEFAULT_CONFIG},
        {"name": guard.KEYS_DIR_ENV, "value": guard.DEFAULT_KEYS_DIR},
        {"name": guard.UPSTREAM_ENV, "value": guard.DEFAULT_UPSTREAM},
        {"name": guard.PORT_ENV, "value": str(GUARD_PORT)},
        {"name": monitor.ENV_EVENTS_SOCKET, "value": monitor.DEFAULT_EVENTS_SOCKET},
        {"name": guard.AUDIT_KEY_FILE_ENV, "value": guard.DEFAULT_AUDIT_KEY_FILE},
    ]
    if spec.monitoring.otlp_endpoint:
        guard_env.append({"name": guard.OTEL_ENDPOINT_ENV, "value": spec.monitoring.otlp_endpoint})
    if spec.monitoring.enabled and spec.monitoring.feedback:
        # clients post feedback to the guard (their key); it relays to the monitor over the pod's loopback
        guard_env.append(
            {
                "name": guard.FEEDBACK_URL_ENV,
                "value": f"http://127.0.0.1:{MONITOR_PORT}{monitor.FEEDBACK_PATH}",
            }
        )
    guard_env += guard_limits_env(owner, settings)
    guard_mounts: list[Obj] = [
        {"name": guard.POLICY_VOLUME, "mountPath": guard.DEFAULT_CONFIG_DIR, "readOnly": True},
        {"name": "events", "mountPath": EVENTS_DIR},
        {"name": guard.AUDIT_KEY_VOLUME, "mountPath": guard.AUDIT_KEY_DIR, "readOnly": True},
    ]
    volumes: list[Obj] = [
        pods.empty_dir("shm", medium="Memory", size=str(res.shared_memory or "8Gi")),
        pods.empty_dir("cache"),
        pods.empty_dir("tmp"),
        pods.empty_dir("events"),
        {"name": guard.POLICY_VOLUME, "configMap": {"name": config_map_name(owner)}},
        # optional: without it the guard keys its prompt digests with a random per-process key
        {
            "name": guard.AUDIT_KEY_VOLUME,
            "secret": {"secretName": audit_key_secret_name(owner), "optional": True},
        },
        *mounts.volumes,
    ]
    if api_keys_secret:
        guard_mounts.append(
            {"name": guard.KEYS_VOLUME, "mountPath": guard.DEFAULT_KEYS_DIR, "readOnly": True}
        )
        # optional: a missing Secret leaves the guard without keys, so it fails closed (401) instead of
        # the pod never starting
        volumes.append(
            {"name": guard.KEYS_VOLUME, "secret": {"secretName": api_keys_secret, "optional": True}}
        )
    guard_container: Obj = {
        "name": "guard",
        "image": settings.sidecar_image,
        "command": ["maestro", "guard"],
        "env": guard_env,
        "ports": [{"name": guard.PORT_NAME, "containerPort": GUARD_PORT}],
        "readinessProbe": _http_probe(guard.READY_PATH, GUARD_PORT, period=5, failures=3),
        "livenessProbe": _http_probe(guard.HEALTH_PATH, GUARD_PORT, period=10, failures=3),
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "volumeMounts": guard_mounts,
        "securityContext": pods.container_security_context(read_only_root=True),
    }
    containers = [vllm, guard_container]
    if spec.monitoring.enabled:
        probes = spec.monitoring.bias_probes.enabled
        # Probes ask for the name clients use: with a LoRA training job that is the adapter (the
        # fine-tune), not the base model vLLM serves as "<name>-base". Through the guard they need a
        # key: the monitor reads the first one of the policy's Secret, mounted like the guard's
        # (the operator itself never reads Secrets).
        probe_keys = bool(api_keys_secret and probes)
        menv = monitor.sidecar_env(
            served_model=spec.model.served_model_name or owner["metadata"]["name"],
            probe_api_key_file=monitor.PROBE_KEYS_DIR if probe_keys else None,
            vllm_port=VLLM_PORT,
            guard_port=GUARD_PORT,
            port=MONITOR_PORT,
            feedback_dir=monitor.DEFAULT_FEEDBACK_DIR if spec.monitoring.feedback else None,
            otlp_endpoint=spec.monitoring.otlp_endpoint,
            probes=probes,
            probe_interval=float(spec.monitoring.bias_probes.interval_seconds),
            console_url=settings.console_url,
            console_token_file=CONSOLE_TOKEN_FILE if settings.console_url else None,
            deployment_name=name,
        )
        containers.append(
            {
                "name": "monitor",
                "image": settings.sidecar_image,
                "command": ["maestro", "monitor"],
                "env": menv,
                "ports": [{"name": "metrics", "containerPort": MONITOR_PORT}],
                "readinessProbe": _http_probe(monitor.HEALTH_PATH, MONITOR_PORT, period=10, failures=3),
                "livenessProbe": _http_probe(monitor.HEALTH_PATH, MONITOR_PORT, period=15, failures=3),
                "resources": {
                    "requests": {"cpu": "100m", "memory": "256Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"},
                },
                "volumeMounts": [
                    {"name": "events", "mountPath": EVENTS_DIR},
                    {"name": "feedback", "mountPath": monitor.DEFAULT_FEEDBACK_DIR},
                    *(
                        [{"name": guard.KEYS_VOLUME, "mountPath": monitor.PROBE_KEYS_DIR, "readOnly": True}]
                        if probe_keys
                        else []
                    ),
                    *(
                        [
                            {
                                "name": CONSOLE_TOKEN_VOLUME,
                                "mountPath": monitor.CONSOLE_TOKEN_DIR,
                                "readOnly": True,
                            }
                        ]
                        if settings.console_url
                        else []
                    ),
                ],
                "securityContext": pods.container_security_context(read_only_root=True),
            }
        )
        if settings.console_url:
            volumes.append(console_token_volume())
        claim = feedback_claim(owner, spec)
        volumes.append(pods.pvc_volume("feedback", claim) if claim else pods.empty_dir("feedback"))
    pod_spec: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pods.pod_security_context(),
        "containers": containers,
        "volumes": volumes,
    }
    pods.apply_scheduling(pod_spec, res, settings.serving)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector(owner)},
            # One GPU replica at a time and never above the desired count: rollouts must not need
            # spare GPUs (KubeRay #1476).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": pods.pod_labels(meta["labels"], settings),
                },
                "spec": pod_spec,
            },
        },
    }


def console_token_volume() -> Obj:
    """The monitor's credential for pushing review samples to the console: a projected service-account
    token bound to the console's audience (the console TokenReviews it with that audience and accepts
    samples for the token's own namespace only). Serving pods automount no API token, so this one,
    which the API server refuses for anything else, is all the monitor holds; the kubelet rotates it
    and the monitor re-reads the file on every push."""
    return {
        "name": CONSOLE_TOKEN_VOLUME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": monitor.CONSOLE_AUDIENCE,
                        "expirationSeconds": 3600,
                        "path": "token",
                    }
                }
            ]
        },
    }


def guard_limits_env(owner: Obj, settings: Settings) -> list[Obj]:
    """The shared rate-limit store for the guard: every replica of this deployment counts per-key limits in
    the operator's Redis under the deployment's own prefix. Nothing without one (limits per pod)."""
    url = settings.guard_limits_redis_url
    if not url:
        return []
    meta = owner["metadata"]
    prefix = guard.limits_redis_prefix(meta["namespace"], meta["name"])
    env: list[Obj] = [
        {"name": guard.LIMITS_REDIS_URL_ENV, "value": url},
        {"name": guard.LIMITS_REDIS_PREFIX_ENV, "value": prefix},
    ]
    if settings.guard_limits_redis_password_secret:
        # optional: a missing Secret must not keep the pod from starting; the guard then fails to
        # authenticate, reports maestro_guard_limit_backend_up 0 and applies the policy's fail mode
        ref = {
            "name": settings.guard_limits_redis_password_secret,
            "key": settings.guard_limits_redis_password_key,
            "optional": True,
        }
        env.append({"name": guard.LIMITS_REDIS_PASSWORD_ENV, "valueFrom": {"secretKeyRef": ref}})
    return env


def build_service(owner: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner, deployment_name(owner), COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(owner),
            "ports": [{"name": "http", "port": GUARD_PORT, "targetPort": guard.PORT_NAME, "protocol": "TCP"}],
        },
    }


def feedback_claim(owner: Obj, spec: LLMDeploymentSpec) -> str | None:
    """The claim feedback is written to (None: feedback off, the monitor's state stays in an emptyDir)."""
    m = spec.monitoring
    if not (m.enabled and m.feedback):
        return None
    return m.feedback_storage.claim_name or child_name(owner["metadata"]["name"], "feedback")


def build_feedback_pvc(owner: Obj, spec: LLMDeploymentSpec, settings: Settings) -> Obj | None:
    """The feedback claim the operator creates and owns, or None (feedback off, or an existing claim).
    Never pruned when feedback is switched off: it holds user data."""
    claim = feedback_claim(owner, spec)
    if claim is None:
        return None
    return pods.owned_pvc(owner, claim, COMPONENT, spec.monitoring.feedback_storage, settings)


def build_metrics_service(owner: Obj, spec: LLMDeploymentSpec | None = None) -> Obj:
    """The scrape targets of a deployment's pods: the monitor (its own series and vLLM's, re-exported)
    and the guard (requests, policy decisions, dropped monitor events). Headless, labelled
    METRICS_LABEL: the ServiceMonitor and the chart's plain-Prometheus scrape configuration
    (charts/maestro/files/prometheus/) both select it by that label and these port names."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(
            owner, metrics_service_name(owner), COMPONENT, extra_labels={METRICS_LABEL: "true"}
        ),
        "spec": {
            "clusterIP": "None",
            "selector": selector(owner),
            "ports": [
                *(
                    [
                        {
                            "name": METRICS_PORT_NAME,
                            "port": MONITOR_PORT,
                            "targetPort": "metrics",
                            "protocol": "TCP",
                        }
                    ]
                    if spec is None or spec.monitoring.enabled
                    else []
                ),
                {
                    "name": GUARD_METRICS_PORT_NAME,
                    "port": GUARD_PORT,
                    "targetPort": guard.PORT_NAME,
                    "protocol": "TCP",
                },
            ],
        },
    }


def build_network_policy(owner: Obj, spec: LLMDeploymentSpec) -> Obj:
    """Ingress only: the guard (and the monitor's metrics). Egress stays open on purpose: vLLM pulls
    models from hubs and buckets, the guard reaches Redis and OTLP, the monitor pushes to the console
    (settings.console_url), and none of those addresses is known here. Restricting egress would have to
    list each of them (the console's port included)."""
    ports = [{"protocol": "TCP", "port": GUARD_PORT}]
    if spec.monitoring.enabled:
        ports.append({"protocol": "TCP", "port": MONITOR_PORT})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(owner, deployment_name(owner), COMPONENT),
        "spec": {
            "podSelector": {"matchLabels": selector(owner)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": ports}],
        },
    }


def wants_pdb(spec: LLMDeploymentSpec) -> bool:
    floor = spec.autoscaling.min_replicas if spec.autoscaling and spec.autoscaling.enabled else spec.replicas
    return max(floor, spec.replicas) > 1


def build_pdb(owner: Obj) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(owner, deployment_name(owner), COMPONENT),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(owner)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _scale_target(owner: Obj) -> Obj:
    return {"apiVersion": API_GROUP_VERSION, "kind": "LLMDeployment", "name": owner["metadata"]["name"]}


def build_autoscaler(owner: Obj, spec: LLMDeploymentSpec, caps: Capabilities) -> Obj | None:
    """A KEDA ScaledObject when KEDA is installed, else an HPA; both target the LLMDeployment."""
    a = spec.autoscaling
    if a is None or not a.enabled:
        return None
    meta = object_meta(owner, deployment_name(owner), COMPONENT)
    if caps.keda:
        ns, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
        if a.metric == ScalingMetric.CPU:
            trigger: Obj = {
                "type": "cpu",
                "metricType": "Utilization",
                "metadata": {"value": f"{a.target:g}"},
            }
        else:
            trigger = {
                "type": "prometheus",
                "metadata": {
                    "serverAddress": caps.prometheus_url,
                    "query": KEDA_QUERIES[a.metric].format(ns=ns, name=name),
                    "threshold": f"{a.target:g}",
                    # missing metrics must not read as zero load and scale a busy endpoint down (AIBrix #2591)
                    "ignoreNullValues": "false",
                },
            }
        return {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": meta,
            "spec": {
                "scaleTargetRef": _scale_target(owner),
                "minReplicaCount": a.min_replicas,
                "maxReplicaCount": a.max_replicas,
                "advanced": {
                    "horizontalPodAutoscalerConfig": {
                        "behavior": {
                            "scaleDown": {"stabilizationWindowSeconds": a.scale_down_stabilization_seconds}
                        }
                    }
                },
                "triggers": [trigger],
            },
        }
    if a.metric == ScalingMetric.CPU:
        metric: Obj = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": int(a.target)},
            },
        }
    else:
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": HPA_METRICS[a.metric]},
                "target": {"type": "AverageValue", "averageValue": f"{a.target:g}"},
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": _scale_target(owner),
            "minReplicas": max(1, a.min_replicas),  # an HPA cannot scale to zero; KEDA can
            "maxReplicas": a.max_replicas,
            "metrics": [metric],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": a.scale_down_stabilization_seconds}},
        },
    }


def build_service_monitor(owner: Obj, spec: LLMDeploymentSpec, caps: Capabilities) -> Obj | None:
    if not (caps.service_monitor and spec.monitoring.enabled and spec.monitoring.service_monitor):
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": object_meta(owner, deployment_name(owner), COMPONENT),
        "spec": {
            "selector": {
                "matchLabels": {
                    METRICS_LABEL: "true",
                    **{
                        k: v
                        for k, v in object_meta(owner, "", COMPONENT)["labels"].items()
                        if k in ("llmops.dev/owner-kind", "llmops.dev/owner-name")
                    },
                }
            },
            "endpoints": [
                {"port": METRICS_PORT_NAME, "path": monitor.METRICS_PATH, "interval": "30s"},
                {"port": GUARD_METRICS_PORT_NAME, "path": guard.METRICS_PATH, "interval": "30s"},
            ],
        },
    }


def build_children(
    owner: Obj,
    spec: LLMDeploymentSpec,
    model: ResolvedModel,
    settings: Settings,
    caps: Capabilities,
    guard_doc: Obj,
    *,
    api_keys_secret: str | None = None,
) -> dict[ChildRef, Obj | None]:
    """Every serving child, keyed by reference; an optional child the spec does not want maps to None
    (it must not exist). Kinds whose API the cluster lacks (KEDA, the Prometheus operator) are not
    mentioned at all: there is nothing to create or delete."""
    name = deployment_name(owner)
    out: dict[ChildRef, Obj | None] = {}
    for manifest in (
        *([feedback] if (feedback := build_feedback_pvc(owner, spec, settings)) else []),
        build_config_map(owner, guard_doc),
        build_deployment(owner, spec, model, settings, api_keys_secret=api_keys_secret),
        build_service(owner),
        build_network_policy(owner, spec),
    ):
        out[ChildRef.of(manifest)] = manifest
    out[ChildRef("policy/v1", "PodDisruptionBudget", name)] = build_pdb(owner) if wants_pdb(spec) else None
    scaler = build_autoscaler(owner, spec, caps)
    out[ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", name)] = (
        scaler if scaler is not None and scaler["kind"] == "HorizontalPodAutoscaler" else None
    )
    if caps.keda:
        out[ChildRef("keda.sh/v1alpha1", "ScaledObject", name)] = (
            scaler if scaler is not None and scaler["kind"] == "ScaledObject" else None
        )
    monitor_ = build_service_monitor(owner, spec, caps)
    if caps.service_monitor:
        out[ChildRef("monitoring.coreos.com/v1", "ServiceMonitor", name)] = monitor_
    # the scrape targets exist whether or not a ServiceMonitor selects them (a plain Prometheus with
    # the chart's scrape configuration finds them by label)
    out[ChildRef("v1", "Service", metrics_service_name(owner))] = build_metrics_service(owner, spec)
    return out
