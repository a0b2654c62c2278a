"""docs/api.md, rendered from the same structural schemas as the CRDs (so the reference cannot drift)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from maestro.api.common import API_VERSION, KindModel
from maestro.api.conditions import PERMANENT, RETRIABLE, ConditionType, Reason
from maestro.api.crd import crd


def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = node.get("type", "any")
    if kind == "array":
        return f"[]{_type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type_of(node['additionalProperties'])}"
    return str(kind)


def _constraints(node: dict[str, Any]) -> str:
    parts: list[str] = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    lo, hi = node.get("minimum"), node.get("maximum")
    if lo is not None:
        parts.append(f"{'>' if node.get('exclusiveMinimum') else '≥'} {lo}")
    if hi is not None:
        parts.append(f"{'<' if node.get('exclusiveMaximum') else '≤'} {hi}")
    if "maxLength" in node:
        parts.append(f"≤ {node['maxLength']} chars")
    if "maxItems" in node:
        parts.append(f"≤ {node['maxItems']} items")
    if node.get("x-kubernetes-list-type") in ("set", "map"):
        keys = node.get("x-kubernetes-list-map-keys")
        parts.append("unique" + (f" by `{keys[0]}`" if keys else ""))
    for rule in node.get("x-kubernetes-validations", []):
        if rule["rule"] == "self == oldSelf":
            parts.append("immutable")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(node: dict[str, Any], path: str, required: bool) -> Iterator[tuple[str, ...]]:
    default = node.get("default")
    yield (
        f"`{path}`" + (" *(required)*" if required else ""),
        f"`{_type_of(node)}`",
        "" if default is None else f"`{json.dumps(default, separators=(',', ':'))}`",
        _cell(node.get("description", "")) + (f" ({_constraints(node)})" if _constraints(node) else ""),
    )
    yield from _children(node, path)


def _children(node: dict[str, Any], path: str) -> Iterator[tuple[str, ...]]:
    if node.get("type") == "array":
        node, path = node.get("items", {}), f"{path}[]"
    elif node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        node, path = node["additionalProperties"], f"{path}.*"
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        yield from _rows(sub, f"{path}.{name}", name in required)


def _rules(node: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    for rule in node.get("x-kubernetes-validations", []):
        if rule["rule"] != "self == oldSelf":
            yield (path + rule.get("fieldPath", "")).lstrip("."), rule["message"]
    if node.get("type") == "array":
        yield from _rules(node.get("items", {}), f"{path}[]")
    for name, sub in node.get("properties", {}).items():
        yield from _rules(sub, f"{path}.{name}" if path else name)


def _table(rows: Iterator[tuple[str, ...]]) -> list[str]:
    out = ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def kind_section(kind: type[KindModel]) -> list[str]:
    definition = crd(kind)
    info = kind.crd
    version = definition["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    lines = [f"## {info.kind}", "", schema["description"], ""]
    facts = [
        f"`kubectl get {info.plural}` (short name `{'`, `'.join(info.short_names)}`; also listed by "
        f"`kubectl get {', '.join(info.categories)}`)",
        "subresources: " + ", ".join(f"`{s}`" for s in version["subresources"]),
    ]
    if info.scale is not None:
        facts.append(
            f"scale: `{info.scale.spec_replicas_path}` ↔ `{info.scale.status_replicas_path}`, "
            f"selector `{info.scale.label_selector_path}` (HPA/KEDA target the {info.kind} itself)"
        )
    if info.selectable_fields:
        facts.append("field selectors: " + ", ".join(f"`{p[1:]}`" for p in info.selectable_fields))
    columns = ", ".join(c.name + (" (wide)" if c.priority else "") for c in info.printer_columns)
    facts.append(f"columns: {columns}")
    lines += [f"- {f}" for f in facts] + [""]
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    lines += ["### spec", "", *_table(_children(spec, "spec")), ""]
    rules = list(_rules(schema, ""))
    if rules:
        lines += ["### Validation rules (enforced by the API server)", ""]
        lines += [f"- `{p or 'object'}`: {_cell(m)}" for p, m in rules]
        lines += [""]
    lines += ["### status", "", *_table(_children(status, "status")), ""]
    return lines


def render(kinds: tuple[type[KindModel], ...]) -> str:
    lines = [
        "<!-- Generated by `maestro crds generate` from operator/maestro/api; do not edit. -->",
        "# Maestro API reference",
        "",
        f"All kinds are namespaced and belong to `{API_VERSION}`. Field names are camelCase on the wire; "
        "defaults are applied by the API server, so `kubectl get -o yaml` shows them. "
        "`kubectl explain <kind>.spec` prints the same descriptions.",
        "",
        "| Kind | Short name | Description |",
        "|---|---|---|",
    ]
    for kind in kinds:
        anchor = kind.crd.kind.lower()
        summary = (kind.__doc__ or "").strip().splitlines()[0]
        lines.append(f"| [{kind.crd.kind}](#{anchor}) | `{kind.crd.short_names[0]}` | {_cell(summary)} |")
    lines.append("")
    for kind in kinds:
        lines += kind_section(kind)
    lines += conditions_section()
    return "\n".join(lines).rstrip() + "\n"


def conditions_section() -> list[str]:
    """Condition types and reasons: alerts and GitOps health checks key on these strings."""
    lines = [
        "## Conditions and reasons",
        "",
        "Every kind reports `Ready`; the other types say which step is done or blocked: "
        + ", ".join(f"`{t.value}`" for t in ConditionType)
        + ". Each condition carries `observedGeneration`.",
        "",
        "A *retriable* reason clears by itself once something outside the object changes (a dependency "
        "becomes Ready, capacity frees up); a *permanent* one needs a spec change; *settled* ones are "
        "healthy.",
        "",
        "| Reason | Class |",
        "|---|---|",
    ]
    for reason in Reason:
        kind = "retriable" if reason in RETRIABLE else "permanent" if reason in PERMANENT else "settled"
        lines.append(f"| `{reason.value}` | {kind} |")
    return [*lines, ""]
