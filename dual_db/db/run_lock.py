"""The run lock on a target database: one run at a time writes it, whatever launched the run.

Dagster's pool `dual_db_source` only orders the steps that read the source, one step at a time: between
the steps of one run, another run's steps got in, so two migrates both applied the schema and copied
into the same targets. The lock here is PostgreSQL's own, so it holds for runs from the CLI, the UI or
two Dagster instances alike: a session-level advisory lock on the target database, taken before a run
starts any step and held by one idle session until the run ends. The server releases it when that
session ends, so a run killed with `kill -9` (or a lost machine, once TCP notices) leaves no lock.

A run that writes takes it exclusive; a run that only reads (verify, the soak week) takes it shared, so
two verifies may run at once, but never a verify beside a migrate. A run that finds the lock taken does
nothing and says, in one line, which run holds it: the holding session's application_name is
`dual-db run <run id>`, and pg_locks with pg_stat_activity (both readable by any role) name it.
Nothing is created in the database for this.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import psycopg
from psycopg import sql

from dual_db.db.connect import connect
from dual_db.db.urls import DatabaseUrl

# The advisory lock key (two int4 keys): "dudb" and the target lock. Advisory keys are scoped to
# the database, so each target database has its own lock under the same key.
LOCK_CLASS = 0x64756462
LOCK_TARGET = 1
# application_name of the holding session: the run id follows (63 bytes at most: 12 + 36).
APPLICATION_PREFIX = "dual-db run "
# A holder that ends between our refused try and our look at pg_locks: try again this many times.
_ATTEMPTS = 3

_HOLDERS = """
SELECT l.pid, a.application_name, l.mode
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 2
ORDER BY l.pid
"""


class LockMode(Enum):
    SHARED = "shared"
    EXCLUSIVE = "exclusive"


@dataclass(frozen=True)
class LockHolder:
    """A session holding the lock: its server pid, application_name and lock mode."""

    pid: int
    application_name: str | None
    mode: LockMode

    @property
    def run_id(self) -> str | None:
        name = self.application_name or ""
        return name.removeprefix(APPLICATION_PREFIX) if name.startswith(APPLICATION_PREFIX) else None


class TargetLocked(RuntimeError):
    """The lock is held by other sessions (`holders`; empty if they ended while we looked)."""

    def __init__(self, url: DatabaseUrl, holders: list[LockHolder]) -> None:
        self.url = url
        self.holders = holders
        super().__init__(
            f"{url.masked()} is locked by {', '.join(h.application_name or '?' for h in holders)}"
        )


def lock_holders(conn: psycopg.Connection) -> list[LockHolder]:
    """The other sessions that hold the run lock of the database `conn` is connected to."""
    rows = conn.execute(_HOLDERS, (LOCK_CLASS, LOCK_TARGET)).fetchall()
    return [
        LockHolder(pid, name, LockMode.EXCLUSIVE if mode == "ExclusiveLock" else LockMode.SHARED)
        for pid, name, mode in rows
    ]


def take_run_lock(
    url: DatabaseUrl, run_id: str, mode: LockMode, *, connect_timeout: int = 10
) -> psycopg.Connection:
    """A session holding the run lock of `url`'s database in `mode`, named for `run_id`.

    Never waits: raises `TargetLocked` naming the holders when another session has it. The lock lasts
    as long as the returned session: close it when the run ends.
    """
    conn = connect(
        url,
        autocommit=True,
        application_name=f"{APPLICATION_PREFIX}{run_id}",
        connect_timeout=connect_timeout,
    )
    try:
        function = "pg_try_advisory_lock" if mode is LockMode.EXCLUSIVE else "pg_try_advisory_lock_shared"
        query = sql.SQL("SELECT {}(%s::int4, %s::int4)").format(sql.Identifier(function))
        holders: list[LockHolder] = []
        for _ in range(_ATTEMPTS):
            row = conn.execute(query, (LOCK_CLASS, LOCK_TARGET)).fetchone()
            if row and row[0]:
                return conn
            holders = lock_holders(conn)
            if holders:
                break
        raise TargetLocked(url, holders)
    except BaseException:
        conn.close()
        raise
