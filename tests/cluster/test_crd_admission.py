"""The generated CRDs against a real API server: they load, `kubectl` shows the docs, the examples are
accepted, every manifest of the invalid corpus is rejected with a message naming the field, and the
server applies the same defaults as the models."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml

import maestro.api as api
from maestro.api.deployment import LLMDeploymentStatus

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).parents[2]
CORPUS = yaml.safe_load((Path(__file__).parent / "invalid_manifests.yaml").read_text())
SERVER_CASES = [c for c in CORPUS["cases"] if c.get("server", True)]
EXAMPLES = sorted((ROOT / "examples").glob("*/*.yaml"))
Kubectl = Callable[..., CompletedProcess[str]]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (null deletes)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def manifest(case: dict[str, Any]) -> dict[str, Any]:
    return merge_patch(CORPUS["bases"][case["base"]], case["patch"])  # type: ignore[no-any-return]


def dry_run(kubectl: Kubectl, namespace: str, obj: dict[str, Any]) -> CompletedProcess[str]:
    return kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=maestro-test",
        "-f",
        "-",
        input=json.dumps(obj),
        namespace=namespace,
        check=False,
    )


@pytest.fixture(scope="session")
def maestro_crds(kubectl: Kubectl) -> list[str]:
    """Install crds/*.yaml once per session (server-side apply) and wait until they are served."""
    files = sorted((ROOT / "crds").glob("*.llmops.dev.yaml"))
    for path in files:
        kubectl("apply", "--server-side", "--field-manager=maestro-test", "-f", str(path))
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in files]
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    # discovery and the OpenAPI document lag the Established condition a little
    deadline = time.monotonic() + 30
    while kubectl("get", "llmops", "-A", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the llmops category never appeared in discovery"
        time.sleep(0.3)
    return names


@pytest.fixture(scope="module")
def admission_ns(kubectl: Kubectl, maestro_crds: list[str]) -> Any:
    name = f"t-admission-{int(time.time() * 1000) % 100000}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def corpus_results(kubectl: Kubectl, admission_ns: str) -> dict[str, CompletedProcess[str]]:
    """Dry-run every invalid manifest once, a few at a time (each is an independent request)."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = pool.map(lambda c: dry_run(kubectl, admission_ns, manifest(c)), SERVER_CASES)
        return {case["name"]: result for case, result in zip(SERVER_CASES, results, strict=True)}


def test_crds_are_established_with_names_and_categories(kubectl: Kubectl, maestro_crds: list[str]) -> None:
    out = kubectl("api-resources", "--api-group=llmops.dev", "-o", "wide").stdout
    for short in ("llmds", "llmtj", "llmdep", "llmpol"):
        assert short in out
    assert out.count("llmops") >= 4  # the category column


def test_kubectl_explain_prints_field_descriptions(kubectl: Kubectl, maestro_crds: list[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        proc = kubectl("explain", "llmdeployment.spec.runtime", check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stderr
    for text in (
        "The vLLM server.",
        "tensorParallelSize",
        "GPUs one replica shards the model over",
        "enforceEager",
    ):
        assert text in proc.stdout, proc.stdout
    explain = kubectl("explain", "llmpolicy.spec.request.streamingOutputMode").stdout
    assert "window: check a sliding window" in explain


def test_kubectl_get_llmops_lists_every_kind(
    kubectl: Kubectl, maestro_crds: list[str], namespace: str
) -> None:
    for path in sorted((ROOT / "examples/quickstart").glob("*.yaml")):
        if path.name == "inputs.yaml":
            # a hostPath PV (cluster-scoped, Retain): bound here, it would stay Released for the
            # quickstart namespace of the e2e tier
            continue
        kubectl(
            "apply", "--server-side", "--field-manager=maestro-test", "-f", str(path), namespace=namespace
        )
    out = kubectl("get", "llmops", namespace=namespace).stdout
    for kind_and_name in (
        "llmdataset.llmops.dev/support-chats",
        "llmtrainingjob.llmops.dev/support-lora",
        "llmdeployment.llmops.dev/support-bot",
        "llmpolicy.llmops.dev/quickstart",
    ):
        assert kind_and_name in out, out
    header = kubectl("get", "llmdep", namespace=namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "READY", "REPLICAS", "AVAILABLE", "MODEL", "AGE"]
    wide = kubectl("get", "llmtj", "-o", "wide", namespace=namespace).stdout.splitlines()[0]
    assert "EVAL-LOSS" in wide and "BASE" in wide


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in EXAMPLES])
def test_examples_are_accepted(kubectl: Kubectl, admission_ns: str, path: Path) -> None:
    proc = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=maestro-test",
        "-f",
        str(path),
        namespace=admission_ns,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("case", SERVER_CASES, ids=[c["name"] for c in SERVER_CASES])
def test_invalid_manifest_is_rejected_naming_the_field(
    corpus_results: dict[str, CompletedProcess[str]], case: dict[str, Any]
) -> None:
    proc = corpus_results[case["name"]]
    assert proc.returncode != 0, f"accepted: {json.dumps(manifest(case))}"
    assert case["error"] in proc.stderr, f"message does not name {case['error']!r}:\n{proc.stderr}"


@pytest.mark.parametrize("case", CORPUS["updates"], ids=[c["name"] for c in CORPUS["updates"]])
def test_fields_that_would_orphan_work_are_immutable(
    kubectl: Kubectl, admission_ns: str, case: dict[str, Any]
) -> None:
    original = copy.deepcopy(CORPUS["bases"][case["base"]])
    original["metadata"]["name"] = f"immutable-{abs(hash(case['name'])) % 10**6}"
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=maestro-test",
        "-f",
        "-",
        input=json.dumps(original),
        namespace=admission_ns,
    )
    proc = dry_run(kubectl, admission_ns, merge_patch(original, case["patch"]))
    assert proc.returncode != 0, "update was accepted"
    assert case["error"] in proc.stderr and "immutable" in proc.stderr, proc.stderr


def test_server_defaults_match_the_models(kubectl: Kubectl, admission_ns: str) -> None:
    minimal = {
        "apiVersion": api.API_VERSION,
        "kind": "LLMDeployment",
        "metadata": {"name": "defaults"},
        "spec": {"model": {"uri": "hf://org/model"}, "autoscaling": {"maxReplicas": 3, "target": 5}},
    }
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=maestro-test",
        "-f",
        "-",
        input=json.dumps(minimal),
        namespace=admission_ns,
    )
    stored = json.loads(
        kubectl("get", "llmdeployment", "defaults", "-o", "json", namespace=admission_ns).stdout
    )
    expected = api.parse(minimal).to_manifest()["spec"]
    assert _same_numbers(stored["spec"], expected), f"server: {stored['spec']}\nmodels: {expected}"


def _same_numbers(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_numbers(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_numbers, a, b))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return bool(a == b)


def test_status_and_scale_subresources(kubectl: Kubectl, admission_ns: str) -> None:
    obj = {
        "apiVersion": api.API_VERSION,
        "kind": "LLMDeployment",
        "metadata": {"name": "scaled"},
        "spec": {"model": {"uri": "hf://org/model"}, "resources": {"gpus": 0}},
    }
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=maestro-test",
        "-f",
        "-",
        input=json.dumps(obj),
        namespace=admission_ns,
    )
    status = LLMDeploymentStatus.model_validate(
        {
            "phase": "Ready",
            "replicas": 1,
            "readyReplicas": 1,
            "selector": "app.kubernetes.io/instance=scaled",
            "endpoint": "http://scaled.ns.svc:8000/v1",
            "model": {"servedName": "scaled"},
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Available",
                    "message": "serving",
                    "lastTransitionTime": "2026-11-26T08:00:00Z",
                    "observedGeneration": 1,
                }
            ],
        }
    )
    patch = {"status": status.model_dump(by_alias=True, exclude_none=True, mode="json")}
    kubectl(
        "patch",
        "llmdeployment",
        "scaled",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(patch),
        namespace=admission_ns,
    )
    stored = json.loads(kubectl("get", "llmdep", "scaled", "-o", "json", namespace=admission_ns).stdout)
    assert stored["status"] == patch["status"]  # nothing pruned: the status schema matches the model
    row = kubectl("get", "llmdep", "scaled", "--no-headers", namespace=admission_ns).stdout.split()
    assert row[:6] == ["scaled", "Ready", "True", "1", "1", "scaled"]

    kubectl("scale", "llmdeployment", "scaled", "--replicas=3", namespace=admission_ns)
    scale = json.loads(
        kubectl(
            "get", "llmdeployment", "scaled", "--subresource=scale", "-o", "json", namespace=admission_ns
        ).stdout
    )
    assert scale["spec"]["replicas"] == 3
    assert scale["status"] == {"replicas": 1, "selector": "app.kubernetes.io/instance=scaled"}


def test_field_selector_on_dataset_ref(kubectl: Kubectl, admission_ns: str) -> None:
    for name, dataset in (("uses-a", "data-a"), ("uses-b", "data-b")):
        job = merge_patch(
            CORPUS["bases"]["training"],
            {"metadata": {"name": name}, "spec": {"datasetRef": {"name": dataset}}},
        )
        kubectl(
            "apply",
            "--server-side",
            "--field-manager=maestro-test",
            "-f",
            "-",
            input=json.dumps(job),
            namespace=admission_ns,
        )
    out = kubectl(
        "get", "llmtj", "--field-selector=spec.datasetRef.name=data-a", "-o", "name", namespace=admission_ns
    ).stdout.split()
    assert out == ["llmtrainingjob.llmops.dev/uses-a"]
