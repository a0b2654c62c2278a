"""The ingest accepts only tokens bound to the console's audience (what the serving builder projects
for the monitor), while reviewers keep signing in with their ordinary API-server tokens."""

from __future__ import annotations

from typing import Any

import console_helpers
import pytest
from console_helpers import API_AUDIENCE

from maestro.workers.console import contract as c
from maestro.workers.console.config import ConsoleSettings
from maestro.workers.monitor import contract as monitor_contract

pytestmark = pytest.mark.unit
kube_api = console_helpers.kube_api
start_console = console_helpers.start_console

SA = "system:serviceaccount:team-a:default"
SAMPLE = {"deployment": "chat", "kind": "policy-flag", "requestId": "r1", "reason": "injection"}


async def _push(h: Any, token: str) -> Any:
    return await h.client.post(
        c.INGEST_PATH, json={"samples": [SAMPLE]}, headers={"Authorization": f"Bearer {token}"}
    )


def test_the_monitor_projects_the_audience_the_console_asks_for() -> None:
    assert monitor_contract.CONSOLE_AUDIENCE == c.DEFAULT_INGEST_AUDIENCE
    assert ConsoleSettings.from_env({c.ENV_API_SERVER: "https://k:6443"}).ingest_audience == "maestro-console"
    env = {c.ENV_API_SERVER: "https://k:6443", c.ENV_INGEST_AUDIENCE: ""}
    assert ConsoleSettings.from_env(env).ingest_audience is None  # empty: the API server's own
    env[c.ENV_INGEST_AUDIENCE] = "other"
    assert ConsoleSettings.from_env(env).ingest_audience == "other"


async def test_ingest_takes_console_bound_tokens_and_refuses_api_tokens(start_console: Any) -> None:
    h = await start_console()
    h.api.user("projected", SA)
    h.api.token_audiences["projected"] = (c.DEFAULT_INGEST_AUDIENCE,)
    h.api.user("default-sa", SA)
    h.api.token_audiences["default-sa"] = (API_AUDIENCE,)

    refused = await _push(h, "default-sa")
    assert refused.status == 401
    assert "audience maestro-console" in (await refused.json())["error"]["message"]
    ok = await _push(h, "projected")
    assert ok.status == 202, await ok.text()
    assert all(r["audiences"] == ["maestro-console"] for r in h.api.token_reviews)
    assert h.store.namespaces() == ["team-a"]

    # reviewers sign in with API-server tokens: no audience asked for there
    h.api.user("alice", "alice")
    h.api.token_audiences["alice"] = (API_AUDIENCE,)
    h.api.token_reviews.clear()
    resp = await h.client.get("/api/v1/session", headers={"Authorization": "Bearer alice"})
    assert resp.status == 200, await resp.text()
    assert h.api.token_reviews and all("audiences" not in r for r in h.api.token_reviews)


async def test_an_authenticator_blind_to_audiences_does_not_pass_api_tokens(start_console: Any) -> None:
    """It answers authenticated without naming an audience: valid for the API server, not for us."""
    h = await start_console()
    h.api.audience_aware = False
    h.api.user("default-sa", SA)
    h.api.token_audiences["default-sa"] = (API_AUDIENCE,)
    assert (await _push(h, "default-sa")).status == 401
    assert not h.store.namespaces()


async def test_without_an_ingest_audience_the_api_servers_own_is_enough(start_console: Any) -> None:
    h = await start_console(ingest_audience=None)
    h.api.user("default-sa", SA)
    h.api.token_audiences["default-sa"] = (API_AUDIENCE,)
    assert (await _push(h, "default-sa")).status == 202
    assert all("audiences" not in r for r in h.api.token_reviews)
