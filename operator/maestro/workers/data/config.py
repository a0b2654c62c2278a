"""The worker's view of an LLMDataset spec: validated by the API model, flattened for the hot loop."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from maestro.api import LLMDatasetSpec
from maestro.workers.data.contract import ENV_SPEC
from maestro.workers.data.errors import InputError
from maestro.workers.data.quality import FilterConfig
from maestro.workers.data.schema import FieldMap


@dataclass(frozen=True)
class Gates:
    min_records: int = 1
    max_duplicate_ratio: float | None = None
    max_pii_ratio: float | None = None
    allowed_languages: frozenset[str] = frozenset()
    representation: dict[str, list[str]] | None = None
    max_imbalance: float = 5.0
    #: Malformed records tolerated before the input counts as bad (exit code EXIT_SCHEMA_MISMATCH).
    max_invalid_ratio: float = 0.0


@dataclass(frozen=True)
class Config:
    uri: str
    format: str | None = None
    sha256: str | None = None
    fields: FieldMap = field(default_factory=lambda: FieldMap("chat"))
    exact_dedup: bool = True
    near_dedup: bool = False
    near_threshold: float = 0.85
    num_perm: int = 128
    pii_action: str = "redact"
    pii_entities: frozenset[str] = frozenset()
    filters: FilterConfig = field(default_factory=FilterConfig)
    validation_ratio: float = 0.1
    seed: int = 42
    gates: Gates = field(default_factory=Gates)
    governance: dict[str, Any] = field(default_factory=dict)
    #: spec.governance.retentionDays: older unpinned versions on the claim are deleted (None: kept).
    retention_days: int | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Config:
        """Validate the camelCase spec with the API model; InputError lists every bad field."""
        try:
            model = LLMDatasetSpec.model_validate(spec)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()[:10]
            )
            raise InputError(f"invalid LLMDataset spec: {problems}") from None
        src, sch, proc, qg = model.source, model.schema_, model.processing, model.quality_gates
        rep = qg.representation
        return cls(
            uri=src.uri,
            format=None if src.format.value == "auto" else src.format.value,
            sha256=src.sha256,
            fields=FieldMap(
                # no explicit type: infer it from the first record (a .txt source is text, not chat)
                kind=sch.type.value if (spec.get("schema") or {}).get("type") else "auto",
                messages=sch.messages_field,
                prompt=sch.prompt_field,
                completion=sch.completion_field,
                text=sch.text_field,
            ),
            exact_dedup=proc.dedup.exact,
            near_dedup=proc.dedup.near.enabled,
            near_threshold=proc.dedup.near.threshold,
            pii_action=proc.pii.action.value,
            pii_entities=frozenset(e.value for e in proc.pii.entities),
            filters=FilterConfig(
                min_chars=proc.filters.min_chars,
                max_chars=proc.filters.max_chars,
                languages=frozenset(proc.filters.languages) or None,
                max_profanity=proc.filters.max_profanity,
            ),
            validation_ratio=proc.split.validation_ratio,
            seed=proc.split.seed,
            gates=Gates(
                min_records=qg.min_records,
                max_duplicate_ratio=qg.max_duplicate_ratio,
                max_pii_ratio=qg.max_pii_ratio,
                allowed_languages=frozenset(qg.allowed_languages),
                representation={k: list(v) for k, v in rep.groups.items()} if rep else None,
                max_imbalance=rep.max_imbalance if rep else 5.0,
            ),
            governance=model.governance.model_dump(by_alias=True, exclude_none=True, mode="json"),
            retention_days=model.governance.retention_days,
        )


def load_spec(path: str | None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The spec from `--spec FILE` (JSON or YAML) or $MAESTRO_SPEC; accepts a whole LLMDataset too."""
    env = os.environ if env is None else env
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise InputError(f"cannot read --spec {path}: {exc.strerror}") from exc
        where = path
    else:
        text = env.get(ENV_SPEC, "")
        where = f"${ENV_SPEC}"
        if not text.strip():
            raise InputError(f"no spec: set ${ENV_SPEC} to the LLMDataset spec JSON or pass --spec FILE")
    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{where} is neither JSON nor YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{where} must hold a JSON/YAML object, got {type(data).__name__}")
    if data.get("kind") == "LLMDataset" and isinstance(data.get("spec"), dict):
        data = data["spec"]
    spec: dict[str, Any] = data
    return spec
