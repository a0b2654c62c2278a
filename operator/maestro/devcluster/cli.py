"""`maestro dev ...`: the local control plane (`maestro dev cluster up|down|status`)."""

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
    c = sub.add_parser("cluster", help="the local control plane (etcd, apiserver, KCM, scheduler, kwok)")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument("--state-dir", default=str(Path(DEFAULT_STATE) / "cluster"),
                   help="where PKI, etcd data, logs and the kubeconfig live (default: %(default)s)")
    c.add_argument("--bin-dir", default=None, help="prebuilt binaries (default: $MAESTRO_KUBE_BIN or build)")
    c.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from maestro.devcluster.cluster import ClusterError, DevCluster

    cluster = DevCluster(Path(args.state_dir), bin_dir=Path(args.bin_dir) if args.bin_dir else None)
    try:
        if args.action == "up":
            cluster.up(timeout=args.timeout)
            print(f"cluster ready in {cluster.state.get('ready_seconds', 0)}s: {cluster.server}", file=sys.stderr)
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
