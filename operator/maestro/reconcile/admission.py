"""LLMPolicy admission rules, evaluated the same way by the webhook and by reconcile.

Pure: the caller passes the object, the governing policies and what it knows about referenced
objects. Each violation names the policy and the rule, so a rejected `kubectl apply` says what to
change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maestro.api.common import LabelSelector
from maestro.api.policy import LLMPolicySpec
from maestro.reconcile.store import DATASET, DEPLOYMENT, POLICY, TRAINING, Store

Obj = dict[str, Any]


@dataclass(frozen=True)
class Violation:
    policy: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f'LLMPolicy "{self.policy}" rule {self.rule}: {self.message}'


def governs(policy: Obj, obj: Obj) -> bool:
    sel = (policy.get("spec") or {}).get("selector")
    if not sel:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return LabelSelector.model_validate(sel).matches(labels)


def governing_policies(store: Store, obj: Obj) -> tuple[list[Obj], str | None]:
    """(policies that apply, name of a referenced policy that does not exist)."""
    ns = obj["metadata"]["namespace"]
    ref = (((obj.get("spec") or {}).get("policyRef")) or {}).get("name")
    if ref:
        p = store.get(POLICY, ns, ref)
        return ([p], None) if p is not None else ([], ref)
    policies = [p for p in store.list(POLICY, ns) if governs(p, obj)]
    return sorted(policies, key=lambda p: p["metadata"]["name"]), None


def _source_ok(uri: str, prefixes: list[str]) -> bool:
    return not prefixes or any(uri.startswith(p) for p in prefixes)


def _dataset_rules(name: str, rules: Any, ds_spec: Obj, what: str) -> list[Violation]:
    out: list[Violation] = []
    gov = ds_spec.get("governance") or {}
    if rules.allowed_licenses and gov.get("license") not in rules.allowed_licenses:
        out.append(
            Violation(
                name,
                "admission.allowedLicenses",
                f"{what} has licence {gov.get('license')!r}; allowed: {', '.join(rules.allowed_licenses)}",
            )
        )
    if (
        rules.require_consent_for_personal_data
        and gov.get("containsPersonalData")
        and not ((gov.get("consent") or {}).get("obtained"))
    ):
        out.append(
            Violation(
                name,
                "admission.requireConsentForPersonalData",
                f"{what} declares governance.containsPersonalData but not governance.consent.obtained",
            )
        )
    return out


def check(obj: Obj, policies: list[Obj], store: Store | None = None) -> list[Violation]:
    """Every rule of every governing policy that `obj` violates (empty: admitted)."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    ns = (obj.get("metadata") or {}).get("namespace", "")
    out: list[Violation] = []
    for policy in policies:
        name = policy["metadata"]["name"]
        try:
            rules = LLMPolicySpec.model_validate(policy.get("spec") or {}).admission
        except ValueError:
            continue  # an invalid policy is reported on the policy itself and enforces nothing
        if kind == DATASET:
            out += _dataset_rules(name, rules, spec, "this dataset")
        elif kind == TRAINING:
            base = ((spec.get("baseModel") or {}).get("uri")) or ""
            if not _source_ok(base, rules.allowed_model_sources):
                out.append(
                    Violation(
                        name,
                        "admission.allowedModelSources",
                        f"baseModel.uri {base!r} does not start with any of "
                        f"{', '.join(rules.allowed_model_sources)}",
                    )
                )
            res = spec.get("resources") or {}
            gpus = int(res.get("gpus", 1)) * int(res.get("nodes", 1))
            if rules.max_gpus_per_job is not None and gpus > rules.max_gpus_per_job:
                out.append(
                    Violation(
                        name,
                        "admission.maxGPUsPerJob",
                        f"the job requests {gpus} GPUs (resources.gpus × resources.nodes); "
                        f"at most {rules.max_gpus_per_job} allowed",
                    )
                )
            ds_name = (spec.get("datasetRef") or {}).get("name")
            ds = store.get(DATASET, ns, ds_name) if store is not None and ds_name else None
            if ds is not None:
                out += _dataset_rules(name, rules, ds.get("spec") or {}, f"dataset {ds_name!r}")
                gates = (ds.get("status") or {}).get("gates") or []
                failed = [g.get("name") for g in gates if not g.get("passed")]
                if rules.require_dataset_gates and failed:
                    out.append(
                        Violation(
                            name,
                            "admission.requireDatasetGates",
                            f"dataset {ds_name!r} failed quality gates: {', '.join(map(str, failed))}",
                        )
                    )
        elif kind == DEPLOYMENT:
            model = spec.get("model") or {}
            uris = [u for u in [model.get("uri")] + [a.get("uri") for a in spec.get("adapters") or []] if u]
            for uri in uris:
                if not _source_ok(uri, rules.allowed_model_sources):
                    out.append(
                        Violation(
                            name,
                            "admission.allowedModelSources",
                            f"model uri {uri!r} does not start with any of "
                            f"{', '.join(rules.allowed_model_sources)}",
                        )
                    )
            tj_name = (model.get("trainingJobRef") or {}).get("name")
            tj = store.get(TRAINING, ns, tj_name) if store is not None and tj_name else None
            if rules.require_evaluation_passed and tj is not None:
                ev = (tj.get("status") or {}).get("evaluation") or {}
                if ev.get("passed") is False:
                    out.append(
                        Violation(
                            name,
                            "admission.requireEvaluationPassed",
                            f"training job {tj_name!r} did not pass evaluation",
                        )
                    )
    return out


def requires_evaluation(policies: list[Obj]) -> bool:
    for p in policies:
        if ((p.get("spec") or {}).get("admission") or {}).get("requireEvaluationPassed"):
            return True
    return False
