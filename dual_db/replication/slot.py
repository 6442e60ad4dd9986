"""The publication, then the slot with an exported snapshot: the start point of a catch-up.

Order matters (pgcopydb lost rows while its snapshot and slot were taken apart: #263, #282, #279):
1. `create_publication` on the source, for the target's tables (so the slot's decoding knows them);
2. `SlotHolder.open` runs `CREATE_REPLICATION_SLOT <slot> LOGICAL pgoutput (SNAPSHOT 'export')` on a
   `replication=database` connection. The slot's consistent LSN and the exported snapshot are the same
   moment: every change committed before it is in the snapshot, every later one is decoded from the
   slot. The replication protocol takes no extended-protocol queries, hence a `psycopg.ClientCursor`.
3. The copy joins the snapshot (`BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT`,
   as `dual_db.db.snapshot.snapshot_session` does). The snapshot is valid only until the replication
   connection runs another command or closes, so the holder keeps it open and idle until `release()`.

The slot itself is persistent: it outlives the holder, holds WAL from its LSN on until a subscription
consumes it, and is dropped by `dual_db.replication.cleanup`. Creating it waits for every transaction
open on the source at that moment to end (`SourceFacts.oldest_transaction_seconds` tells how long).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.replication.guards import SourceFacts, require_source
from dual_db.replication.names import ReplicationNames, is_dual_db_name


class SlotError(RuntimeError):
    """The publication or the slot could not be created. The message names the source masked."""


@dataclass(frozen=True)
class ExportedSlot:
    slot_name: str
    consistent_lsn: str
    snapshot_name: str
    output_plugin: str


def create_publication(conn: psycopg.Connection, name: str, tables: Sequence[TableName]) -> None:
    """`CREATE PUBLICATION <name> FOR TABLE ...` on the source, only under a dual-db name."""
    if not is_dual_db_name(name, "pub"):
        raise ValueError(f"{name!r} is not a dual-db publication name (see dual_db.replication.names)")
    if not tables:
        raise ValueError(f"publication {name}: no tables to publish")
    statement = sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
        sql.Identifier(name), sql.SQL(", ").join(t.ident for t in tables)
    )
    with conn.transaction():
        conn.execute(statement)


def replication_connection(url: DatabaseUrl, *, application_name: str = "dual-db slot") -> psycopg.Connection:
    """A `replication=database` connection that speaks the simple query protocol (ClientCursor)."""
    kwargs = url.connect_kwargs()
    kwargs.setdefault("connect_timeout", 10)
    kwargs["application_name"] = application_name
    kwargs["replication"] = "database"
    try:
        return psycopg.connect(autocommit=True, cursor_factory=psycopg.ClientCursor, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise SlotError(f"cannot open a replication connection to {url.masked()}: {exc}".strip()) from None


class SlotHolder:
    """Creates a logical slot with an exported snapshot and holds that snapshot until `release()`."""

    def __init__(self, url: DatabaseUrl, slot_name: str) -> None:
        if not is_dual_db_name(slot_name, "slot"):
            raise ValueError(f"{slot_name!r} is not a dual-db slot name (see dual_db.replication.names)")
        self.url = url
        self.slot_name = slot_name
        self._conn: psycopg.Connection | None = None
        self._slot: ExportedSlot | None = None

    @property
    def slot(self) -> ExportedSlot:
        if self._slot is None:
            raise RuntimeError(f"slot {self.slot_name} is not created yet: call open()")
        return self._slot

    def open(self) -> ExportedSlot:
        if self._slot is not None:
            return self._slot
        conn = replication_connection(self.url)
        try:
            row = conn.execute(
                sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')").format(
                    sql.Identifier(self.slot_name)
                )
            ).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise SlotError(
                f"cannot create replication slot {self.slot_name} on {self.url.masked()}: "
                f"{exc.diag.message_primary or exc}"
            ) from None
        if row is None or row[2] is None:
            conn.close()
            raise SlotError(f"replication slot {self.slot_name}: the server exported no snapshot")
        # Nothing more runs on `conn`: another command would end the exported snapshot.
        self._conn = conn
        self._slot = ExportedSlot(
            slot_name=str(row[0]),
            consistent_lsn=str(row[1]),
            snapshot_name=str(row[2]),
            output_plugin=str(row[3]),
        )
        return self._slot

    def release(self) -> None:
        """End the exported snapshot (the slot stays, for the subscription)."""
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def __enter__(self) -> ExportedSlot:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.release()


def start_catch_up(
    url: DatabaseUrl, names: ReplicationNames, tables: Sequence[TableName]
) -> tuple[SourceFacts, SlotHolder]:
    """The guards, then the publication, then the slot with its snapshot held, in that order.

    A failing guard raises `ReplicationRefused` before anything is created. When the slot cannot be
    created, the publication just made is dropped again, so a refused start leaves the source as it was.
    """
    with connection(url, autocommit=True, application_name="dual-db catch-up") as conn:
        facts = require_source(conn, tables)
        create_publication(conn, names.publication, tables)
        holder = SlotHolder(url, names.slot)
        try:
            holder.open()
        except BaseException:
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(names.publication)))
            raise
    return facts, holder
