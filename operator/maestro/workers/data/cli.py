"""`maestro data validate`: run the dataset pipeline, write the version, report and summary.

In the LLMDataset Job everything comes from env (contract.ENV_*); locally the same flags override.
The last stdout line is the JSON summary (also written to the termination-message path), and the
exit code says what happened: 0 gates passed, 2 bad input, 3 gates failed, 4 I/O error,
5 checksum mismatch, 6 schema mismatch, 7 PII rejected (contract.EXIT_*).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, cast

from maestro.workers.data.contract import (
    DEFAULT_OUTPUT_DIR,
    DEFAULT_TERMINATION_PATH,
    ENV_ARTIFACT_PREFIX,
    ENV_OUTPUT_DIR,
    ENV_PINNED_VERSIONS,
    ENV_TERMINATION_PATH,
    EXIT_INTERNAL,
    EXIT_REASONS,
    Summary,
    dump_summary,
)
from maestro.workers.data.errors import DataWorkerError
from maestro.workers.data.retention import Pruned, parse_pinned, prune

if TYPE_CHECKING:
    from maestro.workers.data.config import Config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maestro data", description="LLMDataset worker")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="clean, split and version a dataset source; check the quality gates")
    v.add_argument("--spec", help="LLMDataset spec (JSON/YAML file; default: $MAESTRO_SPEC)")
    v.add_argument("--source", help="override spec.source.uri (local runs; a plain path means file://)")
    v.add_argument("--output", help=f"output directory (default: ${ENV_OUTPUT_DIR} or {DEFAULT_OUTPUT_DIR})")
    v.add_argument(
        "--termination-path",
        help=f"summary file (default: ${ENV_TERMINATION_PATH} or {DEFAULT_TERMINATION_PATH})",
    )
    v.add_argument("--quiet", action="store_true", help="no human summary on stderr")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "validate":
        return validate(args)
    return 2  # pragma: no cover - argparse enforces the choices


def validate(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    output_dir = args.output or env.get(ENV_OUTPUT_DIR) or DEFAULT_OUTPUT_DIR
    summary: Summary
    pruned: Pruned | None = None
    try:
        cfg = _config(args, env)
        if cfg.retention_days is not None:
            # before the source is read: an expired copy goes even when this validation then fails
            pruned = prune(output_dir, cfg.retention_days, parse_pinned(env.get(ENV_PINNED_VERSIONS)))
        summary, code = _run(cfg, args, env, output_dir)
    except DataWorkerError as exc:
        from maestro.workers.data.report import failure_summary

        code = exc.exit_code
        summary = failure_summary(code, str(exc))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a bug: keep the traceback in the log, the one-liner in the summary
        traceback.print_exc()
        from maestro.workers.data.report import failure_summary

        code = EXIT_INTERNAL
        summary = failure_summary(code, f"internal error: {type(exc).__name__}: {exc}")
    if pruned is not None:
        pruned.add_to(cast(dict[str, Any], summary))
    text = dump_summary(summary)
    explicit = args.termination_path or env.get(ENV_TERMINATION_PATH)
    _write_termination(explicit or DEFAULT_TERMINATION_PATH, text, explicit=bool(explicit))
    if not args.quiet:
        _human(summary, code)
    print(text, flush=True)
    return code


def _config(args: argparse.Namespace, env: dict[str, str]) -> Config:
    """The spec from --spec or env, with the --source override applied."""
    from maestro.workers.data.config import Config, load_spec

    spec = load_spec(args.spec, env)
    if args.source:
        uri = args.source if "://" in args.source else "file://" + os.path.abspath(args.source)
        spec = {**spec, "source": {**(spec.get("source") or {}), "uri": uri}}
    return Config.from_spec(spec)


def _run(cfg: Config, args: argparse.Namespace, env: dict[str, str], output_dir: str) -> tuple[Summary, int]:
    from maestro.workers.data import datasheet
    from maestro.workers.data.errors import SourceIOError
    from maestro.workers.data.gates import evaluate
    from maestro.workers.data.pipeline import Pipeline
    from maestro.workers.data.report import artifact_uris, build_report, build_summary, write_json

    pipeline = Pipeline(cfg, progress=None if args.quiet else _progress)
    res = pipeline.run(output_dir, env)
    cfg = pipeline.cfg  # with the inferred record type
    gates = evaluate(cfg, res)
    artifact = artifact_uris(res, output_dir, env.get(ENV_ARTIFACT_PREFIX))
    report = build_report(cfg, res, gates, artifact)
    try:
        write_json(os.path.join(res.output_path, "report.json"), report)
        html_path = os.path.join(res.output_path, "report.html")
        with open(html_path + ".tmp", "w", encoding="utf-8") as fh:
            fh.write(datasheet.render(report))
        os.replace(html_path + ".tmp", html_path)
    except OSError as exc:
        raise SourceIOError(f"writing the report to {res.output_path} failed: {exc}") from exc
    return build_summary(report), int(report["exitCode"])


def _progress(res: Any, seconds: float) -> None:
    print(
        f"maestro data: {res.total:,} records read, {res.kept:,} kept, "
        f"{res.duplicates + res.near_duplicates:,} duplicates, {res.invalid:,} invalid "
        f"({res.total / max(seconds, 1e-9):,.0f} records/s)",
        file=sys.stderr,
        flush=True,
    )


def _write_termination(path: str, text: str, explicit: bool) -> None:
    if not explicit and not os.path.exists(path):
        return  # the kubelet creates /dev/termination-log in a pod; a local run has none to fill
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        if explicit:  # asked for and failed: say so; the default path simply does not exist locally
            print(f"maestro data: cannot write the summary to {path}: {exc.strerror}", file=sys.stderr)


def _human(summary: Summary, code: int) -> None:
    r = summary["records"]
    line = (
        f"maestro data: {EXIT_REASONS.get(code, code)}: version {summary.get('version') or '-'}; "
        f"{r.get('total', 0)} read, {r.get('kept', 0)} kept ({r.get('train', 0)} train / "
        f"{r.get('validation', 0)} validation), {r.get('duplicates', 0)} duplicates, "
        f"{r.get('nearDuplicates', 0)} near duplicates, {r.get('filtered', 0)} filtered, "
        f"{r.get('invalid', 0)} invalid, {r.get('piiRedacted', 0)} redacted"
    )
    print(line, file=sys.stderr)
    for g in summary.get("gates", []):
        if not g["passed"]:
            print(
                f"  gate {g['name']} FAILED: value {g['value']} vs threshold {g['threshold']}",
                file=sys.stderr,
            )
    if summary.get("reason"):
        print(f"  reason: {summary['reason']}", file=sys.stderr)
