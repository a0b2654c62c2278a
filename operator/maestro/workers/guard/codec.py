"""JSON on the hot path: orjson when installed (3-5x faster), the stdlib otherwise; bytes in, bytes out."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson

    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    DecodeError: type[Exception] = orjson.JSONDecodeError

except ImportError:  # pragma: no cover - the guard extra installs orjson

    def loads(data: bytes | str) -> Any:
        return json.loads(data)

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    DecodeError = ValueError
