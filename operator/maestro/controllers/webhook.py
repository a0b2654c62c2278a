"""The validating webhook: spec checks and LLMPolicy admission rules at `kubectl apply` time.

Rejections name the field or the policy rule. The webhook is a fast-feedback layer with
failurePolicy Ignore: reconcile enforces the same rules again, so an operator that is down never
blocks the API, and a policy created later still takes effect (condition PolicyAdmitted=False).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
from kopf._core.engines import admission as kopf_admission
from pydantic import ValidationError

from maestro.api import GROUP, KINDS, VERSION
from maestro.controllers import state
from maestro.controllers.certs import write_self_signed
from maestro.controllers.config import OperatorConfig
from maestro.reconcile import admission
from maestro.reconcile.store import Store

MANAGED_NAME = "validate.llmops.dev"


async def _no_mutating_configuration(**_: Any) -> None:
    """Stand-in for Kopf's mutating-configuration manager: Maestro registers no mutating handler.

    With admission.managed set, Kopf (pinned 1.45.2) runs one manager per webhook type and the mutating
    one creates and patches an empty MutatingWebhookConfiguration, which would need create/patch on
    mutatingwebhookconfigurations, a grant that lets its holder intercept any object written to the
    cluster. The ClusterRole (maestro.k8s.rbac) does not grant it, so that manager idles like Kopf's own
    unmanaged path. Replaced at import, before `kopf run` creates its root tasks; a unit test checks that
    Kopf still calls it through this module attribute and that no mutating handler is registered.
    """
    await asyncio.Event().wait()


kopf_admission.mutating_configuration_manager = _no_mutating_configuration

#: kind → its spec model, from the kind registry.
SPECS: dict[str, type[Any]] = {k.crd.kind: k.model_fields["spec"].annotation for k in KINDS}  # type: ignore[misc]


def _spec_errors(kind: str, spec: dict[str, Any]) -> str | None:
    try:
        SPECS[kind].model_validate(spec)
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"spec.{loc}: {err.get('msg')}" if loc else f"spec: {err.get('msg')}")
        return "; ".join(parts)
    return None


def validate(body: dict[str, Any], store: Store | None = None) -> str | None:
    """Why `body` must be rejected, or None (policy rules need the operator's cache, `store`).
    Shared by the Kopf handlers below and the tests."""
    kind = body.get("kind", "")
    problem = _spec_errors(kind, body.get("spec") or {})
    if problem:
        return problem
    if store is None or kind == "LLMPolicy":
        return None
    policies, _ = admission.governing_policies(store, body)
    violations = admission.check(body, policies, store)
    if violations:
        return "; ".join(map(str, violations))
    return None


async def check(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The validating handler of every kind: rejects with the reason `validate` gives."""
    raw = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body.get("metadata") or {}),
        "spec": dict(body.get("spec") or {}),
    }
    rt = state.of(memo)
    problem = validate(_plain(raw), rt.ctx.store if rt else None)
    if problem:
        raise kopf.AdmissionError(problem, code=422)


def _plain(value: Any) -> Any:
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def register(registry: kopf.OperatorRegistry) -> None:
    """The validating handlers of every kind, on `registry` (only when the webhook is on: Kopf refuses
    to start with admission handlers and no server)."""
    for model in KINDS:
        plural = model.crd.plural
        kopf.on.validate(
            GROUP,
            VERSION,
            plural,
            id=plural,
            operations=["CREATE", "UPDATE"],
            ignore_failures=True,
            registry=registry,
        )(check)


class ServiceWebhookServer(kopf.WebhookServer):
    """Serves locally, but tells the apiserver to call it through the operator's Service."""

    def __init__(self, *, service_namespace: str, service_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service_namespace = service_namespace
        self.service_name = service_name

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for config in super().__call__(fn):
            out: dict[str, Any] = {
                "service": {
                    "namespace": self.service_namespace,
                    "name": self.service_name,
                    "port": self.port,
                    "path": self.path or "",
                }
            }
            if config.get("caBundle"):
                out["caBundle"] = config["caBundle"]
            yield out


def serving_cert(cert_dir: Path, hosts: list[str]) -> tuple[Path, Path, Path | None]:
    """(cert, key, ca) for the webhook: a provided one (e.g. a cert-manager Certificate's Secret
    mounted at the cert dir: tls.crt, tls.key, ca.crt) wins; otherwise a fresh self-signed one."""
    crt, key, ca = cert_dir / "tls.crt", cert_dir / "tls.key", cert_dir / "ca.crt"
    if crt.exists() and key.exists():
        return crt, key, ca if ca.exists() else None
    cert, pkey = write_self_signed(cert_dir, hosts)
    return cert, pkey, None


def configure(settings: kopf.OperatorSettings, cfg: OperatorConfig) -> None:
    """Serve the webhook and let Kopf manage its configuration object (caBundle included)."""
    cert_dir = Path(cfg.webhook_cert_dir or tempfile.mkdtemp(prefix="maestro-webhook-"))
    hosts = [h for h in [cfg.webhook_host, "localhost", "127.0.0.1"] if h]
    ns, _, name = (cfg.webhook_service or "").partition("/")
    if cfg.webhook_service:
        hosts = [f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local", *hosts]
    cert, key, ca = serving_cert(cert_dir, hosts)
    tls: dict[str, Any] = {"certfile": str(cert), "pkeyfile": str(key), **({"cafile": str(ca)} if ca else {})}
    if cfg.webhook_service:
        settings.admission.server = ServiceWebhookServer(
            service_namespace=ns, service_name=name, addr=cfg.webhook_addr, port=cfg.webhook_port, **tls
        )
    else:
        settings.admission.server = kopf.WebhookServer(
            addr=cfg.webhook_addr, port=cfg.webhook_port, host=cfg.webhook_host or "127.0.0.1", **tls
        )
    settings.admission.managed = MANAGED_NAME
