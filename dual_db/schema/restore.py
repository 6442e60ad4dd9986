"""Restoring a `pg_dump -Fd` backup (the `source/full_backup`) into an empty database, for rollback.

The tools are chosen as for the dump (`resolve_pg_bin_dir`: the configured bin directory or the
embedded PostgreSQL 18) and the password travels in a private passfile, never on the command line.
`--no-owner`: the restoring role owns what it creates (the old roles may not exist on a new server).
`--exit-on-error`: a restore that hit an error stops there and says so, instead of pg_restore's
default of carrying on and leaving a database that looks complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dual_db.db.connect import connection, server_version_num
from dual_db.db.urls import DatabaseUrl
from dual_db.schema.dump import PgToolError, pg_tool_version_string, run_pg_tool


@dataclass(frozen=True)
class RestoreResult:
    seconds: float
    pg_restore_version: str
    # The command line that ran (no password in it: it travels in a passfile), for logs/metadata.
    command: tuple[str, ...] = ()


def restore_backup(
    url: DatabaseUrl,
    backup_dir: Path,
    *,
    bin_dir: Path,
    jobs: int = 2,
    timeout: float | None = None,
) -> RestoreResult:
    """Restore the pg_dump directory archive `backup_dir` into the (empty) database `url`.

    Raises `PgToolError` when the archive is missing, pg_restore is older than the server, or the
    restore fails; a failed restore leaves what it had created so far (the caller says so).
    """
    backup_dir = Path(backup_dir)
    if not (backup_dir / "toc.dat").is_file():
        raise PgToolError(
            f"{backup_dir} is not a pg_dump directory archive (no toc.dat): the backup was deleted "
            "(keep_backups) or moved; run migrate for a new one"
        )
    version = pg_tool_version_string(bin_dir, "pg_restore")
    with connection(url, read_only=True, application_name="dual-db version check") as conn:
        server_major = server_version_num(conn) // 10000
    if int(version.split(".")[0]) < server_major:
        raise PgToolError(
            f"pg_restore {version} is older than the PostgreSQL {server_major} server {url.masked()}: set "
            "pg_bin_dir / DUAL_DB_PG_BIN_DIR to newer tools"
        )
    args = ["--no-owner", "--exit-on-error", f"--jobs={max(1, jobs)}", str(backup_dir)]
    started = time.monotonic()
    try:
        _result, argv = run_pg_tool(bin_dir, "pg_restore", url, args, timeout=timeout)
    except PgToolError as exc:
        raise PgToolError(
            f"{exc} — {url.masked()} now holds a partial restore: drop and recreate it (empty) before "
            "trying again"
        ) from None
    return RestoreResult(seconds=time.monotonic() - started, pg_restore_version=version, command=argv)
