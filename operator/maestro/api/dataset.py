"""LLMDataset: a data source that Maestro validates, cleans, splits and versions before training."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from maestro.api.common import (
    OWNER_NAME_RULE,
    SET,
    KindInfo,
    KindModel,
    PIIEntity,
    PrinterColumn,
    PVCStorage,
    SecretReference,
    SpecModel,
    StatusModel,
    Terms,
    age_column,
    cel,
    check_owner_name,
    default_pii_entities,
    immutable,
    phase_column,
    ready_column,
    unique_list,
    uri_checker,
    uri_constraints,
    validations,
)
from maestro.api.conditions import ObservedStatus

#: Where a dataset may come from; file:// is for local development clusters only.
DATASET_URI_SCHEMES = ("s3", "gs", "https", "pvc", "file")
DatasetURI = Annotated[
    str,
    AfterValidator(uri_checker(DATASET_URI_SCHEMES, "source.uri")),
    uri_constraints(DATASET_URI_SCHEMES, "source.uri"),
]


class DatasetFormat(StrEnum):
    AUTO = "auto"
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"
    TEXT = "text"


class RecordType(StrEnum):
    CHAT = "chat"
    PROMPT_COMPLETION = "prompt-completion"
    TEXT = "text"


class PIIAction(StrEnum):
    """What the data worker does with a record that contains PII."""

    REDACT = "redact"
    DROP = "drop"
    REJECT = "reject"
    ALLOW = "allow"


class DatasetPhase(StrEnum):
    PENDING = "Pending"
    VALIDATING = "Validating"
    READY = "Ready"
    FAILED = "Failed"


class DatasetSource(SpecModel):
    """Where the raw data is read from."""

    uri: DatasetURI = Field(
        description="Location of the data: s3://bucket/key, gs://bucket/key, https://host/path, "
        "pvc://claim/path (a claim in this namespace) or file:///path (local development clusters only)."
    )
    format: DatasetFormat = Field(
        DatasetFormat.AUTO,
        description="File format; auto infers it from the extension (.jsonl, .csv, .parquet, .txt).",
    )
    sha256: str | None = Field(
        None,
        pattern=r"^[a-f0-9]{64}$",
        description="Expected SHA-256 of the source file (lowercase hex); validation fails with "
        "ChecksumMismatch "
        "when the content differs.",
    )
    credentials_secret_ref: SecretReference | None = Field(
        None,
        description="Secret with credentials for the source (AWS_* keys for s3, "
        "GOOGLE_APPLICATION_CREDENTIALS "
        "JSON for gs, an Authorization header value for https); mounted into the validation Job only.",
    )


class RecordSchema(SpecModel):
    """How to read one record; field names point into each JSON object or CSV row."""

    type: RecordType = Field(
        RecordType.CHAT,
        description="chat: a list of {role, content} messages; prompt-completion: two text fields; text: "
        "one field.",
    )
    messages_field: str = Field(
        "messages", min_length=1, max_length=128, description="Field with the messages (chat)."
    )
    prompt_field: str = Field(
        "prompt", min_length=1, max_length=128, description="Field with the prompt (prompt-completion)."
    )
    completion_field: str = Field(
        "completion",
        min_length=1,
        max_length=128,
        description="Field with the completion (prompt-completion).",
    )
    text_field: str = Field("text", min_length=1, max_length=128, description="Field with the text (text).")


class NearDedup(SpecModel):
    """Near-duplicate removal with MinHash (catches paraphrased copies; costs CPU)."""

    enabled: bool = Field(
        False, description="Drop records whose estimated Jaccard similarity to a kept one is high."
    )
    threshold: float = Field(
        0.85, gt=0, le=1, description="Jaccard similarity at or above which two records count as duplicates."
    )


class Dedup(SpecModel):
    """Duplicate removal."""

    exact: bool = Field(
        True, description="Drop records whose normalised text is identical to an earlier one."
    )
    near: NearDedup = Field(default_factory=NearDedup, description="Near-duplicate removal.")


class DatasetPII(SpecModel):
    """PII handling while cleaning."""

    action: PIIAction = Field(
        PIIAction.REDACT,
        description="redact: replace each finding with its entity kind in angle brackets (`<EMAIL>`, "
        "`<PHONE>`); drop: skip the record; reject: fail validation (reason PIIRejected); allow: keep "
        "as is (findings are still counted).",
    )
    entities: Annotated[list[PIIEntity], AfterValidator(unique_list("processing.pii.entities"))] = Field(
        default_factory=default_pii_entities,
        max_length=12,
        description="Entity kinds to detect. PERSON and LOCATION use a recogniser and are opt-in.",
        json_schema_extra=SET,
    )


class Filters(SpecModel):
    """Record filters, applied after PII handling."""

    min_chars: int = Field(1, ge=0, description="Drop records shorter than this many characters.")
    max_chars: int | None = Field(None, ge=1, description="Drop records longer than this many characters.")
    languages: Annotated[
        list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]],
        AfterValidator(unique_list("processing.filters.languages")),
    ] = Field(
        default_factory=list,
        max_length=64,
        description="Keep only records detected in these ISO 639 languages (e.g. en, de); empty keeps all.",
        json_schema_extra=SET,
    )
    max_profanity: float | None = Field(
        None, ge=0, le=1, description="Drop records whose share of profane words exceeds this ratio."
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.maxChars) || self.minChars <= self.maxChars",
                "processing.filters.minChars must be less than or equal to processing.filters.maxChars",
                field_path=".minChars",
            )
        )
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Filters:
        if self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(
                "processing.filters.minChars must be less than or equal to processing.filters.maxChars"
            )
        return self


class Split(SpecModel):
    """Train/validation split, deterministic for a given seed."""

    validation_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of kept records held out for validation."
    )
    seed: int = Field(42, ge=0, description="Seed of the shuffle before splitting.")


class Processing(SpecModel):
    """Cleaning steps, in order: PII, dedup, filters, split."""

    dedup: Dedup = Field(default_factory=Dedup, description="Duplicate removal.")
    pii: DatasetPII = Field(default_factory=DatasetPII, description="PII detection and handling.")
    filters: Filters = Field(default_factory=Filters, description="Length, language and profanity filters.")
    split: Split = Field(default_factory=Split, description="Train/validation split.")


class Representation(SpecModel):
    """Checks that groups of terms appear in balanced proportions (a coarse representation audit)."""

    groups: dict[str, Terms] = Field(
        description="Group name to the terms that mark a record as mentioning it, e.g. "
        "{female: [she, her, woman], male: [he, his, man]}.",
        min_length=2,
    )
    max_imbalance: float = Field(
        5.0, ge=1, description="Largest allowed ratio between the most and least mentioned group."
    )


class QualityGates(SpecModel):
    """Thresholds the cleaned dataset must meet to become Ready; each result is listed in status.gates."""

    min_records: int = Field(1, ge=0, description="Fewest records that must be kept after cleaning.")
    max_duplicate_ratio: float | None = Field(
        None, ge=0, le=1, description="Largest allowed share of input records that were duplicates."
    )
    max_pii_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        alias="maxPIIRatio",
        description="Largest allowed share of input records that contained PII.",
    )
    allowed_languages: Annotated[
        list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]],
        AfterValidator(unique_list("qualityGates.allowedLanguages")),
    ] = Field(
        default_factory=list,
        max_length=64,
        description="Every kept record must be in one of these ISO 639 languages; empty allows any.",
        json_schema_extra=SET,
    )
    representation: Representation | None = Field(None, description="Group representation check.")


class ConsentBasis(StrEnum):
    """Legal basis for processing personal data (GDPR Art. 6 vocabulary)."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal-obligation"
    VITAL_INTERESTS = "vital-interests"
    PUBLIC_TASK = "public-task"
    LEGITIMATE_INTERESTS = "legitimate-interests"
    NOT_APPLICABLE = "not-applicable"


class Consent(SpecModel):
    """Consent for using the data to train models."""

    obtained: bool = Field(
        False, description="Consent or another legal basis for training use is documented."
    )
    basis: ConsentBasis | None = Field(None, description="Legal basis for processing personal data.")


class Governance(SpecModel):
    """The datasheet: who owns the data, under which licence and terms; copied into the version report."""

    license: str | None = Field(
        None,
        max_length=128,
        description="Licence of the data, preferably an SPDX identifier (e.g. CC-BY-4.0).",
    )
    owner: str | None = Field(None, max_length=256, description="Accountable team or person.")
    consent: Consent = Field(default_factory=Consent, description="Consent for training use.")
    contains_personal_data: bool = Field(
        False,
        description="The source holds personal data (after cleaning, PII findings are reported regardless).",
    )
    retention_days: int | None = Field(
        None,
        ge=1,
        description="Days a versioned copy may be kept. The operator reports expiry in status.expiresAt and "
        "then validates again (reason RetentionExpired), which copies the source anew; the validation "
        "first deletes the versions on the claim older than this that no LLMTrainingJob pins or trained "
        "on (status.prunedVersions).",
    )
    description: str | None = Field(
        None, max_length=4096, description="What the data is and how it was collected."
    )


class DatasetStorage(SpecModel):
    """Where the validated, versioned copy is written."""

    pvc: PVCStorage = Field(default_factory=PVCStorage, description="Claim holding the versioned copies.")


class LLMDatasetSpec(SpecModel):
    """Desired state of an LLMDataset."""

    source: DatasetSource = Field(description="Where the raw data is read from.")
    schema_: RecordSchema = Field(
        default_factory=RecordSchema, alias="schema", description="How to read one record."
    )
    processing: Processing = Field(
        default_factory=Processing, description="Cleaning: PII, dedup, filters, split."
    )
    quality_gates: QualityGates = Field(
        default_factory=QualityGates, description="Thresholds the cleaned data must meet to become Ready."
    )
    governance: Governance = Field(default_factory=Governance, description="The datasheet.")
    storage: DatasetStorage = Field(
        default_factory=DatasetStorage,
        description="Where the validated copy is written. Immutable: the versions already written live "
        "there.",
        json_schema_extra=immutable("storage"),
    )


# --- status ---------------------------------------------------------------------------------------


class RecordCounts(StatusModel):
    """Record counts through the cleaning steps."""

    total: int | None = Field(None, description="Records read from the source.")
    kept: int | None = Field(None, description="Records kept after all steps.")
    duplicates: int | None = Field(None, description="Records dropped as exact or near duplicates.")
    pii_redacted: int | None = Field(None, description="Records in which PII was redacted.")
    pii_dropped: int | None = Field(
        None,
        alias="piiDropped",
        description="Records dropped because they held PII (pii.action drop); also counted in filtered.",
    )
    filtered: int | None = Field(None, description="Records dropped by filters.")
    invalid: int | None = Field(None, description="Records that did not match the schema.")
    train: int | None = Field(None, description="Kept records in the train split.")
    validation: int | None = Field(None, description="Kept records in the validation split.")


class LengthStats(StatusModel):
    """Distribution of record lengths in characters."""

    min: int | None = Field(None, description="Shortest record.")
    max: int | None = Field(None, description="Longest record.")
    mean: float | None = Field(None, description="Mean length.")
    p50: int | None = Field(None, description="Median length.")
    p95: int | None = Field(None, description="95th percentile length.")


class DatasetStats(StatusModel):
    """Summary statistics of the kept records (the full report is at artifact.reportUri)."""

    languages: dict[str, int] = Field(default_factory=dict, description="Kept records per detected language.")
    length_chars: LengthStats | None = Field(None, description="Record length distribution.")
    pii_by_entity: dict[str, int] = Field(
        default_factory=dict, alias="piiByEntity", description="PII findings per entity kind."
    )
    estimated_tokens: int | None = Field(
        None,
        description="Approximate token count of the kept records: their characters divided by 4 (no "
        "tokenizer is run; real counts vary by model and language).",
    )


class GateResult(StatusModel):
    """The outcome of one quality gate."""

    name: str = Field(description="Gate name, e.g. minRecords.")
    passed: bool = Field(description="Whether the gate passed.")
    value: str | None = Field(None, description="Measured value.")
    threshold: str | None = Field(None, description="Configured threshold.")
    message: str | None = Field(None, description="Explanation when the gate failed.")


class DatasetArtifact(StatusModel):
    """Where the validated version was written."""

    uri: str | None = Field(None, description="URI of the cleaned, split data (pvc://claim/path).")
    report_uri: str | None = Field(
        None, description="URI of the full validation report and datasheet (JSON)."
    )


class LLMDatasetStatus(ObservedStatus):
    """Observed state of an LLMDataset."""

    phase: DatasetPhase | None = Field(None, description="Pending, Validating, Ready or Failed.")
    version: str | None = Field(
        None, description="Content digest of the validated data (sha256:…); training jobs pin it."
    )
    records: RecordCounts | None = Field(None, description="Record counts through the cleaning steps.")
    stats: DatasetStats | None = Field(None, description="Summary statistics of the kept records.")
    gates: list[GateResult] = Field(default_factory=list, description="Quality gate results.")
    artifact: DatasetArtifact | None = Field(None, description="Where the validated version was written.")
    source_digest: str | None = Field(None, description="sha256 of the raw source content that was read.")
    start_time: str | None = Field(None, description="When the current validation started (RFC 3339).")
    completion_time: str | None = Field(None, description="When the current validation finished (RFC 3339).")
    expires_at: str | None = Field(
        None,
        description="When the current version's retention ends: completionTime + governance.retentionDays "
        "(RFC 3339); the dataset is validated again then. Absent without retentionDays.",
    )
    pruned_versions: list[str] | None = Field(
        None,
        description="Versions the last validation deleted from the claim because they were older than "
        "governance.retentionDays and no LLMTrainingJob pinned them (the first 20; see prunedCount).",
    )
    pruned_count: int | None = Field(
        None, description="How many versions the last validation deleted (prunedVersions may list fewer)."
    )
    prune_errors: list[str] | None = Field(
        None,
        description="Expired versions the last validation could not delete, with why; the next validation "
        "tries again.",
    )


class LLMDataset(KindModel):
    """A dataset that is validated, cleaned, split and versioned before any model is trained on it."""

    crd: ClassVar[KindInfo] = KindInfo(
        kind="LLMDataset",
        plural="llmdatasets",
        singular="llmdataset",
        short_names=("llmds",),
        printer_columns=(
            phase_column(),
            ready_column(),
            PrinterColumn("Version", "string", ".status.version", "Content digest of the validated data"),
            PrinterColumn("Kept", "integer", ".status.records.kept", "Records kept after cleaning"),
            PrinterColumn("Total", "integer", ".status.records.total", "Records read", priority=1),
            PrinterColumn("Source", "string", ".spec.source.uri", "Source URI", priority=1),
            PrinterColumn(
                "Expires", "string", ".status.expiresAt", "When the version's retention ends", priority=1
            ),
            age_column(),
        ),
        root_validations=(OWNER_NAME_RULE,),
    )

    kind: Literal["LLMDataset"] = Field("LLMDataset", description="LLMDataset.")
    spec: LLMDatasetSpec = Field(description="Desired state.")
    status: LLMDatasetStatus | None = Field(None, description="Observed state, written by the operator.")

    @model_validator(mode="before")
    @classmethod
    def _name(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_owner_name(data.get("metadata") or {})
        return data
