"""Benchmark the dataset worker against a bare read + json.loads + sha256 loop over the same file.

    python bench/data.py --records 200000 --json

Generates chat records (5% exact duplicates, 2% near duplicates, 5% with planted PII, 30% with
numbers) into a temp file, then times, each
in a fresh child process so peak RSS is per run: the baseline loop, the pipeline with exact dedup +
PII + stats (near dedup off), and the pipeline with MinHash near dedup on. `records_per_s` is wall
time; `*_cpu` variants divide by the child's CPU time, which is the fairer per-core figure on a busy
machine. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "operator"))


def _child(mode: str, path: str, out: str) -> None:
    """Runs in a fresh interpreter; prints {"seconds", "cpu_seconds", "peak_rss_mb", ...}."""
    if mode == "baseline":
        import hashlib

        t0, c0 = time.perf_counter(), time.process_time()
        n = 0
        with open(path, "rb") as fh:
            for line in fh:
                json.loads(line)
                hashlib.sha256(line).digest()
                n += 1
        extra: dict[str, object] = {"records": n}
    else:
        from maestro.workers.data.config import Config
        from maestro.workers.data.pipeline import Pipeline

        spec = {
            "source": {"uri": "file://" + path},
            "schema": {"type": "chat"},
            "processing": {
                "dedup": {"exact": True, "near": {"enabled": mode == "minhash", "threshold": 0.85}}
            },
        }
        pipe = Pipeline(Config.from_spec(spec))
        t0, c0 = time.perf_counter(), time.process_time()
        res = pipe.run(out)
        extra = {
            "records": res.total,
            "kept": res.kept,
            "duplicates": res.duplicates,
            "nearDuplicates": res.near_duplicates,
            "piiRecords": res.pii_records,
            "version": res.version,
        }
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": round(rss, 1), **extra}))


def _run_child(mode: str, path: str, out: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", mode, path, out],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench child {mode} failed:\n{proc.stderr}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    ap.add_argument("--no-minhash", action="store_true", help="skip the MinHash run")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return

    from maestro.workers.data import synth

    with tempfile.TemporaryDirectory(prefix="maestro-bench-") as tmp:
        path = os.path.join(tmp, "chat.jsonl")
        t0 = time.perf_counter()
        records = synth.chat_records(args.records, seed=1, dup_rate=0.05, pii_rate=0.05, near_rate=0.02)
        synth.write_jsonl(path, records)
        gen_s = time.perf_counter() - t0
        base = _run_child("baseline", path, tmp)
        exact = _run_child("exact", path, os.path.join(tmp, "out-exact"))
        minhash = None if args.no_minhash else _run_child("minhash", path, os.path.join(tmp, "out-minhash"))
        n = args.records
        result: dict[str, object] = {
            "records": n,
            "records_per_s": round(n / float(exact["seconds"])),  # type: ignore[arg-type]
            "records_per_s_minhash": round(n / float(minhash["seconds"])) if minhash else None,  # type: ignore[arg-type]
            "baseline_records_per_s": round(n / float(base["seconds"])),  # type: ignore[arg-type]
            "peak_rss_mb": exact["peak_rss_mb"],
            "peak_rss_mb_minhash": minhash["peak_rss_mb"] if minhash else None,
            "records_per_cpu_s": round(n / float(exact["cpu_seconds"])),  # type: ignore[arg-type]
            "records_per_cpu_s_minhash": round(n / float(minhash["cpu_seconds"])) if minhash else None,  # type: ignore[arg-type]
            "baseline_records_per_cpu_s": round(n / float(base["cpu_seconds"])),  # type: ignore[arg-type]
            "file_mb": round(os.path.getsize(path) / 2**20, 1),
            "kept": exact["kept"],
            "duplicates": exact["duplicates"],
            "near_duplicates": minhash["nearDuplicates"] if minhash else None,
            "pii_records": exact["piiRecords"],
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "generate_s": round(gen_s, 2),
        }
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
