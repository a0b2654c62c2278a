"""A real PostgreSQL for the tests: initdb + postgres on a free loopback port in a temporary directory.

PostgreSQL refuses to run as root, so under root the cluster is owned by, and the server runs as, the
`postgres` user the Debian package creates (`runuser`). The binaries come from
/usr/lib/postgresql/<major>/bin (Debian's layout) or PATH; hack/host-deps.sh installs them. A missing
install fails the test that needs it, with that fix in the message, rather than skipping it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from ports import free_port
from procs import stop_group


def _bindir() -> str | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "postgres")) and os.path.exists(os.path.join(d, "initdb")):
            return d
    found = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(found)) if found else None


@dataclass
class PostgresServer:
    port: int
    root: str
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """A SQLAlchemy URL (trust auth on loopback: no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        stop_group(self.proc, 10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(timeout_s: float = 60.0) -> PostgresServer:
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL is not installed (no initdb/postgres under /usr/lib/postgresql/*/bin or on PATH); "
            "run hack/host-deps.sh as root (apt-get install postgresql)"
        )
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="maestro-pg-", dir="/tmp")
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "running as root and there is no `postgres` user to run PostgreSQL as"
            ) from None
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(root, "data")
    init = subprocess.run(
        [
            *as_user,
            f"{bindir}/initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        capture_output=True,
        timeout=timeout_s,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")
    port = free_port()
    log = open(os.path.join(root, "postgres.log"), "wb")  # noqa: SIM115 (the server writes it until stop)
    proc = subprocess.Popen(
        [
            *as_user,
            f"{bindir}/postgres",
            "-D",
            data,
            "-p",
            str(port),
            "-k",
            root,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    server = PostgresServer(port, root, proc)
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
            ).close()
            return server
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(root, "postgres.log"), "rb") as fh:
                    tail = fh.read()[-2000:].decode(errors="replace")
                server.stop()
                raise RuntimeError(f"PostgreSQL did not start on port {port}: {tail}") from None
            time.sleep(0.1)
