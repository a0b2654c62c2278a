"""The only package that talks to the Kubernetes API: server-side apply under one field manager."""

from maestro.k8s.client import FIELD_MANAGER, Kube
from maestro.k8s.errors import ApiError, Conflict, NotFound

__all__ = ["FIELD_MANAGER", "ApiError", "Conflict", "Kube", "NotFound"]
