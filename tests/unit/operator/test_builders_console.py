"""Monitor -> console wiring in the serving builder: with settings.console_url (the chart's
console.enabled) the monitor gets the URL, the deployment's name and an audience-bound projected
token to push review samples with; without it, none of that exists on the pod."""

from __future__ import annotations

from typing import Any

import pytest

from maestro.api import LLMDeploymentSpec
from maestro.builders import serving
from maestro.builders.settings import Settings
from maestro.workers.console import contract as console_contract
from maestro.workers.monitor import contract as mc
from maestro.workers.monitor.config import MonitorSettings

pytestmark = pytest.mark.unit

MODEL = serving.ResolvedModel(uri="pvc://m/model", served_name="support-bot")
URL = "http://maestro-console.maestro-system.svc:8090"


def _pod(owner: dict[str, Any], settings: Settings) -> dict[str, Any]:
    spec = LLMDeploymentSpec.model_validate(owner["spec"])
    pod: dict[str, Any] = serving.build_deployment(owner, spec, MODEL, settings)["spec"]["template"]["spec"]
    return pod


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["containers"] if c["name"] == name)


def test_the_monitor_pushes_to_the_console_with_an_audience_bound_token(
    deployment_obj: dict[str, Any], restricted: Any
) -> None:
    settings = Settings.from_env({"MAESTRO_CONSOLE_URL": URL + "/"})
    assert settings.console_url == URL
    pod = _pod(deployment_obj, settings)
    monitor = _container(pod, "monitor")
    # what the monitor itself reads from that env
    ms = MonitorSettings.from_env({e["name"]: e["value"] for e in monitor["env"]})
    assert ms.console_url == URL
    assert ms.deployment_name == deployment_obj["metadata"]["name"]
    mount = next(m for m in monitor["volumeMounts"] if m["name"] == serving.CONSOLE_TOKEN_VOLUME)
    assert mount["readOnly"] and ms.console_token_file == f"{mount['mountPath']}/token"
    vol = next(v for v in pod["volumes"] if v["name"] == serving.CONSOLE_TOKEN_VOLUME)
    assert vol["projected"]["sources"] == [
        {"serviceAccountToken": {"audience": "maestro-console", "expirationSeconds": 3600, "path": "token"}}
    ]
    # the console asks the TokenReview for exactly the audience the pod projects
    assert mc.CONSOLE_AUDIENCE == console_contract.DEFAULT_INGEST_AUDIENCE
    # only the monitor holds it; the pod still automounts no API token (vLLM and the guard get none)
    assert pod["automountServiceAccountToken"] is False
    for other in ("vllm", "guard"):
        assert all(m["name"] != serving.CONSOLE_TOKEN_VOLUME for m in _container(pod, other)["volumeMounts"])
    assert restricted(pod) == []


def test_without_a_console_the_monitor_gets_no_url_and_no_token(deployment_obj: dict[str, Any]) -> None:
    pod = _pod(deployment_obj, Settings())
    monitor = _container(pod, "monitor")
    names = {e["name"] for e in monitor["env"]}
    assert not names & {mc.ENV_CONSOLE_URL, mc.ENV_CONSOLE_TOKEN_FILE, mc.ENV_DEPLOYMENT_NAME}
    assert MonitorSettings.from_env({e["name"]: e["value"] for e in monitor["env"]}).console_url is None
    assert all(v["name"] != serving.CONSOLE_TOKEN_VOLUME for v in pod["volumes"])
    assert not [v for v in pod["volumes"] if "projected" in v]
    assert pod["automountServiceAccountToken"] is False


def test_monitoring_off_means_no_console_token_either(deployment_obj: dict[str, Any]) -> None:
    owner = {**deployment_obj, "spec": {**deployment_obj["spec"], "monitoring": {"enabled": False}}}
    pod = _pod(owner, Settings(console_url=URL))
    assert [c["name"] for c in pod["containers"]] == ["vllm", "guard"]
    assert all(v["name"] != serving.CONSOLE_TOKEN_VOLUME for v in pod["volumes"])


def test_the_serving_network_policy_leaves_the_console_reachable(deployment_obj: dict[str, Any]) -> None:
    """The serving pods' policy restricts ingress only, so the monitor's push to the console's port (in
    the operator's namespace) is allowed; if it ever restricts egress, it must open that port."""
    spec = LLMDeploymentSpec.model_validate(deployment_obj["spec"])
    policy = serving.build_network_policy(deployment_obj, spec)
    assert policy["spec"]["policyTypes"] == ["Ingress"] and "egress" not in policy["spec"]


@pytest.mark.parametrize("bad", ["maestro-console:8090", "http://user:pw@console:8090", "ftp://console"])
def test_a_bad_console_url_names_the_variable(bad: str) -> None:
    with pytest.raises(ValueError, match="MAESTRO_CONSOLE_URL"):
        Settings.from_env({"MAESTRO_CONSOLE_URL": bad})
