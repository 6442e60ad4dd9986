"""Running pg_dump safely: the right version, the password never on a command line.

pg_dump refuses (or worse, mis-dumps) a server newer than itself, and the system pg_dump is often
older than the source (15 here, against an 18 server). So the tools come from a configured bin
directory, `DUAL_DB_PG_BIN_DIR`, or the embedded PostgreSQL 18, and their major version is checked
against the server's before anything runs.

The connection string handed to pg_dump never contains the password: `DatabaseUrl.libpq_subprocess`
gives a conninfo without it and an environment whose PGPASSFILE is a private, temporary passfile.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dual_db.db.connect import connection, server_version_num
from dual_db.db.pg_tools import pg_bin_dir
from dual_db.db.urls import DatabaseUrl, client_tool_environment

PG_BIN_DIR_ENV = "DUAL_DB_PG_BIN_DIR"

# Options for the schema sections: no owners/ACLs (the targets have their own roles), no tablespaces
# (the targets' storage is not the source's), and no publications/subscriptions (replication set-up
# belongs to a server, not to the application schema; a subscription would even start pulling data).
_SCHEMA_OPTIONS = (
    "--schema-only",
    "--no-owner",
    "--no-acl",
    "--no-tablespaces",
    "--no-publications",
    "--no-subscriptions",
    "--format=plain",
)


class PgToolError(RuntimeError):
    """A PostgreSQL client tool is missing, too old, or failed. Never contains a password."""


@dataclass(frozen=True)
class SchemaSections:
    pre_data: str
    post_data: str
    pg_dump_version: str  # e.g. "18.4"
    # The command lines that ran (no password in them: it travels in a passfile), for logs/metadata.
    commands: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class BackupResult:
    path: Path
    bytes: int
    seconds: float
    pg_dump_version: str
    command: tuple[str, ...] = ()
    compression: str = ""


def resolve_pg_bin_dir(configured: str | None = None) -> Path:
    """The bin directory of the PostgreSQL client tools to use.

    `configured` (e.g. a Dagster resource setting), else `$DUAL_DB_PG_BIN_DIR`, else the embedded
    PostgreSQL 18 tools, which can dump any server up to 18.
    """
    for candidate in (configured, os.environ.get(PG_BIN_DIR_ENV)):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_dir():
                raise PgToolError(f"PostgreSQL bin directory {path} does not exist")
            return path
    return pg_bin_dir(18)


def _tool(bin_dir: Path, tool: str) -> Path:
    path = Path(bin_dir) / tool
    if not path.is_file() or not os.access(path, os.X_OK):
        raise PgToolError(f"{tool} not found in {bin_dir}: set pg_bin_dir / {PG_BIN_DIR_ENV}")
    return path


def pg_tool_version_string(bin_dir: Path, tool: str = "pg_dump") -> str:
    """`18.4` from `pg_dump (PostgreSQL) 18.4`."""
    path = _tool(bin_dir, tool)
    result = subprocess.run(
        [str(path), "--version"],
        env=client_tool_environment(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    # Tool output, not SQL: `<tool> (PostgreSQL) 18.4` (possibly with a distribution suffix).
    match = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)", result.stdout)
    if result.returncode != 0 or not match:
        raise PgToolError(
            f"cannot tell the version of {path}: {(result.stdout + result.stderr).strip()[:300]}"
        )
    return match.group(1)


def pg_tool_version(bin_dir: Path, tool: str = "pg_dump") -> int:
    """The major version of a client tool (18 for 18.4)."""
    return int(pg_tool_version_string(bin_dir, tool).split(".")[0])


def choose_backup_compression(configure_flags: str, pg_dump_major: int) -> str:
    """pg_dump's `--compress` for the backup: the fastest codec the build has.

    zstd at level 1 compresses about as well as gzip at level 1 at several times its speed, and lz4
    faster still with larger files; both exist only where PostgreSQL was built `--with-zstd` /
    `--with-lz4` (`pg_config --configure`). pg_dump 15 and older take only a gzip level.
    """
    flags = {flag.strip("'\"") for flag in configure_flags.split()}
    if pg_dump_major >= 16 and "--with-zstd" in flags:
        return "zstd:1"
    if pg_dump_major >= 16 and "--with-lz4" in flags:
        return "lz4:1"
    return "gzip:1" if pg_dump_major >= 16 else "1"


def backup_compression(bin_dir: Path) -> str:
    """`choose_backup_compression` for the pg_dump in `bin_dir`, from the `pg_config` beside it."""
    pg_config = Path(bin_dir) / "pg_config"
    configure = ""
    if pg_config.is_file():
        result = subprocess.run(
            [str(pg_config), "--configure"], env=client_tool_environment(), capture_output=True, text=True
        )
        configure = result.stdout if result.returncode == 0 else ""
    return choose_backup_compression(configure, pg_tool_version(bin_dir))


def _server_major(version_num: int) -> int:
    return version_num // 10000


def check_pg_dump_compatible(bin_dir: Path, server_version_num: int) -> int:
    """Raise `PgToolError` unless pg_dump in `bin_dir` can dump a server of that version.

    Returns pg_dump's major version. pg_dump must be at least the server's major version.
    """
    tool_major = pg_tool_version(bin_dir, "pg_dump")
    server_major = _server_major(server_version_num)
    if tool_major < server_major:
        raise PgToolError(
            f"pg_dump {tool_major} cannot dump a PostgreSQL {server_major} server; set pg_bin_dir / "
            f"{PG_BIN_DIR_ENV} to PostgreSQL ≥ {server_major} tools (now: {bin_dir})"
        )
    return tool_major


def _check_server(url: DatabaseUrl, bin_dir: Path) -> str:
    with connection(url, read_only=True, application_name="dual-db version check") as conn:
        version_num = server_version_num(conn)
    check_pg_dump_compatible(bin_dir, version_num)
    return pg_tool_version_string(bin_dir, "pg_dump")


def run_pg_tool(
    bin_dir: Path, tool: str, url: DatabaseUrl, args: list[str], *, timeout: float | None = None
) -> tuple[subprocess.CompletedProcess[str], tuple[str, ...]]:
    """Run `tool` (pg_dump, pg_restore) against `url`: the password in a private passfile, the
    command line returned for logs; raises `PgToolError` with the tool's stderr when it fails."""
    path = _tool(bin_dir, tool)
    with url.libpq_subprocess() as (conninfo, env):
        env = dict(env)
        env.setdefault("PGAPPNAME", f"dual-db {tool}")
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        # `--dbname=<conninfo>`: the conninfo has no password (it is in env's PGPASSFILE).
        argv = [str(path), *args, f"--dbname={conninfo}"]
        try:
            result = subprocess.run(
                argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise PgToolError(f"{tool} against {url.masked()} timed out after {timeout}s") from exc
    if result.returncode != 0:
        # stderr is libpq's/pg_dump's own text: it never prints the password. The env is not shown.
        raise PgToolError(
            f"{tool} against {url.masked()} failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-4000:]}"
        )
    return result, tuple(argv)


def dump_schema_sections(
    url: DatabaseUrl, *, bin_dir: Path, snapshot: str | None = None, timeout: float | None = 600
) -> SchemaSections:
    """The schema of `url` as pg_dump's plain pre-data and post-data sections.

    With `snapshot` (an id from `pg_export_snapshot()` in a transaction that stays open meanwhile),
    both sections see the database exactly as that transaction does, i.e. as the data copy will.
    """
    version = _check_server(url, bin_dir)
    extra = [f"--snapshot={snapshot}"] if snapshot else []
    sections: dict[str, str] = {}
    commands: list[tuple[str, ...]] = []
    for section in ("pre-data", "post-data"):
        result, argv = run_pg_tool(
            bin_dir, "pg_dump", url, [*_SCHEMA_OPTIONS, f"--section={section}", *extra], timeout=timeout
        )
        sections[section] = result.stdout
        commands.append(argv)
    return SchemaSections(
        pre_data=sections["pre-data"],
        post_data=sections["post-data"],
        pg_dump_version=version,
        commands=tuple(commands),
    )


def dump_full_backup(
    url: DatabaseUrl,
    out_dir: Path,
    *,
    bin_dir: Path,
    jobs: int = 2,
    snapshot: str | None = None,
    timeout: float | None = None,
    compression: str | None = None,
) -> BackupResult:
    """A complete rollback copy of `url` (schema, data, owners, ACLs) in pg_dump's directory format.

    `out_dir` is created by pg_dump and must not exist yet (or be empty). `jobs` parallel workers; with
    `snapshot` they all read that snapshot, without one pg_dump exports its own. `compression` is
    pg_dump's `--compress` (None: the fastest codec of this build, `backup_compression`).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise PgToolError(f"backup directory {out_dir} is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    version = _check_server(url, bin_dir)
    # Never pg_dump's default gzip level 6: it made the backup the slowest step of a migration. gzip
    # level 1 is ~2.5x smaller than raw and an order of magnitude faster; zstd/lz4 faster still.
    compression = compression or backup_compression(bin_dir)
    args = ["--format=directory", f"--jobs={max(1, jobs)}", f"--compress={compression}", f"--file={out_dir}"]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    started = time.monotonic()
    try:
        _result, argv = run_pg_tool(bin_dir, "pg_dump", url, args, timeout=timeout)
    except BaseException:
        # A partial backup restores nothing: never leave one behind to be mistaken for a good one.
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    seconds = time.monotonic() - started
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return BackupResult(
        path=out_dir,
        bytes=size,
        seconds=seconds,
        pg_dump_version=version,
        command=argv,
        compression=compression,
    )


def prune_backups(dumps_dir: Path, keep: int, *, current: Path | None = None) -> list[Path]:
    """Delete all but the `keep` newest `<run id>/full_backup` directories under `dumps_dir` (the
    current one always stays); returns what was deleted."""
    backups = sorted(
        (p for p in Path(dumps_dir).glob("*/full_backup") if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    kept = 0
    deleted: list[Path] = []
    for path in backups:
        if current is not None and path.resolve() == current.resolve():
            continue
        if kept < max(0, keep - (1 if current is not None else 0)):
            kept += 1
            continue
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
    return deleted
