"""API errors as small typed exceptions, so callers branch on the class and not on strings."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """The API server answered with an error status (or could not be reached: code 0)."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    @property
    def retriable(self) -> bool:
        """5xx, 429, 409 and connection problems go away by themselves; 4xx validation errors do not."""
        return self.code in (0, 409, 429) or self.code >= 500


class NotFound(ApiError):
    """404: the object (or the kind) does not exist."""


class Conflict(ApiError):
    """409: already exists, or a resourceVersion/field-manager conflict."""


class Invalid(ApiError):
    """422: the server rejected the object; the message names the field."""


def from_status(code: int, body: dict[str, Any] | None) -> ApiError:
    body = body or {}
    reason = str(body.get("reason") or "Unknown")
    message = str(body.get("message") or body or "no message")
    details = body.get("details") if isinstance(body.get("details"), dict) else None
    cls = {404: NotFound, 409: Conflict, 422: Invalid}.get(code, ApiError)
    return cls(code, reason, message, details)
