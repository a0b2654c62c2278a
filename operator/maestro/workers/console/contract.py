"""The console's wire contract: env names, paths, RBAC attributes and sample kinds, defined once.

The monitor pushes samples to `INGEST_PATH`; it cannot import this module (workers are independent),
so maestro.workers.monitor.contract repeats the path and a unit test checks that both agree.
"""

from __future__ import annotations

from typing import Final

ENV_PORT: Final = "MAESTRO_CONSOLE_PORT"
ENV_HOST: Final = "MAESTRO_CONSOLE_HOST"
#: SQLAlchemy URL: `sqlite:////path/console.db` (default, on the console's claim) or `postgresql://...`.
ENV_DATABASE_URL: Final = "MAESTRO_CONSOLE_DATABASE_URL"
#: A file holding the PostgreSQL password (a mounted Secret), so the URL itself carries none.
ENV_DATABASE_PASSWORD_FILE: Final = "MAESTRO_CONSOLE_DATABASE_PASSWORD_FILE"
#: A file holding the key that signs session cookies and CSRF tokens (shared by replicas).
ENV_SESSION_SECRET_FILE: Final = "MAESTRO_CONSOLE_SESSION_SECRET_FILE"
ENV_SESSION_TTL: Final = "MAESTRO_CONSOLE_SESSION_TTL_SECONDS"
#: off only for plain-http development: browsers then accept the session cookie over http.
ENV_SECURE_COOKIES: Final = "MAESTRO_CONSOLE_SECURE_COOKIES"
#: The API server (default: the in-cluster address from KUBERNETES_SERVICE_HOST/PORT).
ENV_API_SERVER: Final = "MAESTRO_CONSOLE_API_SERVER"
ENV_API_TOKEN_FILE: Final = "MAESTRO_CONSOLE_API_TOKEN_FILE"
ENV_API_CA_FILE: Final = "MAESTRO_CONSOLE_API_CA_FILE"
#: Seconds a positive TokenReview/SubjectAccessReview answer is reused.
ENV_AUTH_CACHE_TTL: Final = "MAESTRO_CONSOLE_AUTH_CACHE_SECONDS"
#: Header an authenticating proxy sets to the user name; unset (the default) = never trusted.
ENV_IDENTITY_HEADER: Final = "MAESTRO_CONSOLE_IDENTITY_HEADER"
ENV_GROUPS_HEADER: Final = "MAESTRO_CONSOLE_GROUPS_HEADER"
#: Serve HTTPS with this certificate and key (PEM); both or neither. An LLMDataset source must be
#: https://, so a dataset Job fetching the corrections export needs the console on TLS (or behind it).
ENV_TLS_CERT_FILE: Final = "MAESTRO_CONSOLE_TLS_CERT_FILE"
ENV_TLS_KEY_FILE: Final = "MAESTRO_CONSOLE_TLS_KEY_FILE"
ENV_RETENTION_DAYS: Final = "MAESTRO_CONSOLE_RETENTION_DAYS"
ENV_MAX_SAMPLES: Final = "MAESTRO_CONSOLE_MAX_SAMPLES_PER_NAMESPACE"
ENV_SWEEP_INTERVAL: Final = "MAESTRO_CONSOLE_SWEEP_INTERVAL_SECONDS"
#: The audience the ingest asks the TokenReview for (spec.audiences): monitors push with a projected
#: token bound to it, so no API-server token is needed or accepted there. Empty: the API server's own
#: audience (a pod's default service-account token), for pushers outside Maestro's serving pods.
ENV_INGEST_AUDIENCE: Final = "MAESTRO_CONSOLE_INGEST_AUDIENCE"

DEFAULT_PORT: Final = 8090
DEFAULT_DATA_DIR: Final = "/var/lib/maestro/console"
DEFAULT_DATABASE_URL: Final = f"sqlite:///{DEFAULT_DATA_DIR}/console.db"
DEFAULT_SESSION_TTL: Final = 8 * 3600.0
DEFAULT_AUTH_CACHE_TTL: Final = 10.0
DEFAULT_RETENTION_DAYS: Final = 30.0
DEFAULT_MAX_SAMPLES: Final = 100_000
DEFAULT_SWEEP_INTERVAL: Final = 300.0
#: Equal to maestro.workers.monitor.contract.CONSOLE_AUDIENCE (a unit test keeps them equal).
DEFAULT_INGEST_AUDIENCE: Final = "maestro-console"
SA_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

# -- HTTP ------------------------------------------------------------------------------------------
INGEST_PATH: Final = "/api/v1/samples"
HEALTH_PATH: Final = "/healthz"
SESSION_COOKIE: Final = "maestro_console"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf_token"
#: Response header naming the corrections export's version (the sha256 of its bytes).
EXPORT_VERSION_HEADER: Final = "X-Maestro-Export-Version"

# -- RBAC: what the console asks the API server (SubjectAccessReview) -------------------------------
RBAC_GROUP: Final = "llmops.dev"
RBAC_RESOURCE: Final = "llmdeployments"
RBAC_SUBRESOURCE: Final = "review"
#: See a namespace's queue, samples and corrections export.
VERB_VIEW: Final = "get"
#: Approve, reject or correct a sample (asked with the sample's deployment as the resource name).
VERB_DECIDE: Final = "update"

# -- samples ---------------------------------------------------------------------------------------
KINDS: Final = ("policy-flag", "negative-feedback", "low-confidence", "bias-probe", "canary-disagreement")
ACTIONS: Final = ("approve", "reject", "correct")
STATES: Final = ("pending", "approved", "rejected", "corrected")
#: The state a decision leaves its sample in.
STATE_OF: Final = {"approve": "approved", "reject": "rejected", "correct": "corrected"}
