"""Console settings from env: defaults, and bad values that fail at start with the env name."""

from __future__ import annotations

from pathlib import Path

import pytest

from maestro.workers.console import cli
from maestro.workers.console import contract as c
from maestro.workers.console.config import ConsoleSettings, SettingsError
from maestro.workers.monitor import contract as monitor_contract
from maestro.workers.monitor.config import MonitorSettings
from maestro.workers.monitor.config import SettingsError as MonitorSettingsError

pytestmark = pytest.mark.unit


def test_defaults_follow_the_cluster() -> None:
    s = ConsoleSettings.from_env({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert s.api_server == "https://10.96.0.1:443"
    assert s.database_url == c.DEFAULT_DATABASE_URL and s.database_url.startswith("sqlite:////")
    assert s.identity_header is None  # the proxy header is never trusted unless named
    assert s.secure_cookies and s.api_ca_file is None  # no service-account CA mounted here: system CAs
    assert (
        ConsoleSettings.from_env({c.ENV_API_SERVER: "https://a", c.ENV_API_CA_FILE: "/ca"}).api_ca_file
        == "/ca"
    )
    v6 = ConsoleSettings.from_env({"KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert v6.api_server == "https://[fd00::1]:443"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, c.ENV_API_SERVER),
        ({c.ENV_API_SERVER: "ftp://x"}, c.ENV_API_SERVER),
        ({c.ENV_DATABASE_URL: "mysql://x/y"}, c.ENV_DATABASE_URL),
        ({c.ENV_RETENTION_DAYS: "0"}, c.ENV_RETENTION_DAYS),
        ({c.ENV_SECURE_COOKIES: "maybe"}, c.ENV_SECURE_COOKIES),
        ({c.ENV_GROUPS_HEADER: "X-Groups"}, c.ENV_IDENTITY_HEADER),
        ({c.ENV_TLS_CERT_FILE: "/tls.crt"}, c.ENV_TLS_KEY_FILE),
    ],
)
def test_bad_settings_name_the_env(env: dict[str, str], names: str) -> None:
    base = {c.ENV_API_SERVER: "https://api:6443"} if c.ENV_API_SERVER not in env and env else {}
    with pytest.raises(SettingsError, match=names):
        ConsoleSettings.from_env(base | env)


def test_cli_fails_at_start_with_a_readable_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv(c.ENV_API_SERVER, raising=False)
    assert cli.main([]) == 2
    assert c.ENV_API_SERVER in capsys.readouterr().err
    monkeypatch.setenv(c.ENV_API_SERVER, "https://127.0.0.1:6443")
    monkeypatch.setenv(c.ENV_SESSION_SECRET_FILE, str(tmp_path / "short"))
    (tmp_path / "short").write_text("too short")
    assert cli.main(["--database-url", f"sqlite:///{tmp_path}/c.db"]) == 2
    assert "at least 32" in capsys.readouterr().err
    monkeypatch.setenv(c.ENV_API_CA_FILE, str(tmp_path / "missing-ca.crt"))
    assert cli.main(["--database-url", f"sqlite:///{tmp_path}/c.db"]) == 2
    assert "missing-ca.crt" in capsys.readouterr().err


def test_monitor_console_settings() -> None:
    s = MonitorSettings.from_env({monitor_contract.ENV_CONSOLE_URL: "http://maestro-console:8090"})
    assert s.console_url == "http://maestro-console:8090"
    assert s.console_token_file == monitor_contract.DEFAULT_CONSOLE_TOKEN_FILE
    with pytest.raises(MonitorSettingsError, match=monitor_contract.ENV_CONSOLE_URL):
        MonitorSettings.from_env({monitor_contract.ENV_CONSOLE_URL: "maestro-console:8090"})
