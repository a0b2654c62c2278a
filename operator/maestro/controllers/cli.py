"""`maestro run`: start the operator (a thin wrapper over `kopf run -m maestro.controllers`)."""

from __future__ import annotations

import argparse
import random
import sys


def kopf_args(args: argparse.Namespace) -> list[str]:
    """`kopf run` arguments. With peering, each instance draws a random priority unless given one:
    Kopf keeps the highest-priority instance active and pauses the others, and equal priorities
    would leave the choice undefined (the chart cannot hand each replica its own number)."""
    out = ["run", "-m", "maestro.controllers"]
    out += [f"--namespace={ns}" for ns in args.namespace] or ["--all-namespaces"]
    if args.peering:
        priority = args.priority if args.priority is not None else random.randint(1, 2**31 - 1)
        out += ["--peering=default", f"--priority={priority}"]
    else:
        out.append("--standalone")
    if args.verbose:
        out.append("--verbose")
    if args.liveness:
        out.append(f"--liveness={args.liveness}")
    return out


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maestro run", description="Run the Maestro operator.")
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority (default: random, so exactly one replica is active)",
    )
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
        help="coordinate with other instances through the ClusterKopfPeering 'default' (default: standalone)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    import os

    import kopf.cli

    if args.namespace:  # the startup cache-priming list must stay inside the same namespaces
        os.environ["MAESTRO_NAMESPACES"] = ",".join(args.namespace)

    try:
        kopf.cli.main(args=kopf_args(args), prog_name="maestro run", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
