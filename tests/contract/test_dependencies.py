"""Every third-party module the package imports is declared in pyproject.toml (core or an extra).

A module that arrives only as someone else's dependency (httpx2 through lightkube) disappears
or changes major version when that package changes its own requirements.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "maestro"

#: Imported only inside a try/except ImportError, with a message saying what to install.
OPTIONAL = {
    "bitsandbytes": "workers/train/models.py: method qlora on a CUDA image",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    return {_norm(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in reqs}


def imported() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("maestro", "__future__"):
                    out.setdefault(top, set()).add(str(path.relative_to(PACKAGE)))
    return out


def test_every_imported_distribution_is_declared() -> None:
    have = declared()
    dists = importlib.metadata.packages_distributions()
    missing = []
    for module, files in sorted(imported().items()):
        if module in OPTIONAL:
            continue
        candidates = {_norm(d) for d in dists.get(module, [])}
        if not candidates:
            pytest.fail(
                f"{module} (imported by {sorted(files)}) is not installed; declare it or list it in OPTIONAL"
            )
        if not candidates & have:
            missing.append(f"{module} ({'/'.join(sorted(candidates))}) imported by {sorted(files)[:3]}")
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(missing)
