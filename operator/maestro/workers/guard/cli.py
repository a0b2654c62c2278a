"""`maestro guard`: run the policy proxy sidecar, or check a policy file without serving."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys

from maestro.workers.guard import contract


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="maestro guard", description="Policy-enforcing OpenAI API proxy (sidecar)."
    )
    p.add_argument(
        "--upstream",
        default=env(contract.UPSTREAM_ENV, contract.DEFAULT_UPSTREAM),
        help=f"model server base URL (${contract.UPSTREAM_ENV})",
    )
    p.add_argument(
        "--host",
        default=env(contract.HOST_ENV, contract.DEFAULT_HOST),
        help=f"listen address (${contract.HOST_ENV})",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(env(contract.PORT_ENV, contract.DEFAULT_PORT)),
        help=f"listen port (${contract.PORT_ENV})",
    )
    p.add_argument(
        "--config",
        default=env(contract.CONFIG_ENV, contract.DEFAULT_CONFIG),
        help=f"policy JSON rendered by the operator (${contract.CONFIG_ENV}); missing = pass-through",
    )
    p.add_argument(
        "--keys-dir",
        default=env(contract.KEYS_DIR_ENV, contract.DEFAULT_KEYS_DIR),
        help=f"API key Secret mount (${contract.KEYS_DIR_ENV})",
    )
    p.add_argument(
        "--audit-log",
        default=env(contract.AUDIT_LOG_ENV),
        help=f"audit JSON-lines file, default stdout (${contract.AUDIT_LOG_ENV})",
    )
    p.add_argument(
        "--events-socket", default=None, help="monitor event socket (default $MAESTRO_EVENTS_SOCKET)"
    )
    p.add_argument(
        "--feedback-url",
        default=env(contract.FEEDBACK_URL_ENV),
        help=f"the monitor's feedback route POST {contract.FEEDBACK_PATH} is relayed to (default "
        f"${contract.FEEDBACK_URL_ENV}; unset: feedback is off)",
    )
    p.add_argument(
        "--limits-redis-url",
        default=env(contract.LIMITS_REDIS_URL_ENV),
        help=f"Redis all replicas share the per-key limits through (${contract.LIMITS_REDIS_URL_ENV}; "
        f"password: ${contract.LIMITS_REDIS_PASSWORD_ENV} or the file "
        f"${contract.LIMITS_REDIS_PASSWORD_FILE_ENV}); unset: each guard limits on its own",
    )
    p.add_argument(
        "--limits-redis-prefix",
        default=env(contract.LIMITS_REDIS_PREFIX_ENV, contract.DEFAULT_LIMITS_REDIS_PREFIX),
        help=f"key prefix of this deployment's buckets (${contract.LIMITS_REDIS_PREFIX_ENV})",
    )
    p.add_argument(
        "--limits-timeout-ms",
        type=float,
        default=None,
        help="most a limited request waits on the store before the policy's fail mode applies (default 100)",
    )
    p.add_argument(
        "--limits-heartbeat-seconds",
        type=float,
        default=None,
        help="how often the guard renews its entry in the shared peer count (default 5)",
    )
    p.add_argument(
        "--reload-seconds",
        type=float,
        default=float(env(contract.RELOAD_INTERVAL_ENV, contract.DEFAULT_RELOAD_INTERVAL_S)),
        help="policy/keys poll interval; 0 disables hot reload",
    )
    p.add_argument(
        "--check", action="store_true", help="validate --config and --keys-dir, print a summary, exit"
    )
    p.add_argument("--log-level", default=env("MAESTRO_LOG_LEVEL", "INFO"))
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from maestro.workers.guard.config import PolicyError

    if args.check:
        from maestro.workers.guard.auth import load_keys
        from maestro.workers.guard.config import load_policy
        from maestro.workers.guard.proxy import compile_active

        try:
            policy = compile_active(load_policy(args.config)).policy
        except PolicyError as exc:
            print(f"maestro guard: invalid policy: {exc}", file=sys.stderr)
            return 1
        keys = load_keys(args.keys_dir)
        for err in keys.errors:
            print(f"maestro guard: key skipped: {err}", file=sys.stderr)
        state = (
            f"policy {policy.name!r} digest {policy.digest or '-'}"
            if policy.present
            else "NO POLICY (pass-through)"
        )
        auth = "required" if policy.auth_required else "optional"
        print(f"{state}; {len(keys.by_digest)} key(s); auth {auth}")
        return 1 if keys.errors else 0

    from aiohttp import web

    from maestro.workers.guard.audit import load_prompt_digest
    from maestro.workers.guard.proxy import Guard

    shared = None
    if args.limits_redis_url:
        from maestro.workers.guard.shared_limits import (
            CALL_TIMEOUT_S,
            HEARTBEAT_S,
            SharedLimiter,
            read_password,
        )

        try:
            password = read_password(os.environ)
        except ValueError as exc:
            print(f"maestro guard: {exc}", file=sys.stderr)
            return 1
        beat, timeout_ms = args.limits_heartbeat_seconds, args.limits_timeout_ms
        try:
            shared = SharedLimiter(
                args.limits_redis_url,
                prefix=args.limits_redis_prefix,
                password=password,
                timeout_s=CALL_TIMEOUT_S if timeout_ms is None else timeout_ms / 1000,
                heartbeat_s=HEARTBEAT_S if beat is None else beat,
            )
        except ValueError as exc:  # not a redis://, rediss:// or unix:// URL
            print(f"maestro guard: {contract.LIMITS_REDIS_URL_ENV}: {exc}", file=sys.stderr)
            return 1
        logging.getLogger("maestro.guard").info(
            "per-key limits shared through %s (prefix %s)", shared.address, shared.prefix
        )
    try:
        guard = Guard(
            args.upstream,
            config_path=args.config,
            keys_dir=args.keys_dir,
            audit_path=args.audit_log,
            events_path=args.events_socket,
            feedback_url=args.feedback_url or None,
            reload_interval=args.reload_seconds,
            prompt_digest=load_prompt_digest(os.environ),
            shared_limits=shared,
        )
    except PolicyError as exc:
        print(f"maestro guard: refusing to start with an invalid policy: {exc}", file=sys.stderr)
        return 1
    # Everything allocated so far (modules, the compiled policy) lives as long as the process: keep it
    # out of the collector's full passes, which would otherwise show up as request-latency spikes.
    gc.collect()
    gc.freeze()
    loop = _new_loop()
    logging.getLogger("maestro.guard").info(
        "guard listening on %s:%d, upstream %s", args.host, args.port, args.upstream
    )
    web.run_app(
        guard.app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=2048,
        loop=loop,
        handle_signals=True,
        shutdown_timeout=10,
    )
    return 0


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the guard extra installs uvloop
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
