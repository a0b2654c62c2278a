"""The `maestro` command: one entrypoint for the operator, the workers and the dev tools.

Each subcommand lives in the module that owns it and is imported lazily, so `maestro guard`
never pays for torch and `maestro train` never imports Kopf.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with `main(argv: list[str]) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("maestro.controllers.cli", "run the operator (Kopf) against the current kubeconfig"),
    "crds": ("maestro.api.cli", "generate or check the CRD manifests and API docs"),
    "dev": ("maestro.devcluster.cli", "local control plane and the `make dev` lifecycle"),
    "data": ("maestro.workers.data.cli", "dataset worker: `maestro data validate`"),
    "train": ("maestro.workers.train.cli", "training worker: fine-tune and evaluate"),
    "guard": ("maestro.workers.guard.cli", "policy-enforcing OpenAI API proxy sidecar"),
    "monitor": ("maestro.workers.monitor.cli", "monitoring sidecar"),
    "console": ("maestro.workers.console.cli", "review console: flagged samples, RBAC-checked reviews"),
}


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: maestro <command> [args]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    if args[0] == "--version":
        from maestro import __version__

        print(__version__)
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"maestro: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(entry[0])
    rc: int = module.main(args[1:])
    return rc


if __name__ == "__main__":
    sys.exit(main())
