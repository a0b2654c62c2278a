"""The guard sidecar's env/port contract, shared with the operator's builders (stdlib only).

The builders render the sidecar container from these names and defaults; the guard reads the same
names at start-up. Changing a value here changes both sides at once.
"""

from __future__ import annotations

#: Path of the policy JSON rendered by the operator into a ConfigMap and mounted into the pod.
CONFIG_ENV = "MAESTRO_GUARD_CONFIG"
DEFAULT_CONFIG_DIR = "/etc/maestro/policy"
CONFIG_FILE_NAME = "policy.json"
DEFAULT_CONFIG = f"{DEFAULT_CONFIG_DIR}/{CONFIG_FILE_NAME}"

#: Directory of the mounted API-key Secret: one file per key, file name = key id,
#: content = the key itself or `sha256:<hex>` of it.
KEYS_DIR_ENV = "MAESTRO_GUARD_KEYS_DIR"
DEFAULT_KEYS_DIR = "/etc/maestro/keys"

#: The model server the guard fronts (vLLM on localhost inside the pod).
UPSTREAM_ENV = "MAESTRO_UPSTREAM"
DEFAULT_UPSTREAM = "http://127.0.0.1:8000"
UPSTREAM_PORT = 8000

#: The guard's own port: the only one the Service exposes. Metrics and probes share it.
PORT_ENV = "MAESTRO_GUARD_PORT"
DEFAULT_PORT = 8080
PORT_NAME = "http"

#: Listen address (all interfaces in the pod).
HOST_ENV = "MAESTRO_GUARD_HOST"
DEFAULT_HOST = "0.0.0.0"

#: Audit log destination: a file path, or unset/"-" for stdout (JSON lines).
AUDIT_LOG_ENV = "MAESTRO_AUDIT_LOG"

#: Key of the HMAC-SHA256 digest of prompts in audit lines and monitor events: the value itself, or
#: a file holding it (read once at start; surrounding whitespace is ignored). The builders mount the
#: optional Secret `<LLMDeployment name>-audit-key` (data key `key`) at the default file path, so each
#: deployment has its own key; without one the guard draws a random key per process.
AUDIT_KEY_ENV = "MAESTRO_AUDIT_KEY"
AUDIT_KEY_FILE_ENV = "MAESTRO_AUDIT_KEY_FILE"
AUDIT_KEY_DIR = "/etc/maestro/audit-key"
AUDIT_KEY_SECRET_KEY = "key"
DEFAULT_AUDIT_KEY_FILE = f"{AUDIT_KEY_DIR}/{AUDIT_KEY_SECRET_KEY}"
AUDIT_KEY_SECRET_SUFFIX = "audit-key"

#: Seconds between policy/keys file polls (ConfigMap/Secret volumes swap a symlink, no inotify event).
RELOAD_INTERVAL_ENV = "MAESTRO_GUARD_RELOAD_SECONDS"
DEFAULT_RELOAD_INTERVAL_S = 2.0

#: Probe and metrics paths on PORT.
HEALTH_PATH = "/healthz"  # liveness: the guard process answers
READY_PATH = "/readyz"  # readiness: the upstream's /health answers 200
METRICS_PATH = "/metrics"
UPSTREAM_HEALTH_PATH = "/health"  # vLLM (and `transformers serve`) health route

#: Where the guard relays `POST /v1/feedback` after authenticating it: the monitor sidecar's feedback
#: route on the pod's loopback (unset: feedback is off and the route answers 404).
FEEDBACK_URL_ENV = "MAESTRO_GUARD_FEEDBACK_URL"
FEEDBACK_PATH = "/v1/feedback"
#: Largest feedback body the guard accepts (the monitor's own limit).
MAX_FEEDBACK_BYTES = 64 * 1024

#: Shared rate limits: a Redis URL (redis://host:port/db, rediss:// for TLS) makes every replica of a
#: deployment count against one set of per-key buckets; unset, each guard limits on its own (per pod).
#: The password comes from LIMITS_REDIS_PASSWORD (the builders set it from a Secret key) or a file.
LIMITS_REDIS_URL_ENV = "MAESTRO_GUARD_LIMITS_REDIS_URL"
LIMITS_REDIS_PASSWORD_ENV = "MAESTRO_GUARD_LIMITS_REDIS_PASSWORD"
LIMITS_REDIS_PASSWORD_FILE_ENV = "MAESTRO_GUARD_LIMITS_REDIS_PASSWORD_FILE"
#: Key prefix of one deployment's buckets and peer set; the builders render `maestro:{<ns>/<name>}:` (the
#: braces are a Redis Cluster hash tag: one deployment's keys live in one slot).
LIMITS_REDIS_PREFIX_ENV = "MAESTRO_GUARD_LIMITS_REDIS_PREFIX"
DEFAULT_LIMITS_REDIS_PREFIX = "maestro:{guard}:"


def limits_redis_prefix(namespace: str, deployment: str) -> str:
    """The key prefix of one LLMDeployment's shared limits (namespace and name cannot hold `{}` or `:`)."""
    return f"maestro:{{{namespace}/{deployment}}}:"


#: Response header carrying the request id (also in audit lines and monitor events).
REQUEST_ID_HEADER = "x-request-id"
#: Response header naming the traffic-split variant that served the request (spec.variants).
VARIANT_HEADER = "x-maestro-variant"
#: Request header naming the end user, for sticky variant assignment within one API key (the OpenAI
#: body's `user` field is used when it is absent).
USER_HEADER = "x-maestro-user"

#: Per-variant Prometheus series (spec.variants), as scraped (counters with their `_total`). The
#: operator's analysis (maestro.k8s.metrics) and the dashboards read these names; the monitor's
#: contract repeats them for its dashboards (a unit test keeps the two in step).
VARIANT_REQUESTS_METRIC = "maestro_guard_variant_requests_total"  # labels variant, status
VARIANT_DURATION_METRIC = "maestro_guard_variant_request_duration_seconds"  # histogram, label variant
VARIANT_TOKENS_METRIC = "maestro_guard_variant_tokens_total"  # labels variant, type=input|output
#: Responses the guard classified as refusals (the monitor event's `refusal`), per variant.
VARIANT_REFUSALS_METRIC = "maestro_guard_variant_refusals_total"  # label variant
#: Requests on which a policy rule acted on the content (an action in POLICY_HIT_ACTIONS), per variant.
VARIANT_POLICY_HITS_METRIC = "maestro_guard_variant_policy_hits_total"  # label variant
#: Decision actions that count as a policy hit: the policy changed or stopped what was exchanged
#: (not a rate limit, a max_tokens clamp or an audit-only finding).
POLICY_HIT_ACTIONS = frozenset({"block", "flag", "redact"})

#: OpenTelemetry: spans/metrics are exported only when this standard variable is set.
OTEL_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"

#: Volume names/mount points the builders use for the two mounts above.
POLICY_VOLUME = "guard-policy"
KEYS_VOLUME = "guard-keys"
AUDIT_KEY_VOLUME = "guard-audit-key"
