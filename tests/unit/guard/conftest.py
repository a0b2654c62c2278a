"""Guard test fixtures; the harness lives in `guard_helpers`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from guard_helpers import Stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.close()
