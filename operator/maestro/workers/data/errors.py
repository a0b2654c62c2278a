"""Errors the worker turns into exit codes: what went wrong decides whether a retry can help."""

from __future__ import annotations

from maestro.workers.data.contract import (
    EXIT_BAD_INPUT,
    EXIT_CHECKSUM_MISMATCH,
    EXIT_IO_ERROR,
    EXIT_SCHEMA_MISMATCH,
)


class DataWorkerError(Exception):
    exit_code = 1


class InputError(DataWorkerError):
    """The source or spec is wrong (unknown format, no records, bad URI): permanent."""

    exit_code = EXIT_BAD_INPUT


class ChecksumMismatch(InputError):
    """The source's SHA-256 is not spec.source.sha256: permanent until the pin or the data changes."""

    exit_code = EXIT_CHECKSUM_MISMATCH


class SchemaMismatch(InputError):
    """The records cannot be mapped with spec.schema (e.g. a plain-text source for chat records)."""

    exit_code = EXIT_SCHEMA_MISMATCH


class SourceIOError(DataWorkerError):
    """Reading or writing failed (network, permissions, disk): the Job may retry."""

    exit_code = EXIT_IO_ERROR
