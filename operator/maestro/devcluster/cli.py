"""`maestro dev ...`: `up`/`down` (the whole quickstart lifecycle, what `make dev` runs) and the local
cluster (`maestro dev cluster up|down|status`: control plane, kwok GPU nodes and the real node)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_STATE = os.environ.get("MAESTRO_STATE_DIR", ".state")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maestro dev", description="Local development environment.")
    sub = p.add_subparsers(dest="area", required=True)
    for action, help_ in (
        ("up", "cluster + images + the chart's operator + examples/quickstart, then a summary"),
        ("down", "stop everything `maestro dev up` started"),
    ):
        a = sub.add_parser(action, help=help_)
        a.add_argument("--state-dir", default=DEFAULT_STATE, help="state and logs (default: %(default)s)")
        if action == "up":
            a.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for the quickstart")
            a.add_argument("--json", action="store_true", help="print the summary as JSON")
    c = sub.add_parser("cluster", help="the local cluster (control plane, kwok GPU nodes, the real node)")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument(
        "--state-dir",
        default=str(Path(DEFAULT_STATE) / "cluster"),
        help="where PKI, etcd data, logs and the kubeconfig live (default: %(default)s)",
    )
    c.add_argument("--bin-dir", default=None, help="prebuilt binaries (default: $MAESTRO_KUBE_BIN or build)")
    c.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    c.add_argument(
        "--no-node",
        action="store_true",
        help="control plane and kwok only, no real node (needs no root; several can run at once)",
    )
    return p


def _lifecycle(args: argparse.Namespace) -> int:
    from maestro.devcluster.cluster import ClusterError
    from maestro.devcluster.lifecycle import DevEnv, render_summary

    env = DevEnv(Path(args.state_dir))
    try:
        if args.area == "down":
            env.down()
            return 0
        summary = env.up(timeout=args.timeout)
    except ClusterError as e:
        print(f"maestro dev {args.area}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        render_summary(summary)
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.area in ("up", "down"):
        return _lifecycle(args)
    from maestro.devcluster.cluster import ClusterError, DevCluster

    cluster = DevCluster(Path(args.state_dir), bin_dir=Path(args.bin_dir) if args.bin_dir else None)
    if args.action == "up":
        cluster.node = not args.no_node
    try:
        if args.action == "up":
            cluster.up(timeout=args.timeout)
            print(
                f"cluster ready in {cluster.state.get('ready_seconds', 0)}s: {cluster.server}",
                file=sys.stderr,
            )
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.action == "down":
            cluster.down()
            print("cluster stopped", file=sys.stderr)
        else:
            print(json.dumps(cluster.status(), indent=2))
    except ClusterError as e:
        print(f"maestro dev cluster {args.action}: {e}", file=sys.stderr)
        return 1
    return 0
