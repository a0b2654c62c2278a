"""`maestro monitor`: run the sidecar (default), build a drift reference from a dataset
(`reference`), or write/check the shipped Grafana dashboards and alert rules (`dashboards`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.config import MonitorSettings, SettingsError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maestro monitor",
        description="Monitoring sidecar: vLLM metrics, guard events, drift, feedback, bias probes. "
        "Settings come from MAESTRO_* env (see maestro.workers.monitor.contract); flags override.",
    )
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the sidecar (the default)")
    _run_flags(run)
    _run_flags(p)
    ref = sub.add_parser(
        "reference", help="build a drift reference from a dataset (JSONL file or LLMDataset version dir)"
    )
    ref.add_argument("inputs", nargs="+", type=Path, help="JSONL files or directories holding *.jsonl")
    ref.add_argument(
        "--out", type=Path, required=True, help=f"reference JSON to write ({c.ENV_DRIFT_REFERENCE_FILE})"
    )
    ref.add_argument("--prompt-field", default="prompt")
    ref.add_argument("--completion-field", default="completion")
    ref.add_argument("--limit", type=int, default=100_000, help="records to read at most")
    dash = sub.add_parser("dashboards", help="write or check the Grafana dashboards and alert rules")
    dash.add_argument("--out", default="charts/maestro/files", help="chart files dir (default: %(default)s)")
    dash.add_argument("--check", action="store_true", help="fail if the files differ from the generated ones")
    return p


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help=f"HTTP port (env {c.ENV_PORT}, default {c.DEFAULT_PORT})")
    p.add_argument("--host", help="bind address (default 0.0.0.0)")
    p.add_argument("--vllm-metrics-url", help=f"vLLM /metrics URL (env {c.ENV_VLLM_METRICS_URL})")
    p.add_argument(
        "--scrape-interval", type=float, help=f"seconds between scrapes (env {c.ENV_SCRAPE_INTERVAL})"
    )
    p.add_argument("--events-socket", help=f"guard event socket (env {c.ENV_EVENTS_SOCKET})")
    p.add_argument("--feedback-dir", help=f"feedback JSONL directory (env {c.ENV_FEEDBACK_DIR})")
    p.add_argument("--served-model", help=f"model name (env {c.ENV_SERVED_MODEL})")
    p.add_argument(
        "--probes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"send counterfactual bias probes through the guard (env {c.ENV_PROBES})",
    )
    p.add_argument(
        "--probe-interval", type=float, help=f"seconds between probe rounds (env {c.ENV_PROBE_INTERVAL})"
    )
    p.add_argument("--otlp-endpoint", help=f"OTLP/HTTP endpoint (env {c.ENV_OTLP_ENDPOINT})")
    p.add_argument("--drift-threshold", type=float, help=f"PSI alert threshold (env {c.ENV_DRIFT_THRESHOLD})")
    p.add_argument(
        "--drift-reference-file", help=f"reference distribution JSON (env {c.ENV_DRIFT_REFERENCE_FILE})"
    )
    p.add_argument(
        "--text-score-rate", type=float, help=f"texts scored per second (env {c.ENV_TEXT_SCORE_RATE})"
    )
    p.add_argument("--log-level", default="INFO")


def settings_from(args: argparse.Namespace) -> MonitorSettings:
    s = MonitorSettings.from_env()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(MonitorSettings)
        if getattr(args, f.name, None) is not None
    }
    s = dataclasses.replace(s, **overrides)
    s.validate()
    return s


def _stay_off_the_hot_path() -> None:
    """Scheduling for a sidecar that must never slow the guard down.

    SCHED_BATCH: every guard `sendto` wakes our reader thread, and a normal thread woken that way
    may preempt the guard on a busy core (wake-up preemption); a batch thread waits for its turn.
    Set before any thread starts, so every thread inherits it. A short GIL switch interval lets the
    reader thread back in quickly, because the kernel queue in front of it holds only 10 events
    (net.unix.max_dgram_qlen in a pod's network namespace).
    """
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or forbidden: run as is
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    sys.setswitchinterval(0.0005)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dashboards":
        from maestro.workers.monitor.dashboards import write_all

        stale = write_all(args.out, check=args.check)
        for path in stale:
            print(f"{'stale' if args.check else 'wrote'}: {path}")
        return 1 if args.check and stale else 0
    if args.command == "reference":
        from maestro.workers.monitor.reference import write_reference

        try:
            n, features = write_reference(
                args.inputs,
                args.out,
                prompt_field=args.prompt_field,
                completion_field=args.completion_field,
                limit=args.limit,
            )
        except (OSError, ValueError) as e:
            print(f"maestro monitor reference: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}: {n} records, features {', '.join(features)}")
        return 0
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from(args)
    except SettingsError as e:
        print(f"maestro monitor: {e}", file=sys.stderr)
        return 2
    from maestro.workers.monitor.server import Monitor, StartupError

    _stay_off_the_hot_path()

    try:
        monitor = Monitor(settings)
        asyncio.run(monitor.serve_forever())
    except (StartupError, ValueError, RuntimeError) as e:
        print(f"maestro monitor: {e}", file=sys.stderr)
        return 2
    return 0
