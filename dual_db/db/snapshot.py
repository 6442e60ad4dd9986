"""One consistent view of the source for a whole run: an exported snapshot held open.

The plan runs two `pg_dump`s (core tables, AI tables), which take two snapshots: on a live source a
message can land in `agent_messages` between them while its `ai_feedback` row does not, or the
reverse. dual-db opens one REPEATABLE READ transaction, exports its snapshot with
`pg_export_snapshot()`, and every reader of the run (pg_dump --snapshot, each table's COPY, each
fingerprint) joins it with `SET TRANSACTION SNAPSHOT`. The snapshot lives as long as the holding
transaction, so the holder must stay open until the last reader has started.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dual_db.db.connect import connect
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl


class SnapshotLost(RuntimeError):
    """A reader could not join the run's snapshot: its holding session has ended."""


@dataclass(frozen=True)
class TransactionHorizon:
    """Which transactions a snapshot sees, in which database of which cluster.

    `transactions` is `pg_current_snapshot()` in the exporting transaction (`xmin:xmax:xip,...`, 64-bit
    transaction ids); `system_identifier` names the cluster (pg_control_system), since transaction ids
    mean something only on their own cluster, `database_oid` the database the snapshot read, and
    `server_started_at` when the server last started (crash recovery empties unlogged tables without a
    transaction). With them, a later session can prove that nothing the snapshot did not see has
    committed since (`dual_db.verify.drift`), without reading a table.
    """

    transactions: str
    system_identifier: str
    database_oid: str
    server_started_at: str


@dataclass(frozen=True)
class ExportedSnapshot:
    snapshot_id: str
    taken_at: str  # ISO timestamp, server clock
    wal_lsn: str | None  # where the WAL stood: the start point for a logical catch-up
    horizon: TransactionHorizon | None = None  # None where the server does not tell (see its function)


class SnapshotHolder:
    """Holds the exporting transaction. Use as a context manager, or `open()` / `close()`."""

    def __init__(
        self,
        url: DatabaseUrl,
        *,
        lock_tables: Sequence[TableName] = (),
        lock_timeout: str = "30s",
        application_name: str = "dual-db snapshot",
    ) -> None:
        self.url = url
        self.lock_tables = list(lock_tables)
        self.lock_timeout = lock_timeout
        self.application_name = application_name
        self._conn: psycopg.Connection | None = None
        self._snapshot: ExportedSnapshot | None = None

    @property
    def snapshot(self) -> ExportedSnapshot:
        if self._snapshot is None:
            return self.open()
        return self._snapshot

    def open(self) -> ExportedSnapshot:
        if self._snapshot is not None:
            return self._snapshot
        conn = connect(self.url, read_only=True, application_name=self.application_name)
        try:
            # A server-wide idle-in-transaction timeout would kill the holder mid-run.
            conn.execute("SET idle_in_transaction_session_timeout = 0")
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(self.lock_timeout)))
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if self.lock_tables:
                # ACCESS SHARE, as pg_dump takes: concurrent DDL (DROP/ALTER) waits for us instead of
                # changing a table under a reader; ordinary reads and writes go on.
                conn.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
                        sql.SQL(", ").join(t.ident for t in self.lock_tables)
                    )
                )
            row = conn.execute("SELECT pg_export_snapshot(), now()").fetchone()
            assert row is not None
            snapshot_id, taken_at = str(row[0]), row[1]
            wal_lsn = _current_wal_lsn(conn)
            horizon = _transaction_horizon(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._snapshot = ExportedSnapshot(
            snapshot_id=snapshot_id,
            taken_at=taken_at.astimezone(dt.UTC).isoformat()
            if hasattr(taken_at, "astimezone")
            else str(taken_at),
            wal_lsn=wal_lsn,
            horizon=horizon,
        )
        return self._snapshot

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            except psycopg.Error:
                pass  # the holder's session already ended (terminated, server restarted): nothing to end
            finally:
                self._conn.close()
        self._conn = None
        self._snapshot = None

    def __enter__(self) -> ExportedSnapshot:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _current_wal_lsn(conn: psycopg.Connection) -> str | None:
    # pg_current_wal_lsn() errors on a standby; a savepoint keeps the snapshot transaction usable.
    try:
        with conn.transaction():
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        return str(row[0]) if row else None
    except psycopg.Error:
        return None


_HORIZON_SQL = """
SELECT pg_current_snapshot()::text,
       (SELECT system_identifier::text FROM pg_control_system()),
       (SELECT oid::text FROM pg_database WHERE datname = current_database()),
       pg_postmaster_start_time()::text
"""


def _transaction_horizon(conn: psycopg.Connection) -> TransactionHorizon | None:
    # In a REPEATABLE READ transaction every statement sees the transaction's snapshot: this is the one
    # pg_export_snapshot() exported. A server that refuses pg_control_system() (some managed services
    # may) gets no horizon: drift is then always found by fingerprints.
    try:
        with conn.transaction():
            row = conn.execute(_HORIZON_SQL).fetchone()
    except psycopg.Error:
        return None
    if row is None or None in row:
        return None
    return TransactionHorizon(*(str(value) for value in row))


def snapshot_session_connection(
    url: DatabaseUrl, snapshot_id: str | None, *, application_name: str = "dual-db reader"
) -> psycopg.Connection:
    """A read-only connection whose open transaction sees the exported snapshot `snapshot_id`.

    With `snapshot_id=None` the transaction takes its own snapshot (used by single-table runs that
    need no coordination with other readers). Close it with `close_snapshot_session`.
    """
    conn = connect(url, read_only=True, application_name=application_name)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot_id is not None:
            try:
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
            except (psycopg.errors.UndefinedObject, psycopg.errors.InvalidParameterValue) as exc:
                raise SnapshotLost(
                    f"the run's source snapshot {snapshot_id} is gone: the session holding it ended "
                    f"({exc.diag.message_primary}). Re-run migrate: it takes a new snapshot."
                ) from None
    except BaseException:
        conn.close()
        raise
    return conn


def close_snapshot_session(conn: psycopg.Connection) -> None:
    try:
        if not conn.closed:
            conn.rollback()
    except psycopg.Error:
        pass  # a broken session (server gone, backend terminated) has nothing to roll back
    finally:
        conn.close()


@contextmanager
def snapshot_session(
    url: DatabaseUrl, snapshot_id: str | None, *, application_name: str = "dual-db reader"
) -> Iterator[psycopg.Connection]:
    """`snapshot_session_connection` as a context manager."""
    conn = snapshot_session_connection(url, snapshot_id, application_name=application_name)
    try:
        yield conn
    finally:
        close_snapshot_session(conn)
