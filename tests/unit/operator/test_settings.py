"""The operator's process settings: MAESTRO_* variables through pydantic-settings, defaults on the fields."""

from __future__ import annotations

import pytest

from maestro.api.deployment import DEFAULT_VLLM_IMAGE
from maestro.builders.settings import Settings
from maestro.controllers.config import OperatorConfig

pytestmark = pytest.mark.unit


def test_constructing_never_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builders stay pure: only `from_env` looks at variables."""
    monkeypatch.setenv("MAESTRO_WORKER_IMAGE", "registry.local/worker:1")
    monkeypatch.setenv("MAESTRO_WORKERS", "3")
    assert Settings().worker_image == Settings.model_fields["worker_image"].default
    assert OperatorConfig().workers == 16
    assert Settings.from_env().worker_image == "registry.local/worker:1"  # the process's, when asked
    assert OperatorConfig.from_env().workers == 3


def test_empty_variables_are_unset_except_the_progress_url() -> None:
    s = Settings.from_env(
        {
            "MAESTRO_WORKER_IMAGE": "",
            "MAESTRO_STORAGE_CLASS": "",
            "MAESTRO_JOB_NODE_SELECTOR": "",
            "MAESTRO_PROGRESS_URL": "",  # documented: empty disables progress reporting
        }
    )
    assert s.worker_image == Settings().worker_image and s.storage_class is None
    assert s.jobs.node_selector == {} and s.progress_url == ""
    cfg = OperatorConfig.from_env(
        {"MAESTRO_METRICS_PORT": "", "MAESTRO_WEBHOOK": "", "MAESTRO_NAMESPACES": ""}
    )
    assert (cfg.metrics_port, cfg.webhook, cfg.namespaces) == (OperatorConfig().metrics_port, True, ())


def test_values_are_parsed_once_into_typed_fields() -> None:
    s = Settings.from_env(
        {
            "MAESTRO_SERVING_NODE_SELECTOR": '{"pool": "serve", "tier": 1}',
            "MAESTRO_JOB_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]',
            "MAESTRO_EXTRA_POD_LABELS": '{"not": "read"}',  # programmatic only
        }
    )
    assert s.serving.node_selector == {"pool": "serve", "tier": "1"}
    assert s.jobs.tolerations == ({"key": "gpu", "operator": "Exists"},) and s.extra_pod_labels == {}
    assert Settings().vllm_image == DEFAULT_VLLM_IMAGE  # the API's default, not a copy of it
    cfg = OperatorConfig.from_env(
        {"MAESTRO_WORKERS": "0", "MAESTRO_NAMESPACES": "a,,b", "MAESTRO_WEBHOOK": "off"}
    )
    assert (cfg.workers, cfg.namespaces, cfg.webhook) == (1, ("a", "b"), False)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MAESTRO_JOB_TOLERATIONS": "[1]"},
            r"MAESTRO_JOB_TOLERATIONS\[0\]: Input should be a valid dictionary",
        ),
        ({"MAESTRO_METRICS_PORT": "http"}, "MAESTRO_METRICS_PORT='http': Input should be a valid integer"),
        ({"MAESTRO_WEBHOOK": "maybe"}, "MAESTRO_WEBHOOK='maybe'"),
    ],
)
def test_a_bad_variable_stops_the_operator_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        OperatorConfig.from_env(env)
