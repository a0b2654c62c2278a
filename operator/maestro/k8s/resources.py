"""Where each kind lives on the API server: (apiVersion, kind) -> URL pieces.

A fixed table instead of discovery: the operator manages a known, small set of kinds, and a table
keeps every request to one dict lookup (the bench creates thousands of objects).
"""

from __future__ import annotations

from dataclasses import dataclass

from maestro.api import API_VERSION, KINDS


@dataclass(frozen=True)
class ResourceType:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0] if "/" in self.api_version else ""

    def base(self) -> str:
        return f"/api/{self.api_version}" if not self.group else f"/apis/{self.api_version}"

    def collection(self, namespace: str | None) -> str:
        if self.namespaced and namespace:
            return f"{self.base()}/namespaces/{namespace}/{self.plural}"
        return f"{self.base()}/{self.plural}"

    def item(self, name: str, namespace: str | None) -> str:
        return f"{self.collection(namespace)}/{name}"


_TYPES = [
    ResourceType("v1", "ConfigMap", "configmaps"),
    ResourceType("v1", "Secret", "secrets"),
    ResourceType("v1", "Service", "services"),
    ResourceType("v1", "ServiceAccount", "serviceaccounts"),
    ResourceType("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ResourceType("v1", "Pod", "pods"),
    ResourceType("v1", "Event", "events"),
    ResourceType("v1", "Namespace", "namespaces", namespaced=False),
    ResourceType("v1", "Node", "nodes", namespaced=False),
    ResourceType("apps/v1", "Deployment", "deployments"),
    ResourceType("batch/v1", "Job", "jobs"),
    ResourceType("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ResourceType("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ResourceType("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ResourceType("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
    ResourceType("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
    *(ResourceType(API_VERSION, k.crd.kind, k.crd.plural) for k in KINDS),
    ResourceType("authentication.k8s.io/v1", "TokenReview", "tokenreviews", namespaced=False),
    ResourceType(
        "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False
    ),
    ResourceType(
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        namespaced=False,
    ),
    ResourceType("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
    ResourceType(
        "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False
    ),
]
TYPES: dict[tuple[str, str], ResourceType] = {(t.api_version, t.kind): t for t in _TYPES}


def resource_type(api_version: str, kind: str) -> ResourceType:
    try:
        return TYPES[(api_version, kind)]
    except KeyError:
        raise KeyError(
            f"maestro.k8s does not know {kind} in {api_version}; add it to resources.TYPES"
        ) from None
