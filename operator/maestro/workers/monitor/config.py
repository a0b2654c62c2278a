"""Monitor settings: env (what the operator renders) first, command-line flags override.

Bad values fail at start with the env name in the message, so a typo in a manifest shows up as
a crash-looping sidecar with a readable log line rather than a silently wrong monitor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from maestro.workers.envparse import SettingsError as SettingsError  # re-exported: callers catch it here
from maestro.workers.envparse import env_bool, env_num
from maestro.workers.monitor import contract as c


@dataclass
class MonitorSettings:
    port: int = c.DEFAULT_PORT
    host: str = "0.0.0.0"
    vllm_metrics_url: str = c.DEFAULT_VLLM_METRICS_URL
    scrape_interval: float = c.DEFAULT_SCRAPE_INTERVAL
    events_socket: str = c.DEFAULT_EVENTS_SOCKET
    feedback_dir: str | None = None
    guard_url: str = c.DEFAULT_GUARD_URL
    probes: bool = False
    probe_interval: float = c.DEFAULT_PROBE_INTERVAL
    probe_api_key_file: str | None = None
    otlp_endpoint: str | None = None
    served_model: str | None = None
    passthrough: bool = True
    text_score_rate: float = c.DEFAULT_TEXT_SCORE_RATE
    drift_threshold: float = c.DEFAULT_DRIFT_THRESHOLD
    drift_reference_size: int = c.DEFAULT_DRIFT_REFERENCE_SIZE
    drift_window: int = c.DEFAULT_DRIFT_WINDOW
    drift_reference_file: str | None = None
    #: The review console's base URL (maestro.workers.console); None = push nothing.
    console_url: str | None = None
    console_token_file: str = c.DEFAULT_CONSOLE_TOKEN_FILE
    deployment_name: str | None = None
    #: Seconds between event batches (not an env setting: a tuning knob for tests and benchmarks).
    event_batch_interval: float = 0.02

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MonitorSettings:
        e = os.environ if env is None else env
        s = cls(
            port=int(env_num(e, c.ENV_PORT, c.DEFAULT_PORT, 1)),
            vllm_metrics_url=e.get(c.ENV_VLLM_METRICS_URL) or c.DEFAULT_VLLM_METRICS_URL,
            scrape_interval=env_num(e, c.ENV_SCRAPE_INTERVAL, c.DEFAULT_SCRAPE_INTERVAL, 0.1),
            events_socket=e.get(c.ENV_EVENTS_SOCKET) or c.DEFAULT_EVENTS_SOCKET,
            feedback_dir=e.get(c.ENV_FEEDBACK_DIR) or None,
            guard_url=e.get(c.ENV_GUARD_URL) or c.DEFAULT_GUARD_URL,
            probes=env_bool(e, c.ENV_PROBES, False),
            probe_interval=env_num(e, c.ENV_PROBE_INTERVAL, c.DEFAULT_PROBE_INTERVAL, 1),
            probe_api_key_file=e.get(c.ENV_PROBE_API_KEY_FILE) or None,
            otlp_endpoint=e.get(c.ENV_OTLP_ENDPOINT) or None,
            served_model=e.get(c.ENV_SERVED_MODEL) or None,
            passthrough=env_bool(e, c.ENV_PASSTHROUGH, True),
            text_score_rate=env_num(e, c.ENV_TEXT_SCORE_RATE, c.DEFAULT_TEXT_SCORE_RATE, 0),
            drift_threshold=env_num(e, c.ENV_DRIFT_THRESHOLD, c.DEFAULT_DRIFT_THRESHOLD, 0),
            drift_reference_size=int(
                env_num(e, c.ENV_DRIFT_REFERENCE_SIZE, c.DEFAULT_DRIFT_REFERENCE_SIZE, 1)
            ),
            drift_window=int(env_num(e, c.ENV_DRIFT_WINDOW, c.DEFAULT_DRIFT_WINDOW, 1)),
            drift_reference_file=e.get(c.ENV_DRIFT_REFERENCE_FILE) or None,
            console_url=e.get(c.ENV_CONSOLE_URL) or None,
            console_token_file=e.get(c.ENV_CONSOLE_TOKEN_FILE) or c.DEFAULT_CONSOLE_TOKEN_FILE,
            deployment_name=e.get(c.ENV_DEPLOYMENT_NAME) or None,
        )
        s.validate()
        return s

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"{c.ENV_PORT}={self.port}: not a TCP port")
        if not self.vllm_metrics_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"{c.ENV_VLLM_METRICS_URL}={self.vllm_metrics_url!r}: expected an http(s) URL"
            )
        if self.probes and not self.served_model:
            raise SettingsError(
                f"{c.ENV_PROBES}=on needs {c.ENV_SERVED_MODEL} (the model name probes ask for)"
            )
        if self.console_url and not self.console_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"{c.ENV_CONSOLE_URL}={self.console_url!r}: expected the console's URL, like http://maestro-console:8090"
            )
        if self.otlp_endpoint and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise SettingsError(
                f"{c.ENV_OTLP_ENDPOINT}={self.otlp_endpoint!r}: expected an OTLP/HTTP URL like http://collector:4318"
            )
