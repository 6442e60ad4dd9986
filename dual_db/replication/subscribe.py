"""The target's subscription on dual-db's slot, and how far behind it is.

`create_subscription` runs, on a target, `CREATE SUBSCRIPTION <sub> CONNECTION '<source>' PUBLICATION
<pub> WITH (create_slot = false, slot_name = '<slot>', copy_data = false, binary = true, streaming = on)`:
the slot exists already (its snapshot is what the copy read), the copy is done, binary apply keeps
vectors and numerics exact, and `streaming` (PostgreSQL 14+) hands a large transaction to the apply
worker before it commits instead of spilling it to the source's disk. PostgreSQL's own apply workers
decode: TOAST, large transactions and restarts are theirs (no client-side decoder, issue 19).

The CONNECTION string holds the source's password, and the subscription must keep it. dual-db never
prints it: an error message is built from the server's message with the password replaced by `***`
and the source named by its masked URL, never from the statement. Where the role may (superuser, or
GRANT SET), the session also turns statement logging off for that one statement, so the target's
server log does not record it either; `Subscription.statement_logging_suppressed` says whether it
could. (On the target, `pg_subscription.subconninfo` is readable by superusers only.)

`lag` measures, per subscription, the bytes the source's WAL is ahead of the slot's
`confirmed_flush_lsn` (what the target has applied and flushed, not merely received: pg_easy_replicate's
`sent_lsn` proves nothing) and the apply and sync error counts of `pg_stat_subscription_stats`.
Not yet done: the lag in seconds, which table an apply error is on and its message (the target's
server log has them), and lag as asset metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dual_db.db.urls import DatabaseUrl
from dual_db.replication.names import ReplicationNames, is_dual_db_name


class SubscriptionError(RuntimeError):
    """A subscription could not be created or did not catch up. Never holds a password."""


@dataclass(frozen=True)
class Subscription:
    name: str
    slot_name: str
    publication: str
    streaming: str | None  # None: the server has no streaming option (before PostgreSQL 14)
    statement_logging_suppressed: bool


@dataclass(frozen=True)
class SubscriptionLag:
    subscription: str
    slot_name: str
    current_lsn: str
    confirmed_flush_lsn: str | None
    bytes_behind: int | None  # None while the slot has never been confirmed
    slot_active: bool
    worker_running: bool
    apply_error_count: int
    sync_error_count: int

    @property
    def problem(self) -> str | None:
        """One line naming the subscription when its apply worker has failed, else None."""
        if not self.apply_error_count:
            return None
        return (
            f"subscription {self.subscription} failed to apply changes {self.apply_error_count} time(s): "
            "the target's server log names the table and the error (a row the target already had, or a "
            "schema change on the source); fix the target or start the catch-up over"
        )


# Settings that would write the CREATE SUBSCRIPTION statement (and its password) to the server log.
_QUIET = {"log_statement": "none", "log_min_error_statement": "panic", "log_min_duration_statement": "-1"}


def mask_secret(text: str, *secrets: str | None) -> str:
    """`text` with every occurrence of each secret replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _quiet_statement_logging(conn: psycopg.Connection) -> bool:
    quiet = True
    for name, value in _QUIET.items():
        try:
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        except psycopg.errors.InsufficientPrivilege:
            quiet = False
    return quiet


def _reset_statement_logging(conn: psycopg.Connection) -> None:
    for name in _QUIET:
        try:
            conn.execute(sql.SQL("RESET {}").format(sql.Identifier(name)))
        except psycopg.Error:
            pass


def create_subscription(
    target: psycopg.Connection,
    names: ReplicationNames,
    publisher: DatabaseUrl,
    *,
    streaming: bool = True,
) -> Subscription:
    """Subscribe `target` (an autocommit connection) to the source's publication over dual-db's slot.

    `publisher` is the source as the *target server* reaches it (often the same URL as dual-db's).
    """
    if not target.autocommit:
        raise ValueError("create_subscription needs an autocommit target connection")
    for name, kind in ((names.subscription, "sub"), (names.slot, "slot"), (names.publication, "pub")):
        if not is_dual_db_name(name, kind):
            raise ValueError(f"{name!r} is not a dual-db name")
    stream = ("on" if streaming else "off") if target.info.server_version >= 140000 else None
    options = [
        sql.SQL("create_slot = false"),
        sql.SQL("slot_name = {}").format(sql.Literal(names.slot)),
        sql.SQL("copy_data = false"),
        sql.SQL("binary = true"),
    ]
    if stream is not None:
        options.append(sql.SQL("streaming = {}").format(sql.Literal(stream)))
    statement = sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH ({})").format(
        sql.Identifier(names.subscription),
        sql.Literal(publisher.conninfo(with_password=True)),
        sql.Identifier(names.publication),
        sql.SQL(", ").join(options),
    )
    quiet = _quiet_statement_logging(target)
    try:
        target.execute(statement)
    except psycopg.Error as exc:
        detail = " ".join(p for p in (exc.diag.message_primary, exc.diag.message_detail) if p)
        raise SubscriptionError(
            f"cannot create subscription {names.subscription} to {publisher.masked()}: "
            + mask_secret(detail or type(exc).__name__, publisher.password)
        ) from None
    finally:
        _reset_statement_logging(target)
    return Subscription(
        name=names.subscription,
        slot_name=names.slot,
        publication=names.publication,
        streaming=stream,
        statement_logging_suppressed=quiet,
    )


_SLOT_LAG_SQL = """
SELECT pg_current_wal_lsn()::text, confirmed_flush_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, active
FROM pg_replication_slots WHERE slot_name = %s
"""

_SUBSCRIPTION_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_stat_subscription w WHERE w.subname = s.subname AND w.pid IS NOT NULL),
       coalesce(st.apply_error_count, 0)::bigint, coalesce(st.sync_error_count, 0)::bigint
FROM pg_subscription s LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
WHERE s.subname = %s AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def lag(source: psycopg.Connection, target: psycopg.Connection, names: ReplicationNames) -> SubscriptionLag:
    """How far the target's subscription is behind the source, and its error counts."""
    slot_row = source.execute(_SLOT_LAG_SQL, (names.slot,)).fetchone()
    if slot_row is None:
        raise SubscriptionError(f"replication slot {names.slot} does not exist on the source")
    sub_row = target.execute(_SUBSCRIPTION_SQL, (names.subscription,)).fetchone()
    if sub_row is None:
        raise SubscriptionError(f"subscription {names.subscription} does not exist on the target")
    return SubscriptionLag(
        subscription=names.subscription,
        slot_name=names.slot,
        current_lsn=str(slot_row[0]),
        confirmed_flush_lsn=None if slot_row[1] is None else str(slot_row[1]),
        bytes_behind=None if slot_row[2] is None else int(slot_row[2]),
        slot_active=bool(slot_row[3]),
        worker_running=bool(sub_row[0]),
        apply_error_count=int(sub_row[1]),
        sync_error_count=int(sub_row[2]),
    )


def wait_until_flushed(
    source: psycopg.Connection, slot_name: str, lsn: str, *, timeout: float = 60.0, poll: float = 0.1
) -> float:
    """Wait until `slot_name`'s confirmed_flush_lsn reaches `lsn`; the seconds it took.

    Raises SubscriptionError naming the slot and how far behind it still is when `timeout` passes.
    """
    started = time.monotonic()
    while True:
        row = source.execute(
            "SELECT confirmed_flush_lsn >= %s::pg_lsn,"
            " pg_wal_lsn_diff(%s::pg_lsn, confirmed_flush_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (lsn, lsn, slot_name),
        ).fetchone()
        if row is None:
            raise SubscriptionError(f"replication slot {slot_name} does not exist on the source")
        if row[0]:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            behind = "never confirmed" if row[1] is None else f"{row[1]} bytes behind"
            raise SubscriptionError(
                f"slot {slot_name} did not reach {lsn} within {timeout:.0f}s ({behind}): its target is "
                "lagging or its apply worker fails (see pg_stat_subscription_stats and the target's log)"
            )
        time.sleep(poll)
