"""maestro.text runs in the sidecar image (guard and monitor extras): nothing heavier at import time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]

# What the worker image has and the sidecar image does not (pyproject.toml: data, train extras).
NOT_IN_SIDECAR = ("numpy", "pyarrow", "fsspec", "py3langid", "spacy", "torch", "transformers")

SCRIPT = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not in the sidecar image")
            return None

    sys.meta_path.insert(0, Block())
    from maestro.text import langid, ner, pii, profanity, refusal

    assert langid.detect("The cat is on the table and it is sleeping.") == "en"
    # without py3langid the fast answer stands (and a warning says what to install)
    assert langid.detect_with_model("Muchas gracias por tu rápida respuesta.") == "und"
    assert refusal.is_refusal("I'm sorry, but I can't help with that.")
    assert profanity.contains("what the fuck")
    assert [f.entity for f in pii.scan("mail a@example.com")] == ["EMAIL"]
    assert ner.load_ner() is None
    import maestro.workers.guard.rules, maestro.workers.monitor.signals  # noqa: E401
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ok")
    """
)


def test_text_imports_nothing_outside_the_sidecar_extras() -> None:
    code = f"BLOCKED = {NOT_IN_SIDECAR!r}\n{SCRIPT}"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
    assert "py3langid is not installed" in out.stderr
