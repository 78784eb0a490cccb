"""A Postgres cluster of the chaos suite's own, so an outage never touches the machine's server.

`initdb` makes it under a temp dir, `pg_ctl` starts it on a free port (TCP on 127.0.0.1 only,
its socket in its own dir, trust auth) and stops it: `immediate` for an outage, as a crash
would, `fast` at the end. The binaries come from PATH or from Debian's /usr/lib/postgresql.
Postgres refuses to run as root, so as root every command runs as the `postgres` user, and the
cluster's dir is handed to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from jetrl.localstack import free_port

__all__ = ["PrivateCluster", "pg_bin_dir"]

DEBIAN_BINS = Path("/usr/lib/postgresql")


def pg_bin_dir() -> Path:
    """Where initdb and pg_ctl are: on PATH, else the newest of Debian's versioned dirs."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(
        (p for p in DEBIAN_BINS.glob("*/bin/pg_ctl") if p.parents[1].name.isdigit()),
        key=lambda p: int(p.parents[1].name),
    )
    if not versions:
        raise FileNotFoundError(
            "no pg_ctl on PATH or under /usr/lib/postgresql/*/bin: install the Postgres "
            "server binaries (Debian: postgresql-15) for the private cluster"
        )
    return versions[-1].parent


class PrivateCluster:
    """One cluster under a temp dir; `start`, `stop`, and `close` (stop and delete it)."""

    def __init__(self, database: str = "jetrl_chaos"):
        self.bin = pg_bin_dir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="jetrl-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"
        # as root, run every pg command as `postgres` and give it the dir (mkdtemp made it 0700)
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._pg("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", timeout=120)

    def _pg(self, tool: str, *args, timeout: float = 60) -> None:
        cmd = [*self._as, str(self.bin / tool), *map(str, args)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}\nlog: {self.log}"
            )

    def start(self, timeout: float = 60) -> None:
        # fsync off: the cluster is thrown away, and an immediate stop must still recover (WAL replay
        # does not need fsync when the OS itself does not crash)
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off -c max_connections=200"
        self._pg(
            "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.log,
            "-o",
            options,
            "-w",
            "-t",
            int(timeout),
            "start",
            timeout=timeout + 10,
        )

    def stop(self, mode: str = "fast", timeout: float = 60) -> float:
        """Stop the server (`immediate`: no shutdown checkpoint, clients cut off as by a crash);
        returns the seconds it took."""
        began = time.monotonic()
        self._pg("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", int(timeout), "stop", timeout=timeout + 10)
        return time.monotonic() - began

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        """Stop it if it runs and delete it: the suite leaves no cluster behind."""
        try:
            if self.running():
                self.stop("fast")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
