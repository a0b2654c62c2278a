"""`maestro train`: the training worker's command line.

    maestro train [run] [--spec FILE] [--dataset-dir D] [--output-dir D] [--base-model-dir D]
    maestro train tiny-model --out DIR [--seed N]

`run` (the default) reads its inputs from the env the operator sets (see contract.py); flags
override env for local use. Heavy imports happen inside the subcommands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maestro.workers.train import contract


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maestro train", description="fine-tune and evaluate a causal LM")
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="train + evaluate as described by the LLMTrainingJob spec (default)")
    _add_run_args(run)
    tiny = sub.add_parser("tiny-model", help="build the tiny test Llama (no downloads)")
    tiny.add_argument("--out", type=Path, required=True, help="directory to write the HF model into")
    tiny.add_argument("--seed", type=int, default=0)
    return p


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--spec", type=Path, help=f"LLMTrainingJob spec JSON/YAML file (default: ${contract.ENV_SPEC})"
    )
    p.add_argument("--dataset-dir", type=Path, help=f"default: ${contract.ENV_DATASET_DIR}")
    p.add_argument("--dataset-schema", choices=["chat", "prompt-completion", "text"])
    p.add_argument("--output-dir", type=Path, help=f"default: ${contract.ENV_OUTPUT_DIR}")
    p.add_argument("--base-model-dir", type=Path, help=f"default: ${contract.ENV_BASE_MODEL_DIR}")
    p.add_argument("--no-launch", action="store_true", help="never re-exec under torchrun")


def main(argv: list[str]) -> int:
    if not argv or (argv[0].startswith("-") and argv[0] not in {"-h", "--help"}):
        argv = ["run", *argv]
    args = _parser().parse_args(argv)
    if args.command == "tiny-model":
        from maestro.workers.train.tinymodel import build_tiny_model

        print(build_tiny_model(args.out, seed=args.seed))
        return contract.EXIT_OK
    if args.command == "run":
        from maestro.workers.train.job import run_from_args

        return run_from_args(args, argv[1:] if argv[:1] == ["run"] else argv)
    _parser().print_help(sys.stderr)
    return contract.EXIT_BAD_INPUT
