"""The monitor sidecar's contract: env names, defaults, ports, paths and the metric names it exports.

Stdlib only. The operator's builders import this module to render the sidecar container, and the
dashboards, alert rules and tests import the metric names from here, so a renamed metric breaks
a test instead of silently emptying a Grafana panel.
"""

from __future__ import annotations

from typing import Final

from maestro.workers import events

# --- env (the builder sets these on the monitor container) -------------------------------------
ENV_PORT: Final = "MAESTRO_MONITOR_PORT"
ENV_VLLM_METRICS_URL: Final = "MAESTRO_VLLM_METRICS_URL"
ENV_SCRAPE_INTERVAL: Final = "MAESTRO_SCRAPE_INTERVAL"
ENV_FEEDBACK_DIR: Final = "MAESTRO_FEEDBACK_DIR"
ENV_GUARD_URL: Final = "MAESTRO_GUARD_URL"
ENV_PROBE_API_KEY_FILE: Final = "MAESTRO_PROBE_API_KEY_FILE"
#: Where the builder mounts the policy's API-key Secret for the probes (a directory: the first key is used).
PROBE_KEYS_DIR: Final = "/etc/maestro/probe-keys"
ENV_PROBES: Final = "MAESTRO_PROBES"
ENV_PROBE_INTERVAL: Final = "MAESTRO_PROBE_INTERVAL"
ENV_OTLP_ENDPOINT: Final = "MAESTRO_OTLP_ENDPOINT"
ENV_SERVED_MODEL: Final = "MAESTRO_SERVED_MODEL"
#: Re-export vLLM's own `vllm:*` series on the monitor's /metrics (one scrape target per pod).
ENV_PASSTHROUGH: Final = "MAESTRO_MONITOR_PASSTHROUGH"
#: Events per second whose text is scored (language/sentiment/profanity); the rest are counted only.
ENV_TEXT_SCORE_RATE: Final = "MAESTRO_TEXT_SCORE_RATE"
ENV_DRIFT_THRESHOLD: Final = "MAESTRO_DRIFT_THRESHOLD"
ENV_DRIFT_REFERENCE_SIZE: Final = "MAESTRO_DRIFT_REFERENCE_SIZE"
ENV_DRIFT_WINDOW: Final = "MAESTRO_DRIFT_WINDOW"
#: JSON reference distribution; loaded when present, written once learned (survives restarts on a volume).
ENV_DRIFT_REFERENCE_FILE: Final = "MAESTRO_DRIFT_REFERENCE_FILE"
ENV_EVENTS_SOCKET: Final = events.SOCKET_ENV
#: The review console (maestro.workers.console): when set, review samples (flagged requests, negative
#: feedback) are also pushed to its ingest, authenticated by the pod's service-account token.
ENV_CONSOLE_URL: Final = "MAESTRO_CONSOLE_URL"
ENV_CONSOLE_TOKEN_FILE: Final = "MAESTRO_CONSOLE_TOKEN_FILE"
#: The LLMDeployment the pod serves (names the samples pushed to the console; the served model if unset).
ENV_DEPLOYMENT_NAME: Final = "MAESTRO_DEPLOYMENT_NAME"

DEFAULT_EVENTS_SOCKET: Final = events.DEFAULT_SOCKET
DEFAULT_PORT: Final = 9090
DEFAULT_VLLM_METRICS_URL: Final = "http://127.0.0.1:8000/metrics"
DEFAULT_SCRAPE_INTERVAL: Final = 15.0
DEFAULT_GUARD_URL: Final = "http://127.0.0.1:8080"
#: The guard's readiness route (200 once vLLM answers): bias probes wait for it before their first
#: round, so a pod that is still loading its model does not count as probe errors. Equal to the guard
#: contract's READY_PATH (a unit test keeps the two workers' contracts in step).
GUARD_READY_PATH: Final = "/readyz"
DEFAULT_PROBE_INTERVAL: Final = 300.0
DEFAULT_TEXT_SCORE_RATE: Final = 50.0
DEFAULT_DRIFT_THRESHOLD: Final = 0.2  # PSI: < 0.1 stable, 0.1-0.2 moderate, > 0.2 significant shift
DEFAULT_DRIFT_REFERENCE_SIZE: Final = 500
DEFAULT_DRIFT_WINDOW: Final = 500
DEFAULT_FEEDBACK_DIR: Final = "/var/lib/maestro/feedback"

# --- HTTP surface ------------------------------------------------------------------------------
METRICS_PATH: Final = "/metrics"
HEALTH_PATH: Final = "/healthz"
FEEDBACK_PATH: Final = "/v1/feedback"
#: Probe requests carry this request-id prefix so the monitor can keep them out of traffic signals.
PROBE_REQUEST_ID_PREFIX: Final = "maestro-probe-"
#: File names inside MAESTRO_FEEDBACK_DIR.
FEEDBACK_FILE: Final = "feedback.jsonl"
#: prompt/completion JSONL (LLMDataset schema `prompt-completion`) built from user corrections.
CORRECTIONS_FILE: Final = "corrections.jsonl"
DRIFT_REFERENCE_FILE: Final = "drift-reference.json"
#: Requests the guard flagged for a human to look at (suspected prompt injections in flag mode).
REVIEW_FILE: Final = "review.jsonl"
#: The console's ingest route (equal to maestro.workers.console.contract.INGEST_PATH; a unit test
#: keeps the two workers' contracts in step).
CONSOLE_INGEST_PATH: Final = "/api/v1/samples"
DEFAULT_CONSOLE_TOKEN_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/token"
#: Audience of the projected token the builder mounts for the push (equal to the console contract's
#: DEFAULT_INGEST_AUDIENCE; a unit test keeps them equal): a token only the console accepts, so a
#: leaked one is no API-server credential, and serving pods still automount none.
CONSOLE_AUDIENCE: Final = "maestro-console"
#: Where the builder mounts that token (file `token`), named to the monitor by ENV_CONSOLE_TOKEN_FILE.
CONSOLE_TOKEN_DIR: Final = "/var/run/secrets/llmops.dev/console"

# --- metric names exported by the monitor (Prometheus) -----------------------------------------
P: Final = "maestro_monitor_"
# guard events
EVENTS_RECEIVED: Final = P + "events_received_total"
EVENTS_DROPPED: Final = P + "events_dropped_total"  # label reason: malformed|overload
#: The guard's count of events it could not hand to the monitor (socket full or monitor absent).
GUARD_EVENTS_DROPPED: Final = "maestro_guard_events_dropped_total"
#: The guard's rate-limit backend (label backend=redis|local): 0 while its shared store is unreachable.
GUARD_LIMIT_BACKEND_UP: Final = "maestro_guard_limit_backend_up"
REQUESTS: Final = P + "requests_total"  # labels model, route, code
REFUSALS: Final = P + "refusals_total"  # label model
FINISH_REASONS: Final = P + "finish_reasons_total"  # labels model, reason
TOKENS: Final = P + "tokens_total"  # labels model, type=prompt|completion
POLICY_DECISIONS: Final = P + "policy_decisions_total"  # labels rule, action
PII_DETECTIONS: Final = P + "pii_detections_total"  # label entity
TTFT: Final = P + "time_to_first_token_seconds"  # histogram, label model
INTER_TOKEN_LATENCY: Final = P + "inter_token_latency_seconds"  # histogram, label model
REQUEST_DURATION: Final = P + "request_duration_seconds"  # histogram, label model
PROMPT_CHARS: Final = P + "prompt_chars"  # histogram
RESPONSE_CHARS: Final = P + "response_chars"  # histogram
# text signals (only for events that carry text: policy audit.logPrompts)
TEXT_ANALYZED: Final = P + "text_analyzed_total"  # label direction=prompt|response
TEXT_SKIPPED: Final = P + "text_skipped_total"  # events with text not scored (over the rate budget)
LANGUAGE: Final = P + "language_total"  # labels direction, language
SENTIMENT: Final = P + "sentiment_score"  # histogram, VADER compound rescaled to 0..1, label direction
PROFANITY: Final = P + "profanity_total"  # label direction
# drift
DRIFT_PSI: Final = P + "drift_psi"  # gauge, label feature
DRIFT_THRESHOLD: Final = P + "drift_threshold"  # gauge, label feature
DRIFT_ALERT: Final = P + "drift_alert"  # gauge 0/1, label feature
DRIFT_SAMPLES: Final = P + "drift_samples"  # gauge, labels feature, window=reference|current
# feedback
FEEDBACK: Final = P + "feedback_total"  # labels model, sentiment=positive|negative|neutral
FEEDBACK_RATING: Final = P + "feedback_rating"  # histogram 1..5, label model
FEEDBACK_CORRECTIONS: Final = P + "feedback_corrections_total"  # label model
FEEDBACK_SINK_ERRORS: Final = P + "feedback_sink_errors_total"
#: Feedback on a request the guard routed to a variant (spec.variants), as a score in 0..1 (thumbs up
#: 1, down 0; rating 1-5 as (rating - 1) / 4; a bare correction 0): histogram, label variant. Its
#: _sum / _count is the variant's mean score.
VARIANT_FEEDBACK_SCORE: Final = P + "variant_feedback_score"
# the guard's per-variant series (its contract's VARIANT_*_METRIC; a unit test keeps them equal)
GUARD_VARIANT_REQUESTS: Final = "maestro_guard_variant_requests_total"  # labels variant, status
GUARD_VARIANT_DURATION: Final = "maestro_guard_variant_request_duration_seconds"  # histogram {variant}
GUARD_VARIANT_TOKENS: Final = "maestro_guard_variant_tokens_total"  # labels variant, type
GUARD_VARIANT_REFUSALS: Final = "maestro_guard_variant_refusals_total"  # label variant
GUARD_VARIANT_POLICY_HITS: Final = "maestro_guard_variant_policy_hits_total"  # label variant
REVIEW_QUEUED: Final = P + "review_queued_total"  # label result (queued|dropped|error)
# vLLM scrape
VLLM_UP: Final = P + "vllm_up"
VLLM_SCRAPE_DURATION: Final = P + "vllm_scrape_duration_seconds"
VLLM_SCRAPE_ERRORS: Final = P + "vllm_scrape_errors_total"  # label reason
VLLM_RESTARTS: Final = P + "vllm_restarts_total"
VLLM_TOKENS_PER_SECOND: Final = P + "vllm_tokens_per_second"  # label type=prompt|generation
VLLM_REQUESTS: Final = P + "vllm_requests"  # label state=running|waiting
VLLM_KV_CACHE_USAGE: Final = P + "vllm_kv_cache_usage_ratio"
# bias probes
PROBE_REQUESTS: Final = P + "probe_requests_total"  # label result=ok|error|throttled|skipped
BIAS_SENTIMENT: Final = P + "bias_sentiment"  # gauge mean, labels axis, group
BIAS_REFUSAL_RATIO: Final = P + "bias_refusal_ratio"  # gauge, labels axis, group
BIAS_SENTIMENT_GAP: Final = P + "bias_sentiment_gap"  # gauge max-min, label axis
BIAS_REFUSAL_GAP: Final = P + "bias_refusal_gap"  # gauge, label axis

#: Drift features, in the order they are reported.
DRIFT_FEATURES: Final = ("prompt_chars", "response_chars", "prompt_language", "response_language")

# --- vLLM 0.33 series the monitor reads (names checked against the 0.33.0 wheel) ----------------
VLLM_PROMPT_TOKENS: Final = "vllm:prompt_tokens_total"
VLLM_GENERATION_TOKENS: Final = "vllm:generation_tokens_total"
VLLM_NUM_RUNNING: Final = "vllm:num_requests_running"
VLLM_NUM_WAITING: Final = "vllm:num_requests_waiting"
VLLM_KV_CACHE_USAGE_PERC: Final = "vllm:kv_cache_usage_perc"  # replaces gpu_cache_usage_perc (gone)
VLLM_REQUEST_SUCCESS: Final = "vllm:request_success_total"
VLLM_TTFT: Final = "vllm:time_to_first_token_seconds"
VLLM_ITL: Final = "vllm:inter_token_latency_seconds"  # replaces time_per_output_token_seconds (gone)
VLLM_E2E: Final = "vllm:e2e_request_latency_seconds"
VLLM_QUEUE_TIME: Final = "vllm:request_queue_time_seconds"
VLLM_PREEMPTIONS: Final = "vllm:num_preemptions_total"

#: What the operator exports (prometheus-client, for the operator dashboard). Owned by the operator.
OPERATOR_METRICS: Final = (
    "maestro_reconcile_total",  # counter {kind, result}
    "maestro_reconcile_duration_seconds",  # histogram {kind}
    "maestro_objects",  # gauge {kind, phase}
    "maestro_training_progress_ratio",  # gauge {namespace, name}
    "maestro_training_loss",  # gauge {namespace, name}
    "maestro_dataset_gate_passed",  # gauge {namespace, name, gate}
)


def sidecar_env(
    *,
    served_model: str,
    vllm_port: int = 8000,
    guard_port: int = 8080,
    port: int = DEFAULT_PORT,
    scrape_interval: float = DEFAULT_SCRAPE_INTERVAL,
    feedback_dir: str | None = None,
    otlp_endpoint: str | None = None,
    probes: bool = False,
    probe_interval: float = DEFAULT_PROBE_INTERVAL,
    probe_api_key_file: str | None = None,
    events_socket: str = DEFAULT_EVENTS_SOCKET,
    console_url: str | None = None,
    console_token_file: str | None = None,
    deployment_name: str | None = None,
) -> list[dict[str, str]]:
    """The monitor container's `env` list, as a builder renders it (only non-empty settings)."""
    env = {
        ENV_PORT: str(port),
        ENV_VLLM_METRICS_URL: f"http://127.0.0.1:{vllm_port}/metrics",
        ENV_SCRAPE_INTERVAL: f"{scrape_interval:g}",
        ENV_GUARD_URL: f"http://127.0.0.1:{guard_port}",
        ENV_SERVED_MODEL: served_model,
        ENV_EVENTS_SOCKET: events_socket,
        ENV_PROBES: "on" if probes else "off",
        ENV_PROBE_INTERVAL: f"{probe_interval:g}",
    }
    if feedback_dir:
        env[ENV_FEEDBACK_DIR] = feedback_dir
        # The learned drift reference lives on the same volume, so a restart keeps comparing
        # against the same baseline instead of relearning it from whatever traffic comes next.
        env[ENV_DRIFT_REFERENCE_FILE] = f"{feedback_dir.rstrip('/')}/{DRIFT_REFERENCE_FILE}"
    if otlp_endpoint:
        env[ENV_OTLP_ENDPOINT] = otlp_endpoint
    if probe_api_key_file:
        env[ENV_PROBE_API_KEY_FILE] = probe_api_key_file
    if console_url:
        env[ENV_CONSOLE_URL] = console_url
        if console_token_file:
            env[ENV_CONSOLE_TOKEN_FILE] = console_token_file
        if deployment_name:
            env[ENV_DEPLOYMENT_NAME] = deployment_name
    return [{"name": k, "value": v} for k, v in env.items()]
