"""governance.retentionDays against the real control plane: a Ready dataset reports when its copy
expires, and once it has expired it is validated again by itself (RetentionExpired, then Ready with a
fresh expiry), with the versions training jobs use passed to the worker so that it keeps them.

Time passing is played by moving status.completionTime two days back through the status subresource.
The pods are played by the test (kwok), so what the worker deletes on the claim is covered by the
unit tests (tests/unit/data/test_data_retention.py), not here.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from opkit import (
    Kubectl,
    Operator,
    apply,
    condition,
    dataset_summary,
    example,
    get,
    items,
    terminate_pods,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.cluster

DS_PODS = "llmops.dev/owner-name=support-chats,app.kubernetes.io/component=dataset-validation"
CLAIM = "support-chats-data"
VERSION = "sha256:" + "ab" * 32
PINNED_ENV = "MAESTRO_PINNED_VERSIONS"


def parse(ts: str) -> dt.datetime:
    return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def rfc3339(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def validation_env(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    (job,) = wait_for(
        lambda: [
            j
            for j in items(kubectl, "jobs", ns, "app.kubernetes.io/component=dataset-validation")
            if not j["metadata"].get("deletionTimestamp")
        ],
        what="one validation Job",
    )
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_an_expired_copy_is_validated_again(operator: Operator, kubectl: Kubectl, ns: str) -> None:
    ds = copy.deepcopy(example("dataset.yaml"))
    ds["spec"]["governance"]["retentionDays"] = 1
    # a training job that pins the version: the re-validation must tell the worker to keep it
    tj = copy.deepcopy(example("training.yaml"))
    tj["spec"]["datasetRef"]["version"] = VERSION
    apply(kubectl, ns, tj)
    # the operator has seen the job before the dataset's first Job is built (the pins are read then)
    wait_condition(kubectl, "llmtj", "support-lora", ns, "DatasetReady", "False", "DatasetNotFound")
    apply(kubectl, ns, ds)

    wait_for(lambda: get(kubectl, "pvc", CLAIM, ns), what="dataset claim")
    assert validation_env(kubectl, ns)[PINNED_ENV] == VERSION
    terminate_pods(kubectl, ns, DS_PODS, "validate", exit_code=0, message=dataset_summary(CLAIM))
    first = wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "True", "Succeeded")
    st = first["status"]
    assert st["version"] == VERSION
    assert parse(st["expiresAt"]) == parse(st["completionTime"]) + dt.timedelta(days=1)
    assert parse(st["expiresAt"]) > dt.datetime.now(dt.UTC)
    wide = kubectl("get", "llmds", "support-chats", "-o", "wide", namespace=ns).stdout
    assert "EXPIRES" in wide and st["expiresAt"] in wide

    # Two days pass (as far as the status says): the copy has outlived its retention.
    old_job_uid = items(kubectl, "jobs", ns, "app.kubernetes.io/component=dataset-validation")[0]["metadata"][
        "uid"
    ]
    past = rfc3339(dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    kubectl(
        "patch",
        "llmds",
        "support-chats",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"completionTime": past}}),
        namespace=ns,
    )

    # RetentionExpired lasts one reconcile (the next one reports the new Job as ValidationPending), so
    # its Event is the durable witness; the status shows the re-validation.
    def expired_event() -> list[dict[str, Any]]:
        return [
            e
            for e in items(kubectl, "events", ns)
            if e["involvedObject"].get("name") == "support-chats" and e.get("reason") == "RetentionExpired"
        ]

    events = wait_for(expired_event, what="a RetentionExpired Event")  # one per condition that changed
    assert any("governance.retentionDays 1" in e["message"] for e in events), events
    wait_for(
        lambda: (
            (get(kubectl, "llmds", "support-chats", ns) or {}).get("status", {}).get("phase") == "Validating"
        ),
        what="phase Validating",
    )
    ready = condition(get(kubectl, "llmds", "support-chats", ns), "Ready")
    assert ready["status"] == "False" and ready["reason"] in ("RetentionExpired", "ValidationPending")

    # A new validation Job (same name: same spec), told again which version to keep.
    wait_for(
        lambda: [
            j
            for j in items(kubectl, "jobs", ns, "app.kubernetes.io/component=dataset-validation")
            if j["metadata"]["uid"] != old_job_uid
        ],
        what="a new validation Job",
    )
    assert validation_env(kubectl, ns)[PINNED_ENV] == VERSION
    terminate_pods(kubectl, ns, DS_PODS, "validate", exit_code=0, message=dataset_summary(CLAIM))
    again = wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "True", "Succeeded")
    st2 = again["status"]
    assert st2["phase"] == "Ready" and st2["version"] == VERSION
    assert parse(st2["completionTime"]) > parse(past)
    assert parse(st2["expiresAt"]) == parse(st2["completionTime"]) + dt.timedelta(days=1)
    assert parse(st2["expiresAt"]) > dt.datetime.now(dt.UTC)
    assert st2["observedGeneration"] == again["metadata"]["generation"] == first["metadata"]["generation"]
