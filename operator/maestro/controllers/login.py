"""Kopf's credentials come from the same loader as Kube's (k8s.config.load_config): Kopf's watches and
Maestro's own requests talk to the same cluster as the same user, resolved in the same order, by the
official client's loaders.

Kopf calls this at start and again whenever the API server answers 401 (an expired exec-plugin token,
a rotated service-account token); each call loads the configuration afresh. Registering a login
handler also switches off Kopf's fallbacks, which would resolve the configuration a second time on
their own (through a process-wide default Configuration, with $KUBECONFIG read at import time).
"""

from __future__ import annotations

from typing import Any

import kopf

from maestro.k8s import ApiError
from maestro.k8s.config import authorization, explicit_proxy, load_config


def register(registry: kopf.OperatorRegistry) -> None:
    """The login handler, on `registry` (nothing is registered at import, like controllers.handlers)."""
    kopf.on.login(registry=registry)(login)


def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """Sync on purpose: loading may run an exec plugin, and Kopf runs sync handlers in a thread.
    The credential goes to Kopf only; nothing here logs it."""
    try:
        cfg = load_config()
    except ApiError as exc:
        raise kopf.LoginError(exc.message) from None
    scheme, token = _split(authorization(cfg))
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        proxy_url=explicit_proxy(cfg),
        trust_env=settings.networking.trust_env,
    )


def _split(header: str | None) -> tuple[str | None, str | None]:
    """ "Bearer abc" -> ("Bearer", "abc"); a bare credential has no scheme (RFC 7235)."""
    if not header:
        return None, None
    scheme, sep, rest = header.partition(" ")
    return (scheme, rest) if sep else (None, scheme)
