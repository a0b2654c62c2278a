"""Console settings from MAESTRO_CONSOLE_* env (flags override): bad values fail at start, naming the env.

Like the monitor's config: a typo in a manifest shows up as a crash-looping pod with a readable log
line rather than a console that silently trusts the wrong header or keeps data forever.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from maestro.workers.console import contract as c
from maestro.workers.envparse import SettingsError as SettingsError  # re-exported: callers catch it here
from maestro.workers.envparse import env_bool, env_num


def _in_cluster(env: Mapping[str, str]) -> str | None:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _default_ca() -> str | None:
    path = f"{c.SA_DIR}/ca.crt"
    return path if os.path.exists(path) else None


@dataclass
class ConsoleSettings:
    port: int = c.DEFAULT_PORT
    host: str = "0.0.0.0"
    database_url: str = c.DEFAULT_DATABASE_URL
    database_password_file: str | None = None
    session_secret_file: str | None = None
    session_ttl: float = c.DEFAULT_SESSION_TTL
    secure_cookies: bool = True
    api_server: str | None = None
    api_token_file: str = f"{c.SA_DIR}/token"
    api_ca_file: str | None = None
    auth_cache_ttl: float = c.DEFAULT_AUTH_CACHE_TTL
    identity_header: str | None = None
    groups_header: str | None = None
    retention_days: float = c.DEFAULT_RETENTION_DAYS
    max_samples_per_namespace: int = c.DEFAULT_MAX_SAMPLES
    sweep_interval: float = c.DEFAULT_SWEEP_INTERVAL
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: None: the API server's own audience (see contract.ENV_INGEST_AUDIENCE).
    ingest_audience: str | None = c.DEFAULT_INGEST_AUDIENCE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleSettings:
        e = os.environ if env is None else env
        ca = e.get(c.ENV_API_CA_FILE)
        s = cls(
            port=int(env_num(e, c.ENV_PORT, c.DEFAULT_PORT, 1)),
            host=e.get(c.ENV_HOST) or "0.0.0.0",
            database_url=e.get(c.ENV_DATABASE_URL) or c.DEFAULT_DATABASE_URL,
            database_password_file=e.get(c.ENV_DATABASE_PASSWORD_FILE) or None,
            session_secret_file=e.get(c.ENV_SESSION_SECRET_FILE) or None,
            session_ttl=env_num(e, c.ENV_SESSION_TTL, c.DEFAULT_SESSION_TTL, 60),
            secure_cookies=env_bool(e, c.ENV_SECURE_COOKIES, True),
            api_server=e.get(c.ENV_API_SERVER) or _in_cluster(e),
            api_token_file=e.get(c.ENV_API_TOKEN_FILE) or f"{c.SA_DIR}/token",
            # unset: the pod's service-account CA when mounted, else the system CAs; empty: system CAs
            api_ca_file=(ca or None) if ca is not None else _default_ca(),
            auth_cache_ttl=env_num(e, c.ENV_AUTH_CACHE_TTL, c.DEFAULT_AUTH_CACHE_TTL, 0),
            identity_header=e.get(c.ENV_IDENTITY_HEADER) or None,
            groups_header=e.get(c.ENV_GROUPS_HEADER) or None,
            retention_days=env_num(e, c.ENV_RETENTION_DAYS, c.DEFAULT_RETENTION_DAYS, 0.001),
            max_samples_per_namespace=int(env_num(e, c.ENV_MAX_SAMPLES, c.DEFAULT_MAX_SAMPLES, 1)),
            sweep_interval=env_num(e, c.ENV_SWEEP_INTERVAL, c.DEFAULT_SWEEP_INTERVAL, 1),
            tls_cert_file=e.get(c.ENV_TLS_CERT_FILE) or None,
            tls_key_file=e.get(c.ENV_TLS_KEY_FILE) or None,
            # unset: the default audience; set but empty: none (the API server's own)
            ingest_audience=(
                (e[c.ENV_INGEST_AUDIENCE].strip() or None)
                if c.ENV_INGEST_AUDIENCE in e
                else c.DEFAULT_INGEST_AUDIENCE
            ),
        )
        s.validate()
        return s

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"{c.ENV_PORT}={self.port}: not a TCP port")
        if not self.api_server:
            raise SettingsError(
                f"no API server: set {c.ENV_API_SERVER} (outside a cluster), e.g. https://127.0.0.1:6443"
            )
        if not self.api_server.startswith(("http://", "https://")):
            raise SettingsError(f"{c.ENV_API_SERVER}={self.api_server!r}: expected an https URL")
        if not self.database_url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise SettingsError(
                f"{c.ENV_DATABASE_URL}: expected sqlite:///<path> or postgresql://user@host/db "
                "(put the password in a file named by " + c.ENV_DATABASE_PASSWORD_FILE + ")"
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingsError(f"set both {c.ENV_TLS_CERT_FILE} and {c.ENV_TLS_KEY_FILE}, or neither")
        if self.groups_header and not self.identity_header:
            raise SettingsError(f"{c.ENV_GROUPS_HEADER} needs {c.ENV_IDENTITY_HEADER}")
