from __future__ import annotations

import pytest

from maestro.workers.monitor import cli
from maestro.workers.monitor import contract as c
from maestro.workers.monitor.cli import main
from maestro.workers.monitor.config import MonitorSettings, SettingsError

pytestmark = pytest.mark.unit


def test_defaults_and_env() -> None:
    s = MonitorSettings.from_env({})
    assert (s.port, s.vllm_metrics_url, s.probes, s.otlp_endpoint) == (
        9090,
        "http://127.0.0.1:8000/metrics",
        False,
        None,
    )
    env = {e["name"]: e["value"] for e in c.sidecar_env(served_model="tiny", probes=True, feedback_dir="/fb")}
    s = MonitorSettings.from_env(env)
    assert s.served_model == "tiny" and s.probes and s.feedback_dir == "/fb"
    assert s.drift_reference_file == "/fb/drift-reference.json"
    assert s.scrape_interval == c.DEFAULT_SCRAPE_INTERVAL and s.guard_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({c.ENV_SCRAPE_INTERVAL: "fast"}, "MAESTRO_SCRAPE_INTERVAL='fast': expected a number"),
        ({c.ENV_SCRAPE_INTERVAL: "0"}, "must be >= 0.1"),
        ({c.ENV_PROBES: "maybe"}, "MAESTRO_PROBES='maybe': expected on/off"),
        ({c.ENV_PROBES: "on"}, "needs MAESTRO_SERVED_MODEL"),
        ({c.ENV_VLLM_METRICS_URL: "localhost:8000"}, "expected an http(s) URL"),
        ({c.ENV_OTLP_ENDPOINT: "collector:4317"}, "expected an OTLP/HTTP URL"),
        ({c.ENV_PORT: "70000"}, "not a TCP port"),
    ],
)
def test_bad_env_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MonitorSettings.from_env(env)


def test_cli_rejects_bad_settings(capsys, monkeypatch) -> None:
    monkeypatch.setenv(c.ENV_DRIFT_THRESHOLD, "high")
    assert main([]) == 2
    assert "MAESTRO_DRIFT_THRESHOLD='high'" in capsys.readouterr().err


def test_cli_dashboards_check_detects_stale_files(tmp_path, capsys) -> None:
    assert main(["dashboards", "--out", str(tmp_path), "--check"]) == 1  # nothing written yet
    assert main(["dashboards", "--out", str(tmp_path)]) == 0
    assert main(["dashboards", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "dashboards" / "maestro-serving.json").write_text("{}")
    assert main(["dashboards", "--out", str(tmp_path), "--check"]) == 1
    assert "stale" in capsys.readouterr().out


def test_unusable_mounts_fail_start_with_the_fix(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "_stay_off_the_hot_path", lambda: None)  # keep pytest's own scheduling
    afile = tmp_path / "a-file"
    afile.write_text("")
    monkeypatch.setenv(c.ENV_FEEDBACK_DIR, str(afile / "feedback"))
    assert main(["--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "feedback directory" in err and "mount a writable volume" in err
    monkeypatch.delenv(c.ENV_FEEDBACK_DIR)
    monkeypatch.setenv(c.ENV_EVENTS_SOCKET, str(afile / "events.sock"))
    assert main(["--port", "1"]) == 2
    assert "mount the shared events volume" in capsys.readouterr().err
