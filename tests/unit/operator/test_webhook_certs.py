"""The webhook serves a provided certificate (cert-manager's Secret layout) or makes its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import kopf
import pytest

from maestro.controllers.certs import write_self_signed
from maestro.controllers.config import OperatorConfig
from maestro.controllers.webhook import configure, serving_cert

pytestmark = pytest.mark.unit


def test_self_signed_when_nothing_is_provided(tmp_path: Path) -> None:
    cert, key, ca = serving_cert(tmp_path, ["maestro-operator.maestro-system.svc"])
    assert cert.exists() and key.exists() and ca is None
    assert b"BEGIN CERTIFICATE" in cert.read_bytes()


def test_provided_certificate_wins_and_is_not_touched(tmp_path: Path) -> None:
    made = tmp_path / "made"
    c, k = write_self_signed(made, ["maestro-operator.maestro-system.svc"])
    mounted = tmp_path / "secret"
    mounted.mkdir()
    shutil.copy(c, mounted / "tls.crt")
    shutil.copy(k, mounted / "tls.key")
    shutil.copy(c, mounted / "ca.crt")
    before = {p.name: p.read_bytes() for p in mounted.iterdir()}
    cert, key, ca = serving_cert(mounted, ["ignored"])
    assert (cert, key, ca) == (mounted / "tls.crt", mounted / "tls.key", mounted / "ca.crt")
    assert {p.name: p.read_bytes() for p in mounted.iterdir()} == before

    settings = kopf.OperatorSettings()
    configure(
        settings,
        OperatorConfig(webhook_cert_dir=str(mounted), webhook_service="maestro-system/maestro-operator"),
    )
    server = settings.admission.server
    assert server is not None
    assert (server.certfile, server.pkeyfile, server.cafile) == (str(cert), str(key), str(ca))  # type: ignore[union-attr]
