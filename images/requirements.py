"""Print the dependencies of pyproject.toml (core + the named extras), one per line.

Used by the image builds to install dependencies in a layer of their own, before the source is
copied, so a change to operator/**/*.py rebuilds only the last, small layer.
Usage: python3 requirements.py pyproject.toml [extra ...]
"""

import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
extras = project.get("optional-dependencies", {})
unknown = [e for e in sys.argv[2:] if e not in extras]
if unknown:
    sys.exit(f"unknown extras {unknown}; pyproject.toml has {sorted(extras)}")
print("\n".join([*project["dependencies"], *(d for e in sys.argv[2:] for d in extras[e])]))
