"""The chart's tracking values reach the operator's settings (the default spec.tracking of every job)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.unit
helm = pytest.importorskip("helm_python")


def operator_env(values: dict[str, Any]) -> list[dict[str, Any]]:
    from test_chart import by_kind, render

    container = by_kind(render(values), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env: list[dict[str, Any]] = container["env"]
    return env


def test_tracking_values_reach_the_operators_settings() -> None:
    from maestro.builders.settings import Settings

    mlflow = {"uri": "http://mlflow.infra.svc:5000", "experiment": "fine-tunes", "credentialsSecret": "mlf"}
    env = operator_env({"tracking": {"mlflow": mlflow}})
    settings = Settings.from_env({e["name"]: e["value"] for e in env if "value" in e})
    assert (settings.tracking_uri, settings.tracking_experiment, settings.tracking_credentials_secret) == (
        mlflow["uri"],
        "fine-tunes",
        "mlf",
    )
    assert not [e for e in operator_env({}) if "TRACKING" in e["name"]]  # default: off


def test_a_tracking_uri_with_credentials_is_rejected_at_install() -> None:
    from test_chart import render

    with pytest.raises(Exception, match="uri"):
        render({"tracking": {"mlflow": {"uri": "http://user:pw@mlflow:5000"}}})
