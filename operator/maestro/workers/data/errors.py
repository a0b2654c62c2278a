"""Errors the worker turns into exit codes: what went wrong decides whether a retry can help."""

from __future__ import annotations

from maestro.workers.data.contract import EXIT_BAD_INPUT, EXIT_IO_ERROR


class DataWorkerError(Exception):
    exit_code = 1


class InputError(DataWorkerError):
    """The source or spec is wrong (malformed record, checksum mismatch, unknown format): permanent."""

    exit_code = EXIT_BAD_INPUT


class SourceIOError(DataWorkerError):
    """Reading or writing failed (network, permissions, disk): the Job may retry."""

    exit_code = EXIT_IO_ERROR
