"""How long an LLMPolicy edit takes to reach the running guard of `make dev`'s quickstart, under load.

Needs `make dev` running (the guard reached through its port-forward). Each trial adds a new blocked
term to the quickstart policy while a steady client sends ordinary requests, and times the kubectl
apply → the first request refused for that term. It also checks the serving pod kept its UID and
restart counts (a policy edit must not restart vLLM) and counts failed steady requests (goal 0).
The policy is restored at the end. Prints one JSON object.

    .venv/bin/python bench/policy_propagation.py [--trials 3]

On the dev node the kubelet's syncFrequency is 10 s; a default kubelet syncs ConfigMap volumes within
about a minute, so expect longer delays there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from maestro.devcluster.lifecycle import NAMESPACE, QUICKSTART, DevEnv, chat


def trial(env: DevEnv, base: str, policy: dict[str, Any], term: str) -> dict[str, Any]:
    pod = env.get("pod", env.serving_pod())
    restarts = {c["name"]: c["restartCount"] for c in pod["status"]["containerStatuses"]}
    stop, codes = threading.Event(), []

    def steady() -> None:
        while not stop.is_set():
            codes.append(chat(base, "hi", max_tokens=1))
            time.sleep(1.2)

    load = threading.Thread(target=steady)
    load.start()
    time.sleep(3)
    edited = json.loads(json.dumps(policy))
    edited["spec"]["request"]["blockedTerms"] = [*policy["spec"]["request"]["blockedTerms"], term]
    edited["spec"]["request"]["rateLimits"]["requestsPerMinute"] = 600  # the probe must not be limited
    env.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(edited))
    t0 = time.monotonic()
    while chat(base, f"tell me {term}", max_tokens=1) not in (400, 403) and time.monotonic() - t0 < 180:
        time.sleep(0.5)
    delay = time.monotonic() - t0
    time.sleep(3)
    stop.set()
    load.join()
    after = env.get("pod", pod["metadata"]["name"])
    return {
        "delay_s": round(delay, 2),
        "steady_requests": len(codes),
        "failed": sum(c != 200 for c in codes),
        "same_pod": after["metadata"]["uid"] == pod["metadata"]["uid"],
        "restarts_unchanged": {c["name"]: c["restartCount"] for c in after["status"]["containerStatuses"]}
        == restarts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--state-dir", default=".state", help="make dev's state (default: %(default)s)")
    args = ap.parse_args()
    env = DevEnv(Path(args.state_dir))
    base = env.endpoint()
    docs = yaml.safe_load_all((QUICKSTART / "policy.yaml").read_text())
    policy = next(d for d in docs if d["kind"] == "LLMPolicy")
    try:
        runs = [trial(env, base, policy, f"bench-term-{i}") for i in range(args.trials)]
    finally:
        env.kubectl("apply", "-n", NAMESPACE, "-f", str(QUICKSTART / "policy.yaml"))
    delays = [r["delay_s"] for r in runs]
    print(
        json.dumps(
            {
                "bench": "policy_propagation",
                "trials": runs,
                "delay_s": {
                    "min": min(delays),
                    "median": round(statistics.median(delays), 2),
                    "max": max(delays),
                },
                "failed_requests": sum(r["failed"] for r in runs),
            }
        )
    )


if __name__ == "__main__":
    main()
