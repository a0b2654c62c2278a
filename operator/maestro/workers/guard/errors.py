"""OpenAI-shaped errors: every refusal the guard makes looks like one the OpenAI API would send.

Clients (the `openai` SDK above all) map the status to an exception class and show `message`, so
the message says what to change, and `code` names the rule for programs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
}


@dataclass(slots=True)
class GuardError(Exception):
    """A refusal with an HTTP status. Raised anywhere on the request path, rendered once by the proxy."""

    status: int
    message: str
    code: str
    param: str | None = None
    retry_after: float | None = None  # seconds, for 429
    #: The policy rule that fired (for audit/metrics), when the error is a policy decision.
    rule: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.code, self.param)

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


def error_payload(status: int, message: str, code: str, param: str | None = None) -> dict[str, object]:
    return {
        "error": {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}
    }


def error_body(status: int, message: str, code: str, param: str | None = None) -> bytes:
    return json.dumps(error_payload(status, message, code, param), separators=(",", ":")).encode()


def sse_error_event(message: str, code: str) -> bytes:
    """The in-stream error frame sent when a block happens after the 200 headers went out.

    The `openai` SDK raises `APIError` on a `data:` frame whose object has an `error` key.
    """
    return b"data: " + error_body(400, message, code) + b"\n\n"


def bad_request(message: str, code: str = "invalid_request", param: str | None = None) -> GuardError:
    return GuardError(400, message, code, param)
