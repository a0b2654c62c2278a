"""The operator's ClusterRole, as data: the chart is generated from (and checked against) this list,
and a cluster test runs the operator bound to exactly these rules.

Minimum needed: the four kinds (+ status, for status writes; + scale is not needed, the autoscaler
uses it), the children it creates, pods (read termination messages, progress-token pod check),
events, TokenReviews (progress endpoint), CRD reads (optional KEDA/Prometheus-operator detection) and
the ValidatingWebhookConfiguration it manages (no MutatingWebhookConfiguration: none is used, and
write access to them would let the operator intercept any object). No Secret access: Secrets are
only referenced by name in pod specs.
"""

from __future__ import annotations

from typing import Any

from maestro.api import GROUP, KINDS

CLUSTER_ROLE_NAME = "maestro-operator"

_CHILD_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]

RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [GROUP],
        "resources": [k.crd.plural for k in KINDS],
        "verbs": ["get", "list", "watch", "patch", "update"],
    },
    {
        "apiGroups": [GROUP],
        "resources": [f"{k.crd.plural}/status" for k in KINDS],
        "verbs": ["get", "patch", "update"],
    },
    {
        "apiGroups": [""],
        "resources": ["configmaps", "services", "persistentvolumeclaims"],
        "verbs": _CHILD_VERBS,
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": _CHILD_VERBS},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": _CHILD_VERBS},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": _CHILD_VERBS},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _CHILD_VERBS},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": _CHILD_VERBS},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": _CHILD_VERBS},
    {"apiGroups": ["monitoring.coreos.com"], "resources": ["servicemonitors"], "verbs": _CHILD_VERBS},
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["admissionregistration.k8s.io"],
        # Kopf's managed mode creates and patches the one validating configuration; no mutating one
        # (controllers.webhook keeps Kopf from managing a MutatingWebhookConfiguration)
        "resources": ["validatingwebhookconfigurations"],
        "verbs": ["get", "list", "watch", "create", "update", "patch"],
    },
]


def cluster_role(name: str = CLUSTER_ROLE_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "maestro", "app.kubernetes.io/component": "operator"},
        },
        "rules": RULES,
    }


def cluster_role_binding(
    service_account: str, namespace: str, name: str = CLUSTER_ROLE_NAME
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
