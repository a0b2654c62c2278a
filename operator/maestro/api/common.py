"""Building blocks shared by the four kinds: base models, reference types, resources, CEL helpers.

Every rule that the API server must enforce is declared once, next to the field it guards, as a
CEL rule (`x-kubernetes-validations`) *and* as the equivalent Python check, so a manifest that the
server rejects is also rejected by `Model.model_validate` (the tests hold both sides to one corpus).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "llmops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
#: `kubectl get llmops` lists every Maestro object.
CATEGORY = "llmops"

#: Longest URI we accept; also bounds the cost of the CEL rules that inspect URIs.
MAX_URI_LENGTH = 2048
#: Object names of kinds that own children (Jobs, Services, PVCs) are kept short enough that
#: `<name>-<suffix>` still fits the 63-character DNS label limit of Services and Job pods.
MAX_OWNER_NAME_LENGTH = 52

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: Kubernetes resource.Quantity, the same pattern controller-gen emits.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def cel(
    rule: str, message: str, *, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """One `x-kubernetes-validations` entry. `field_path` makes the server name the offending field."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str], **extra: Any) -> JsonDict:
    """`json_schema_extra` payload carrying CEL rules (plus any other `x-kubernetes-*` keys)."""
    return {"x-kubernetes-validations": list(rules), **extra}


def immutable(what: str) -> JsonDict:
    """Transition rule: the field may be set on create and never changed afterwards."""
    return validations(
        cel(
            "self == oldSelf",
            f"{what} is immutable: changing it would orphan work already done; create a new object instead",
        )
    )


class SpecModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields are errors (typos fail loudly)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=False,
        validate_default=False,
    )


class StatusModel(BaseModel):
    """Base of every status model: written by the operator; unknown fields are ignored when read back."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


# --- scalar types -------------------------------------------------------------------------------


def _quantity(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a Kubernetes quantity such as 500m, 4, 16Gi")
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    if not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (examples: 500m, 4, 16Gi)")
    return value


#: A Kubernetes resource quantity ("500m", "4", "16Gi"); YAML integers are accepted.
Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

#: A list of short terms (group markers, probe terms).
Terms = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=64)]

#: Name of an object in the same namespace.
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]


def uri_scheme_rule(schemes: tuple[str, ...], what: str) -> dict[str, str]:
    alternatives = "|".join(schemes)
    listed = ", ".join(f"{s}://" for s in schemes)
    return cel(
        f"self.matches('^({alternatives})://[^\\\\s]+$')",
        f"{what} must be a URI with one of the schemes {listed} and no whitespace",
    )


def uri_checker(schemes: tuple[str, ...], what: str) -> Callable[[str], str]:
    """Python mirror of `uri_scheme_rule`, for `AfterValidator`."""
    pattern = re.compile(rf"^({'|'.join(schemes)})://\S+$")
    listed = ", ".join(f"{s}://" for s in schemes)

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{what} must be a URI with one of the schemes {listed} and no whitespace")
        return value

    return check


def uri_constraints(schemes: tuple[str, ...], what: str) -> Any:
    """Length bounds plus the CEL scheme rule, for use inside `Annotated[str, ...]`."""
    return Field(
        min_length=1, max_length=MAX_URI_LENGTH, json_schema_extra=validations(uri_scheme_rule(schemes, what))
    )


# --- enums shared across kinds --------------------------------------------------------------------


class PIIEntity(StrEnum):
    """Kinds of personal or secret data the data worker and the guard detect (one list for both)."""

    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CREDIT_CARD = "CREDIT_CARD"
    IBAN = "IBAN"
    US_SSN = "US_SSN"
    IPV4 = "IPV4"
    IPV6 = "IPV6"
    API_KEY = "API_KEY"
    PRIVATE_KEY = "PRIVATE_KEY"
    URL_CREDENTIALS = "URL_CREDENTIALS"
    PERSON = "PERSON"
    LOCATION = "LOCATION"


#: Entities detected when a spec does not list any: the pattern-based ones. PERSON and LOCATION
#: need a name/place recogniser and are opt-in.
DEFAULT_PII_ENTITIES: tuple[PIIEntity, ...] = (
    PIIEntity.EMAIL,
    PIIEntity.PHONE,
    PIIEntity.CREDIT_CARD,
    PIIEntity.IBAN,
    PIIEntity.US_SSN,
    PIIEntity.IPV4,
    PIIEntity.IPV6,
    PIIEntity.API_KEY,
    PIIEntity.PRIVATE_KEY,
    PIIEntity.URL_CREDENTIALS,
)


def default_pii_entities() -> list[PIIEntity]:
    return list(DEFAULT_PII_ENTITIES)


def unique_list(what: str) -> Callable[[list[Any]], list[Any]]:
    """Python mirror of `x-kubernetes-list-type: set` (duplicates are rejected by the server too)."""

    def check(values: list[Any]) -> list[Any]:
        seen: set[Any] = set()
        for value in values:
            if value in seen:
                raise ValueError(f"{what} lists {value!r} more than once")
            seen.add(value)
        return values

    return check


def unique_keys(key: str, what: str) -> Callable[[list[Any]], list[Any]]:
    """Python mirror of `x-kubernetes-list-type: map` keyed by `key`."""

    def check(items: list[Any]) -> list[Any]:
        seen: set[Any] = set()
        for item in items:
            value = getattr(item, key)
            if value in seen:
                raise ValueError(f"{what} has two entries with {key}={value!r}")
            seen.add(value)
        return items

    return check


SET: JsonDict = {"x-kubernetes-list-type": "set"}


# --- references -----------------------------------------------------------------------------------


class LocalObjectReference(SpecModel):
    """A reference to an object of a known kind in the same namespace."""

    name: ObjectName = Field(description="Name of the referenced object (same namespace).")


class SecretReference(SpecModel):
    """A Secret in the same namespace; the operator mounts or reads it, never copies it into status."""

    name: ObjectName = Field(description="Name of the Secret (same namespace).")


class LabelSelectorRequirement(SpecModel):
    """One set-based label requirement, as in a Kubernetes LabelSelector."""

    key: str = Field(min_length=1, max_length=317, description="Label key the requirement applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key's value is matched against `values`."
    )
    values: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list,
        max_length=64,
        description="Label values; must be non-empty for In/NotIn and empty for Exists/DoesNotExist.",
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(self.operator in ['In', 'NotIn']) == (size(self.values) > 0)",
                "values must be non-empty for operator In/NotIn and empty for Exists/DoesNotExist",
                field_path=".values",
            )
        )
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            raise ValueError(
                "values must be non-empty for operator In/NotIn and empty for Exists/DoesNotExist"
            )
        return self


class LabelSelector(SpecModel):
    """Selects objects by label; an empty selector matches every object in the namespace."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, description="Labels an object must carry, all of them, with these exact values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Set-based requirements, all of which must hold."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes LabelSelector semantics, so reconcile and admission agree with `kubectl -l`."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


# --- compute and storage ------------------------------------------------------------------------


class Toleration(SpecModel):
    """A pod toleration, as in the Kubernetes core API (lets GPU pods land on tainted GPU nodes)."""

    key: str | None = Field(
        None, max_length=317, description="Taint key the toleration applies to; empty matches all keys."
    )
    operator: Literal["Exists", "Equal"] = Field(
        "Equal", description="Exists matches any value; Equal matches `value`."
    )
    value: str | None = Field(
        None, max_length=63, description="Taint value to match when the operator is Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, description="For NoExecute: how long the pod stays bound after the taint appears."
    )


class ComputeResources(SpecModel):
    """What each pod of the workload asks the scheduler for."""

    gpus: int = Field(
        1,
        ge=0,
        le=64,
        description="Accelerators per pod; 0 runs on CPU (small models and local development).",
    )
    gpu_resource_name: str = Field(
        "nvidia.com/gpu",
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$",
        description="Extended resource name the accelerators are requested under (e.g. nvidia.com/gpu, "
        "amd.com/gpu).",
    )
    cpu: Quantity | None = Field(
        None, description="CPU request and limit per pod (e.g. 4, 500m); defaulted by the operator."
    )
    memory: Quantity | None = Field(
        None, description="Memory request and limit per pod (e.g. 32Gi); defaulted by the operator."
    )
    shared_memory: Quantity | None = Field(
        None,
        description="Size of /dev/shm (RAM-backed) per pod; NCCL and data loaders need more than the 64Mi "
        "default.",
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict,
        description="Node labels the pods must be scheduled on (e.g. a GPU product label).",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations for tainted (typically GPU) nodes."
    )
    priority_class_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN,
        description="PriorityClass of the pods (preemption order).",
    )


class PVCStorage(SpecModel):
    """A PersistentVolumeClaim: an existing one (`claimName`) or one the operator creates and owns."""

    claim_name: ObjectName | None = Field(
        None, description="Use this existing claim instead of creating one; the operator never deletes it."
    )
    size: Quantity = Field(
        "10Gi", description="Size of the claim the operator creates (ignored with claimName)."
    )
    storage_class_name: str | None = Field(
        None,
        max_length=253,
        description="StorageClass of the created claim; the cluster default when omitted.",
    )


# --- the kind model and its CRD facts -------------------------------------------------------------


@dataclass(frozen=True)
class PrinterColumn:
    """One `kubectl get` column; `json_path` is checked against the schema by the tests."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0


@dataclass(frozen=True)
class ScaleSubresource:
    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str = ".status.selector"


@dataclass(frozen=True)
class KindInfo:
    """What the CRD says about a kind beyond its schema."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    scale: ScaleSubresource | None = None
    selectable_fields: tuple[str, ...] = ()
    #: CEL rules on the whole object (e.g. about metadata.name).
    root_validations: tuple[dict[str, str], ...] = ()
    categories: tuple[str, ...] = field(default=(CATEGORY,))

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def phase_column() -> PrinterColumn:
    return PrinterColumn("Phase", "string", ".status.phase", "Lifecycle phase")


def ready_column() -> PrinterColumn:
    return PrinterColumn(
        "Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "Ready condition status"
    )


def age_column() -> PrinterColumn:
    return PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation")


OWNER_NAME_RULE = cel(
    f"self.metadata.name.size() <= {MAX_OWNER_NAME_LENGTH} && self.metadata.name.matches('{DNS1035_LABEL}')",
    f"metadata.name must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter) of at "
    f"most "
    f"{MAX_OWNER_NAME_LENGTH} characters: it names the Jobs, Services and claims the operator creates",
)


def check_owner_name(metadata: dict[str, Any]) -> None:
    """Python mirror of OWNER_NAME_RULE, applied when a manifest carries a name."""
    name = metadata.get("name")
    if name is None:
        return
    if (
        not isinstance(name, str)
        or len(name) > MAX_OWNER_NAME_LENGTH
        or not re.fullmatch(DNS1035_LABEL, name)
    ):
        raise ValueError(OWNER_NAME_RULE["message"])


class KindModel(BaseModel):
    """A whole object (apiVersion, kind, metadata, spec, status), e.g. a Kopf body or a parsed manifest."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    crd: ClassVar[KindInfo]

    api_version: Literal["llmops.dev/v1alpha1"] = Field(
        "llmops.dev/v1alpha1", description="Always llmops.dev/v1alpha1."
    )
    kind: str = Field(description="Kind of the object; each subclass pins its own.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")

    def to_manifest(self) -> dict[str, Any]:
        """The wire form: camelCase keys, no nulls (so patches never erase fields by accident)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
