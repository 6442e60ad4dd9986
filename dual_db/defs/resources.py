"""Dagster resources: one per database, the run's source snapshot, and migration settings."""

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import dagster as dg
import psycopg
from pydantic import Field, PrivateAttr

from dual_db.db import env
from dual_db.db.catalog import list_tables
from dual_db.db.connect import connect
from dual_db.db.snapshot import ExportedSnapshot, SnapshotHolder
from dual_db.db.urls import DatabaseUrl, DatabaseUrlError
from dual_db.defs.errors import clear_failure
from dual_db.schema.dump import resolve_pg_bin_dir


class PostgresDatabase(dg.ConfigurableResource):
    """A PostgreSQL database. `url` accepts every form the plan uses (postgresql+asyncpg:// too).

    Without `url`, the URL is read when a run starts from the first of `env_names` that is set, so a
    missing variable fails the run with one line naming it (not Dagster's config-resolution trace).
    Either way, a dual-db variable that `.env` silently replaced refuses the run (see `dual_db.db.env`).
    """

    url: str | None = Field(
        default=None,
        description="Connection URL. Leave unset to read it from the environment when a run starts: "
        "it holds a password.",
    )
    connect_timeout_seconds: int = Field(default=10, description="libpq connect_timeout")

    read_only: ClassVar[bool] = False
    role: ClassVar[str] = "database"
    env_names: ClassVar[tuple[str, ...]] = ()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Dumps, reports and compute logs written during the run hold data: readable by this user only.
        env.private_umask()

    def database_url(self) -> DatabaseUrl:
        """The parsed URL; fails the step with one clear line if it is missing, replaced or malformed."""
        with clear_failure():
            env.check_environment()
            raw = self.url or env.require(*self.env_names)
            try:
                return DatabaseUrl.parse(raw)
            except DatabaseUrlError as exc:
                raise DatabaseUrlError(f"the {self.role} database URL ({self._origin(raw)}): {exc}") from None

    def _origin(self, raw: str) -> str:
        """Where `raw` came from, for an error message: the variable holding it, else the setting."""
        for name in self.env_names:
            if os.environ.get(name) == raw:
                return name
        return "the url setting of the resource"

    @property
    def masked_url(self) -> str:
        return self.database_url().masked()

    @contextmanager
    def get_connection(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        url = self.database_url()
        with clear_failure():
            conn = connect(
                url,
                read_only=self.read_only,
                autocommit=autocommit,
                application_name=f"dual-db {self.role}",
                connect_timeout=self.connect_timeout_seconds,
            )
        try:
            yield conn
        finally:
            conn.close()


class SourceDatabase(PostgresDatabase):
    """The database being split. Every session on it is read-only: dual-db never writes to it."""

    read_only: ClassVar[bool] = True
    role: ClassVar[str] = "source"
    # The plan calls the source DATABASE_URL; SOURCE_DATABASE_URL wins when both are set.
    env_names: ClassVar[tuple[str, ...]] = ("SOURCE_DATABASE_URL", "DATABASE_URL")


class CoreDatabase(PostgresDatabase):
    """The new core (OLTP) database. It must never have the pgvector extension."""

    role: ClassVar[str] = "core"
    env_names: ClassVar[tuple[str, ...]] = ("CORE_DATABASE_URL",)


class AiDatabase(PostgresDatabase):
    """The new AI database, with pgvector and the vector indexes."""

    role: ClassVar[str] = "ai"
    env_names: ClassVar[tuple[str, ...]] = ("AI_DATABASE_URL",)


class RollbackDatabase(PostgresDatabase):
    """A new, empty database the `rollback` job restores the latest full backup of the source into."""

    role: ClassVar[str] = "rollback"
    env_names: ClassVar[tuple[str, ...]] = ("ROLLBACK_DATABASE_URL",)


def target_database(target: str, core: CoreDatabase, ai: AiDatabase) -> PostgresDatabase:
    """The resource of `target` ('core' or 'ai'): asset factories serve both targets."""
    return core if target == "core" else ai


class MigrationSettings(dg.ConfigurableResource):
    """How the migration runs. Defaults suit the embedded servers and a 2-core machine."""

    dumps_dir: str = Field(default=".dual_db/dumps", description="Where dumps and reports are written.")
    pg_bin_dir: str | None = Field(
        default=None,
        description="Directory with pg_dump ≥ the source's major version (default: $DUAL_DB_PG_BIN_DIR, "
        "else the embedded PostgreSQL 18 tools).",
    )
    copy_workers: int = Field(default=4, description="Tables copied in parallel per target.")
    backup_jobs: int = Field(default=2, description="pg_dump -j for the full backup.")
    backup_compression: str = Field(
        default="",
        description="pg_dump --compress for the full backup; empty: the fastest codec the pg_dump build "
        "has (zstd:1, else lz4:1, else gzip:1).",
    )
    replace_existing: bool = Field(
        default=False,
        description="Allow replacing tables in a target that dual-db did not create.",
    )
    keep_backups: int = Field(
        default=3,
        description="How many full backups to keep under dumps_dir (older ones are deleted after a "
        "new backup succeeds; a failed backup leaves nothing behind).",
    )
    max_index_memory: str = Field(
        default="1GB",
        description="Upper bound for maintenance_work_mem when building vector indexes.",
    )

    def dumps_path(self) -> Path:
        return Path(self.dumps_dir).absolute()

    def resolved_pg_bin_dir(self) -> str | None:
        if self.pg_bin_dir:
            return self.pg_bin_dir
        with clear_failure():
            return env.get("DUAL_DB_PG_BIN_DIR")

    def pg_bin_path(self) -> Path:
        """The PostgreSQL client tools' directory: pg_bin_dir, else $DUAL_DB_PG_BIN_DIR, else the embedded
        PostgreSQL 18's. The dump functions refuse a pg_dump older than the server before running it."""
        return resolve_pg_bin_dir(self.resolved_pg_bin_dir())


class SourceSnapshot(dg.ConfigurableResource):
    """The run's one consistent view of the source: an exported snapshot held open for the run.

    Opened lazily by the first step that asks for it. The code location runs in-process (see
    definitions.py), so every step of a run shares this one snapshot; steps run in threads, so the
    opening and the release are serialized by a lock. It is released as soon as the
    last step of the run that reads it is done (`release_after`), not at the end of the run: an open
    snapshot holds back the source's vacuum horizon and keeps ACCESS SHARE locks on every table,
    which must not last through index builds and verification.
    """

    source: SourceDatabase

    _holder: SnapshotHolder | None = PrivateAttr(default=None)
    _finished_readers: set[str] = PrivateAttr(default_factory=set)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def get(self) -> ExportedSnapshot:
        with self._lock:
            if self._holder is None:
                url = self.source.database_url()
                # Lock the tables pg_dump would lock, so that DDL cannot change a table under a reader.
                with self.source.get_connection() as conn:
                    tables = [info.table for info in list_tables(conn)]
                self._holder = SnapshotHolder(url, lock_tables=tables)
            return self._holder.snapshot

    @property
    def is_open(self) -> bool:
        return self._holder is not None

    def release_after(self, context: dg.AssetExecutionContext, reader_steps: frozenset[str]) -> None:
        """Called by every step in `reader_steps` when it is done, whether it succeeded or not: closes
        the snapshot once no step of this run that reads it is left to run."""
        plan = context.instance.get_execution_plan_snapshot(context.run.execution_plan_snapshot_id)
        readers_in_run = set(plan.step_keys_to_execute) & reader_steps
        with self._lock:
            self._finished_readers.add(str(context.op_execution_context.op_handle))
            if readers_in_run <= self._finished_readers:
                self._close_holder()

    def close(self) -> None:
        with self._lock:
            self._close_holder()

    def _close_holder(self) -> None:
        if self._holder is not None:
            self._holder.close()
            self._holder = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()
