"""Builders: pure spec -> manifest functions (no cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from maestro.api import LLMDatasetSpec, LLMDeploymentSpec, LLMPolicySpec, LLMTrainingJobSpec
from maestro.builders import dataset, guard_config, serving, training
from maestro.builders.meta import ANNOTATION_CONFIG_DIGEST, child_name
from maestro.builders.settings import Settings
from maestro.workers.data import contract as data_contract
from maestro.workers.monitor import contract as monitor_contract
from maestro.workers.train import contract as train_contract

pytestmark = pytest.mark.unit

DS_INPUT = training.DatasetInput(
    claim="support-chats-data", sub_path="sha256-abc", version="sha256:abc", schema_type="chat"
)
MODEL = serving.ResolvedModel(
    uri="pvc://support-lora-model/model", served_name="support-bot", digest="sha256:1"
)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_child_names_fit_dns_labels() -> None:
    long = "a" * 52
    for suffix in ("val-abcdef", "train-abcde", "guard", "metrics", "model", "data"):
        name = child_name(long, suffix)
        assert len(name) <= 63 and name.endswith(suffix)
    assert child_name("x", "guard") == "x-guard"


def test_dataset_job_passes_spec_and_mounts_the_claim(dataset_obj: dict[str, Any], restricted: Any) -> None:
    spec = LLMDatasetSpec.model_validate(dataset_obj["spec"])
    job = dataset.build_job(dataset_obj, spec, Settings())
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = env_of(c)
    assert LLMDatasetSpec.model_validate_json(env[data_contract.ENV_SPEC]) == spec
    assert env[data_contract.ENV_ARTIFACT_PREFIX] == "pvc://support-chats-data/"
    assert c["command"] == list(data_contract.COMMAND)
    assert {
        "name": "output",
        "persistentVolumeClaim": {"claimName": "support-chats-data", "readOnly": False},
    } in pod["volumes"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert restricted(pod) == []
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-support-chats"
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and data_contract.EXIT_IO_ERROR not in rule["onExitCodes"]["values"]
    pvc = dataset.build_pvc(dataset_obj, spec, Settings())
    assert pvc is not None and pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_dataset_job_carries_retention_and_the_pinned_versions(dataset_obj: dict[str, Any]) -> None:
    """The worker prunes expired versions: the days travel in the spec, the pins in their own env var
    (sorted and deduplicated, so the same pins give the same manifest)."""
    spec = LLMDatasetSpec.model_validate(
        {**dataset_obj["spec"], "governance": {**dataset_obj["spec"]["governance"], "retentionDays": 30}}
    )
    b, a = "sha256:" + "b" * 64, "sha256:" + "a" * 64

    def job_env(job: dict[str, Any]) -> dict[str, Any]:
        return env_of(job["spec"]["template"]["spec"]["containers"][0])

    env = job_env(dataset.build_job(dataset_obj, spec, Settings(), (b, a, b)))
    assert json.loads(env[data_contract.ENV_SPEC])["governance"]["retentionDays"] == 30
    assert env[data_contract.ENV_PINNED_VERSIONS] == f"{a},{b}"
    assert job_env(dataset.build_job(dataset_obj, spec, Settings()))[data_contract.ENV_PINNED_VERSIONS] == ""
    # without retention nothing is pruned, so the pins are not passed
    plain = LLMDatasetSpec.model_validate(dataset_obj["spec"])
    assert data_contract.ENV_PINNED_VERSIONS not in job_env(
        dataset.build_job(dataset_obj, plain, Settings(), (a,))
    )


def test_dataset_job_name_follows_the_spec(dataset_obj: dict[str, Any]) -> None:
    spec = LLMDatasetSpec.model_validate(dataset_obj["spec"])
    changed = spec.model_copy(
        update={"quality_gates": spec.quality_gates.model_copy(update={"min_records": 5})}
    )
    assert dataset.job_name(dataset_obj, spec) == dataset.job_name(dataset_obj, spec)
    assert dataset.job_name(dataset_obj, spec) != dataset.job_name(dataset_obj, changed)


def test_training_job_gpu_queue_and_progress(training_obj: dict[str, Any], restricted: Any) -> None:
    raw = training_obj["spec"] | {
        "queueName": "team-a",
        "resources": {
            "gpus": 4,
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "priorityClassName": "high",
        },
    }
    spec = LLMTrainingJobSpec.model_validate(raw)
    job = training.build_job(training_obj, spec, DS_INPUT, Settings(progress_url="http://op:8090"))
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["priorityClassName"] == "high"
    env = env_of(c)
    assert env[train_contract.ENV_PROGRESS_URL] == "http://op:8090/v1/progress/team-a/support-lora"
    assert env[train_contract.ENV_DATASET_VERSION] == "sha256:abc"
    dataset_mount = next(m for m in c["volumeMounts"] if m["name"] == "dataset")
    assert dataset_mount["readOnly"] is True and dataset_mount["subPath"] == "sha256-abc"
    token = next(v for v in pod["volumes"] if v["name"] == "progress-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "maestro-progress"
    assert pod["automountServiceAccountToken"] is False
    assert restricted(pod) == []
    assert "completionMode" not in job["spec"]
    assert training.build_service(training_obj, spec) is None


def test_multi_node_training_is_indexed_with_rendezvous(training_obj: dict[str, Any]) -> None:
    spec = LLMTrainingJobSpec.model_validate(training_obj["spec"] | {"resources": {"gpus": 8, "nodes": 2}})
    job = training.build_job(training_obj, spec, DS_INPUT, Settings())
    svc = training.build_service(training_obj, spec)
    assert svc is not None and svc["spec"]["clusterIP"] == "None"
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"]
    env = env_of(pod["containers"][0])
    assert env["MASTER_ADDR"] == f"{job['metadata']['name']}-0.{svc['metadata']['name']}.team-a.svc"
    assert env["NNODES"] == "2" and "fieldRef" in env["NODE_RANK"]
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}


def test_placement_defaults_per_workload_kind(
    training_obj: dict[str, Any], deployment_obj: dict[str, Any]
) -> None:
    settings = Settings.from_env(
        {
            "MAESTRO_JOB_NODE_SELECTOR": '{"pool": "train", "zone": "a"}',
            "MAESTRO_JOB_TOLERATIONS": '[{"key": "dedicated", "operator": "Exists"}]',
            "MAESTRO_SERVING_NODE_SELECTOR": '{"pool": "serve"}',
        }
    )
    spec = LLMTrainingJobSpec.model_validate(
        training_obj["spec"] | {"resources": {"gpus": 1, "nodeSelector": {"zone": "b"}}}
    )
    pod = training.build_job(training_obj, spec, DS_INPUT, settings)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "train", "zone": "b"}  # the spec wins key by key
    assert {"key": "dedicated", "operator": "Exists"} in pod["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    dspec = LLMDeploymentSpec.model_validate(deployment_obj["spec"])
    dep = serving.build_deployment(deployment_obj, dspec, MODEL, settings)
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "serve"}
    for bad, message in (
        ({"MAESTRO_JOB_NODE_SELECTOR": "pool=train"}, "MAESTRO_JOB_NODE_SELECTOR must be JSON"),
        ({"MAESTRO_SERVING_TOLERATIONS": '{"key": "x"}'}, "MAESTRO_SERVING_TOLERATIONS must be a JSON array"),
    ):
        with pytest.raises(ValueError, match=message):
            Settings.from_env(bad)


def test_serving_deployment(
    deployment_obj: dict[str, Any], policy_obj: dict[str, Any], restricted: Any
) -> None:
    spec = LLMDeploymentSpec.model_validate(
        deployment_obj["spec"] | {"resources": {"gpus": 2}, "runtime": {"tensorParallelSize": 2}}
    )
    pspec = LLMPolicySpec.model_validate(policy_obj["spec"])
    doc = guard_config.render("quickstart", pspec, "support-bot")
    dep = serving.build_deployment(
        deployment_obj, spec, MODEL, Settings(), api_keys_secret="support-api-keys"
    )
    pod = dep["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == ["vllm", "guard", "monitor"]
    vllm = pod["containers"][0]
    assert vllm["image"] == "vllm/vllm-openai:v0.33.0"
    assert vllm["args"][0] == "/mnt/maestro/models/support-lora-model/model"
    assert vllm["args"][vllm["args"].index("--tensor-parallel-size") + 1] == "2"
    assert vllm["startupProbe"]["failureThreshold"] * vllm["startupProbe"]["periodSeconds"] >= 1800
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
    assert restricted(pod) == []
    cm = serving.build_config_map(deployment_obj, doc)
    assert cm["metadata"]["annotations"][ANNOTATION_CONFIG_DIGEST] == guard_config.config_digest(doc)
    svc = serving.build_service(deployment_obj)
    assert [p["port"] for p in svc["spec"]["ports"]] == [8080]
    netpol = serving.build_network_policy(deployment_obj, spec)
    assert {p["port"] for p in netpol["spec"]["ingress"][0]["ports"]} == {8080, 9090}
    assert not serving.wants_pdb(spec)


def test_guards_share_limits_through_the_operators_redis(deployment_obj: dict[str, Any]) -> None:
    """With a Redis in the operator's settings every guard gets its URL, the deployment's own key prefix
    and the password from the Secret (by reference); without one nothing changes (limits per pod)."""
    from maestro.workers.guard import contract

    spec = LLMDeploymentSpec.model_validate(deployment_obj["spec"])

    def guard_env(settings: Settings) -> list[dict[str, Any]]:
        dep = serving.build_deployment(deployment_obj, spec, MODEL, settings, api_keys_secret="k")
        [c] = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "guard"]
        return list(c["env"])

    assert not [e for e in guard_env(Settings()) if "LIMITS_REDIS" in e["name"]]
    settings = Settings.from_env(
        {
            "MAESTRO_GUARD_LIMITS_REDIS_URL": "redis://redis.infra.svc:6379/2",
            "MAESTRO_GUARD_LIMITS_REDIS_PASSWORD_SECRET": "redis-auth",
        }
    )
    env = {e["name"]: e for e in guard_env(settings)}
    meta = deployment_obj["metadata"]
    assert env[contract.LIMITS_REDIS_URL_ENV]["value"] == "redis://redis.infra.svc:6379/2"
    prefix = f"maestro:{{{meta['namespace']}/{meta['name']}}}:"  # a Redis Cluster hash tag per deployment
    assert env[contract.LIMITS_REDIS_PREFIX_ENV]["value"] == prefix
    assert env[contract.LIMITS_REDIS_PASSWORD_ENV]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-auth", "key": "password", "optional": True}
    }
    # the serving NetworkPolicy restricts ingress only: the guard's egress to Redis needs no rule
    assert serving.build_network_policy(deployment_obj, spec)["spec"]["policyTypes"] == ["Ingress"]
    with pytest.raises(ValueError, match="MAESTRO_GUARD_LIMITS_REDIS_URL must be a redis://"):
        Settings.from_env({"MAESTRO_GUARD_LIMITS_REDIS_URL": "redis.infra.svc:6379"})


def test_policy_change_changes_the_config_map_not_the_pod_template(
    deployment_obj: dict[str, Any], policy_obj: dict[str, Any]
) -> None:
    """A policy edit must reach running guards through the mounted ConfigMap: the pod template (and
    so the pods, and the model loaded in them) stays byte-identical."""
    spec = LLMDeploymentSpec.model_validate(deployment_obj["spec"])
    p1 = LLMPolicySpec.model_validate(policy_obj["spec"])
    p2 = p1.model_copy(update={"request": p1.request.model_copy(update={"blocked_terms": ["x", "y"]})})
    doc1, doc2 = guard_config.render("q", p1, "m"), guard_config.render("q", p2, "m")
    dep = serving.build_deployment(deployment_obj, spec, MODEL, Settings(), api_keys_secret="k")
    assert ANNOTATION_CONFIG_DIGEST not in (dep["spec"]["template"]["metadata"].get("annotations") or {})
    c1, c2 = serving.build_config_map(deployment_obj, doc1), serving.build_config_map(deployment_obj, doc2)
    assert c1["data"] != c2["data"]
    a1, a2 = (c["metadata"]["annotations"][ANNOTATION_CONFIG_DIGEST] for c in (c1, c2))
    assert a1 != a2


def test_autoscalers_target_the_llmdeployment(deployment_obj: dict[str, Any]) -> None:
    spec = LLMDeploymentSpec.model_validate(
        deployment_obj["spec"]
        | {
            "replicas": 2,
            "autoscaling": {"minReplicas": 0, "maxReplicas": 4, "metric": "queue-depth", "target": 5},
        }
    )
    hpa = serving.build_autoscaler(deployment_obj, spec, serving.Capabilities())
    assert hpa is not None and hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": "LLMDeployment",
        "name": "support-bot",
    }
    assert hpa["spec"]["minReplicas"] == 1
    keda = serving.build_autoscaler(deployment_obj, spec, serving.Capabilities(keda=True))
    assert keda is not None and keda["kind"] == "ScaledObject" and keda["spec"]["minReplicaCount"] == 0
    assert keda["spec"]["scaleTargetRef"]["kind"] == "LLMDeployment"
    assert serving.wants_pdb(spec)
    assert serving.build_service_monitor(deployment_obj, spec, serving.Capabilities()) is None


def test_adapter_model_serves_base_plus_lora(deployment_obj: dict[str, Any]) -> None:
    spec = LLMDeploymentSpec.model_validate(deployment_obj["spec"])
    model = serving.ResolvedModel(
        uri="hf://org/base", served_name="bot-base", adapters={"bot": "pvc://out/model"}
    )
    dep = serving.build_deployment(deployment_obj, spec, model, Settings())
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "org/base"
    assert args[args.index("--lora-modules") + 1] == "bot=/mnt/maestro/models/out/model"
    assert "--max-lora-rank" not in args  # rank unknown (uri adapter): vLLM's default applies


@pytest.mark.parametrize(
    ("ranks", "flag"), [([4], "8"), ([16], "16"), ([20, 8], "32"), ([300], "320"), ([512], "512")]
)
def test_max_lora_rank_covers_the_largest_adapter(
    deployment_obj: dict[str, Any], ranks: list[int], flag: str
) -> None:
    spec = LLMDeploymentSpec.model_validate(deployment_obj["spec"])
    names = [f"a{i}" for i in range(len(ranks))]
    model = serving.ResolvedModel(
        uri="hf://org/base",
        served_name="bot-base",
        adapters={n: f"pvc://out/{n}" for n in names},
        adapter_ranks=dict(zip(names, ranks, strict=True)),
    )
    dep = serving.build_deployment(deployment_obj, spec, model, Settings())
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-lora-rank") + 1] == flag
    assert serving.max_lora_rank([]) is None
    assert serving.max_lora_rank([1024]) == 1024  # nothing fits: vLLM's own error names the limit


def test_max_lora_rank_in_extra_args_wins(deployment_obj: dict[str, Any]) -> None:
    raw = {**deployment_obj["spec"], "runtime": {"extraArgs": ["--max-lora-rank=64"]}}
    spec = LLMDeploymentSpec.model_validate(raw)
    model = serving.ResolvedModel(
        uri="hf://org/base", served_name="b", adapters={"x": "pvc://o/m"}, adapter_ranks={"x": 20}
    )
    args = serving.vllm_args(spec, model, serving._Mounts())
    assert args.count("--max-lora-rank=64") == 1 and "--max-lora-rank" not in args


def test_bias_probes_ask_the_fine_tune_with_a_key_from_the_policys_secret(
    deployment_obj: dict[str, Any],
) -> None:
    """A LoRA training job is served as the adapter `support-bot` on top of `support-bot-base`: the
    probes must measure the adapter (what clients get), and pass the guard's auth with a mounted key."""
    obj = json.loads(json.dumps(deployment_obj))
    obj["spec"]["monitoring"] = {"enabled": True, "biasProbes": {"enabled": True}}
    spec = LLMDeploymentSpec.model_validate(obj["spec"])
    lora = serving.ResolvedModel(
        uri="pvc://quickstart-inputs/models/base",
        served_name="support-bot-base",
        adapters={"support-bot": "pvc://support-lora-model/model"},
    )
    dep = serving.build_deployment(obj, spec, lora, Settings(), api_keys_secret="support-api-keys")
    pod = dep["spec"]["template"]["spec"]
    mon = next(c for c in pod["containers"] if c["name"] == "monitor")
    env = env_of(mon)
    assert env[monitor_contract.ENV_SERVED_MODEL] == "support-bot"
    assert env[monitor_contract.ENV_PROBE_API_KEY_FILE] == monitor_contract.PROBE_KEYS_DIR
    mount = next(m for m in mon["volumeMounts"] if m["mountPath"] == monitor_contract.PROBE_KEYS_DIR)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "support-api-keys" and mount["readOnly"] is True
    # no auth configured: no key mounted, nothing to read
    bare = serving.build_deployment(obj, spec, lora, Settings())
    bare_mon = next(c for c in bare["spec"]["template"]["spec"]["containers"] if c["name"] == "monitor")
    assert monitor_contract.ENV_PROBE_API_KEY_FILE not in env_of(bare_mon)
