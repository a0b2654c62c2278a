"""`maestro console` / `python -m maestro.workers.console`: run the review console.

Settings come from MAESTRO_CONSOLE_* env (maestro.workers.console.contract); flags override. A bad
setting, an unreachable database or an unreadable key fails at start with a line naming the fix.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys

from maestro.workers.console import contract as c
from maestro.workers.console.config import ConsoleSettings, SettingsError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maestro console",
        description="Review console: the queue of flagged samples, RBAC-checked reviews, corrections export. "
        "Settings come from MAESTRO_CONSOLE_* env; flags override.",
    )
    p.add_argument("--port", type=int, help=f"HTTP port (env {c.ENV_PORT}, default {c.DEFAULT_PORT})")
    p.add_argument("--host", help=f"bind address (env {c.ENV_HOST}, default 0.0.0.0)")
    p.add_argument("--database-url", help=f"sqlite:///<path> or postgresql://... (env {c.ENV_DATABASE_URL})")
    p.add_argument("--api-server", help=f"Kubernetes API server URL (env {c.ENV_API_SERVER})")
    p.add_argument("--log-level", default="INFO")
    return p


def settings_from(args: argparse.Namespace) -> ConsoleSettings:
    s = ConsoleSettings.from_env()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ConsoleSettings)
        if getattr(args, f.name, None) is not None
    }
    s = dataclasses.replace(s, **overrides)
    s.validate()
    return s


def _read_password(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as e:
        raise SettingsError(f"{c.ENV_DATABASE_PASSWORD_FILE}={path}: {e.strerror}") from e


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from(args)
        password = _read_password(settings.database_password_file)
    except SettingsError as e:
        print(f"maestro console: {e}", file=sys.stderr)
        return 2
    # imported here: SQLAlchemy and the server load only for `run`, not for --help or a bad setting
    from maestro.workers.console.k8sauth import AuthUnavailable, KubeAuth
    from maestro.workers.console.server import Console, StartupError, read_secret
    from maestro.workers.console.store import ReviewStore, StoreError

    try:
        store = ReviewStore.open(settings.database_url, password)
        assert settings.api_server is not None  # validate() ensured it
        kube = KubeAuth(
            settings.api_server,
            KubeAuth.token_file(settings.api_token_file),
            ca_file=settings.api_ca_file,
            cache_ttl=settings.auth_cache_ttl,
        )
        console = Console(settings, store, kube, read_secret(settings.session_secret_file))
        asyncio.run(console.serve_forever())
    except (StoreError, StartupError, AuthUnavailable) as e:
        print(f"maestro console: {e}", file=sys.stderr)
        return 2
    return 0
