"""`maestro run`: start the operator (a thin wrapper over `kopf run -m maestro.controllers`)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="maestro run", description="Run the Maestro operator.")
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument(
        "--liveness", default=None, help="Kopf's own liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    parser.add_argument(
        "--peering",
        action="store_true",
        help="coordinate with other instances through KopfPeering (default: standalone)",
    )
    args = parser.parse_args(argv)
    import os

    import kopf.cli

    if args.namespace:  # the startup cache-priming list must stay inside the same namespaces
        os.environ["MAESTRO_NAMESPACES"] = ",".join(args.namespace)

    kopf_args = ["run", "-m", "maestro.controllers"]
    kopf_args += [f"--namespace={ns}" for ns in args.namespace] or ["--all-namespaces"]
    if not args.peering:
        kopf_args.append("--standalone")
    if args.verbose:
        kopf_args.append("--verbose")
    if args.liveness:
        kopf_args.append(f"--liveness={args.liveness}")
    try:
        kopf.cli.main(args=kopf_args, prog_name="maestro run", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
