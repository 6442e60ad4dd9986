"""The bench's own embedded servers: source, core, AI and a Dagster instance, under `.dual_db/bench/`.

They are separate from `make up`'s servers (`.dual_db/source`, ...): other ports, other data
directories, so a bench never disturbs a demo and the other way round.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from dual_db.db.pg_tools import pg_bin_dir
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedCluster

BENCH_STATE_DIR = Path(".dual_db/bench")
CORE_DB = "bench_core"
AI_DB = "bench_ai"
INSTANCE_DB = "dagster"


def bench_cluster(state_dir: Path = BENCH_STATE_DIR) -> EmbeddedCluster:
    return EmbeddedCluster(state_dir / "servers", roles=("source", "core", "ai", "instance"))


def start(cluster: EmbeddedCluster) -> None:
    for server in cluster.servers.values():
        server.start()
    cluster["instance"].ensure_database(INSTANCE_DB)


def recreate_targets(cluster: EmbeddedCluster) -> tuple[DatabaseUrl, DatabaseUrl]:
    """Empty core and AI databases: every contender starts from nothing."""
    for role, name in (("core", CORE_DB), ("ai", AI_DB)):
        cluster[role].drop_database(name)
        cluster[role].ensure_database(name)
    return cluster["core"].url(CORE_DB), cluster["ai"].url(AI_DB)


def reset_instance(cluster: EmbeddedCluster) -> None:
    """A fresh Dagster instance database (dual-db's re-run bookkeeping starts from nothing too)."""
    cluster["instance"].drop_database(INSTANCE_DB)
    cluster["instance"].ensure_database(INSTANCE_DB)


def connect(url: DatabaseUrl, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(url.conninfo(), **kwargs)  # type: ignore[arg-type]


def pg_bin() -> Path:
    return pg_bin_dir(18)


def write_passfile(path: Path, urls: list[DatabaseUrl]) -> Path:
    """A libpq passfile for the scripts: no password on a command line or in a script."""

    def esc(value: object) -> str:
        return str(value).replace("\\", "\\\\").replace(":", "\\:")

    lines = [f"{esc(u.host)}:{esc(u.port)}:*:{esc(u.user)}:{esc(u.password)}" for u in urls]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def ensure_pgcopydb() -> tuple[str | None, str]:
    """Debian's pgcopydb, installed with apt-get when missing. Returns (path or None, what happened)."""
    found = shutil.which("pgcopydb")
    if found:
        return found, "found"
    if os.geteuid() != 0:
        return None, "pgcopydb is not installed and the bench is not root: run `apt-get install -y pgcopydb`"
    steps = (
        ["apt-get", "install", "-y", "pgcopydb"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "pgcopydb"],
    )
    output = ""
    for argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        output = (result.stdout + result.stderr)[-800:]
        if result.returncode == 0 and argv[-1] == "pgcopydb":
            break
    found = shutil.which("pgcopydb")
    if found:
        return found, "installed with apt-get"
    return None, f"apt-get install -y pgcopydb failed: {output.strip()}"


def conn_uri(url: DatabaseUrl) -> str:
    """A postgres:// URI without the password (the passfile carries it)."""
    return f"postgresql://{url.user}@{url.host}:{url.port}/{url.dbname}"


__all__ = ["AI_DB", "CORE_DB", "bench_cluster", "connect", "recreate_targets", "sql"]
