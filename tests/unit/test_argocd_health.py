"""The Argo CD health script, run in a real Lua runtime against status fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from maestro.api.conditions import PERMANENT, Reason

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "deploy/argocd/health.lua").read_text()
KINDS = ("LLMDataset", "LLMTrainingJob", "LLMDeployment", "LLMPolicy")


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lupa = pytest.importorskip("lupa")
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(v: Any) -> Any:
        if isinstance(v, dict):
            return lua.table_from({k: to_lua(x) for k, x in v.items()})
        if isinstance(v, list):
            return lua.table_from([to_lua(x) for x in v])
        return v

    fn = lua.eval("function(obj) " + SCRIPT + " end")
    hs = fn(to_lua(obj))
    return hs["status"], hs["message"]


def obj(
    kind: str,
    phase: str | None = None,
    conditions: list[dict[str, str]] | None = None,
    generation: int = 1,
    observed: int | None = 1,
    status: bool = True,
) -> dict[str, Any]:
    o: dict[str, Any] = {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "generation": generation},
    }
    if status:
        st: dict[str, Any] = {"conditions": conditions or []}
        if phase:
            st["phase"] = phase
        if observed is not None:
            st["observedGeneration"] = observed
        o["status"] = st
    return o


def cond(type_: str, status: str, reason: str = "R", message: str = "m") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize("kind", KINDS)
def test_no_status_is_progressing(kind: str) -> None:
    assert health(obj(kind, status=False))[0] == "Progressing"


@pytest.mark.parametrize("kind", KINDS)
def test_stale_generation_is_progressing_even_if_ready(kind: str) -> None:
    s, m = health(obj(kind, "Ready", [cond("Ready", "True")], generation=3, observed=2))
    assert s == "Progressing" and "generation 3" in m


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("phase", "conditions", "want"),
    [
        ("Ready", [cond("Ready", "True")], "Healthy"),
        ("Pending", [cond("Ready", "False", "DatasetNotReady")], "Progressing"),
        ("Pending", [], "Progressing"),
        ("Failed", [cond("Ready", "False", "GateFailed", "maxPIIRatio 0.2 > 0.1")], "Degraded"),
        (
            "Progressing",
            [cond("Ready", "False"), cond("Degraded", "True", "PolicyViolation", "rule x")],
            "Degraded",
        ),
        ("Ready", [cond("Ready", "True"), cond("Degraded", "False")], "Healthy"),
        ("Progressing", [cond("Ready", "False"), cond("Progressing", "True", "Rolling")], "Progressing"),
    ],
)
def test_condition_matrix(kind: str, phase: str, conditions: list[dict[str, str]], want: str) -> None:
    assert health(obj(kind, phase, conditions))[0] == want


def test_degraded_message_names_reason() -> None:
    s, m = health(
        obj("LLMDeployment", "Degraded", [cond("Degraded", "True", "PolicyViolation", "model source denied")])
    )
    assert s == "Degraded" and m == "PolicyViolation: model source denied"


def test_training_phases() -> None:
    assert health(obj("LLMTrainingJob", "Succeeded", [cond("Ready", "True")]))[0] == "Healthy"
    assert health(obj("LLMTrainingJob", "Succeeded", []))[0] == "Healthy"
    # what reconcile.training writes while Kueue holds the Job: Ready=False/Queued (no Queued condition)
    queued = [cond("Ready", "False", "Queued", "Job x waits in Kueue queue q"), cond("Degraded", "False")]
    assert health(obj("LLMTrainingJob", "Queued", queued)) == (
        "Suspended",
        "Queued: Job x waits in Kueue queue q",
    )
    assert health(obj("LLMTrainingJob", "Running", [cond("Ready", "False", "Training")]))[0] == "Progressing"
    assert health(obj("LLMPolicy", "Invalid", [cond("Ready", "False", "InvalidPattern")]))[0] == "Degraded"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reason", sorted(Reason))
def test_a_permanent_ready_reason_is_degraded_even_without_a_degraded_condition(
    kind: str, reason: str
) -> None:
    """The script's table of permanent reasons is maestro.api.conditions.PERMANENT, no more, no less."""
    s, m = health(obj(kind, "Waiting", [cond("Ready", "False", reason, "why"), cond("Degraded", "False")]))
    assert s == ("Degraded" if reason in PERMANENT else "Progressing")
    assert m == f"{reason}: why"


def test_a_job_waiting_for_a_failed_dataset_is_degraded_not_progressing() -> None:
    ds_failed = cond("Ready", "False", "DatasetFailed", "LLMDataset 'd' failed (GateFailed): ...")
    assert health(obj("LLMTrainingJob", "Waiting", [ds_failed]))[0] == "Degraded"
    waiting = cond("Ready", "False", "DatasetNotReady", "LLMDataset 'd' is not Ready: phase Validating")
    assert health(obj("LLMTrainingJob", "Waiting", [waiting]))[0] == "Progressing"


def test_configmap_patch_embeds_the_script_for_every_kind() -> None:
    cm = yaml.safe_load((ROOT / "deploy/argocd/argocd-cm-patch.yaml").read_text())
    for kind in KINDS:
        assert cm["data"][f"resource.customizations.health.llmops.dev_{kind}"] == SCRIPT
