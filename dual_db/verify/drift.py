"""source_drift: which source tables changed since their copy's snapshot.

Found two ways. Reading: each table's fingerprint now against the one taken at the snapshot (a full scan
of the source). Proving: every change to a table's rows or definition is made by a transaction with a
transaction id, and becomes visible only when that transaction commits. So when no transaction the
snapshot did not see (one in progress when it was taken, or one started since) has committed, the
source's tables hold what the snapshot saw, and nothing needs reading. Transaction ids are per cluster:
writes to any database on the source server, autovacuum's ANALYZE included, make the proof fail, and the
tables are then read; so does a restart of the server (crash recovery empties unlogged tables without a
transaction). A quiet source, such as one whose application has stopped for a cutover, is proved
unchanged at once.

The rules of `dual_db.verify` (its package docstring) hold here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg

from dual_db.db.catalog import (
    ColumnInfo,
    list_tables,
    table_columns,
)
from dual_db.db.connect import DatabaseUnreachable, connection
from dual_db.db.fingerprint import Fingerprint, table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.snapshot import TransactionHorizon
from dual_db.db.urls import DatabaseUrl
from dual_db.verify.common import error_text, relkind, savepoint
from dual_db.verify.outcome import CheckOutcome, JSONValue, capped, plural

# Transactions started since the snapshot are looked up one by one, up to this many; on a source that
# busy the tables are read instead.
PROOF_MAX_NEW_TRANSACTIONS = 100_000

# The transactions the snapshot did not see: those in progress when it was taken (its xip list: a
# subtransaction's writes commit with its top-level transaction, which is listed) and those started since
# (from its xmax to the current xmax). One that is neither aborted nor still in progress has committed,
# or its status is gone (NULL): either way nothing is proved. The cluster's identifier, the database's
# OID (databases of one cluster share its transaction ids) and the server's start come back too.
_COMMITTED_SINCE_SQL = """
WITH span AS (
    SELECT h.then_snapshot,
           pg_snapshot_xmax(h.then_snapshot)::text::bigint AS first_new,
           pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_now
    FROM (SELECT %(transactions)s::pg_snapshot AS then_snapshot) AS h
), unseen AS (
    SELECT x AS xid FROM span, pg_snapshot_xip(span.then_snapshot) AS x
    UNION ALL
    SELECT (span.first_new + n)::text::xid8
    FROM span, generate_series(0, least(span.next_now - span.first_new, %(limit)s) - 1) AS n
)
SELECT (SELECT system_identifier::text FROM pg_control_system()),
       (SELECT oid::text FROM pg_database WHERE datname = current_database()),
       pg_postmaster_start_time()::text,
       (SELECT next_now - first_new FROM span),
       (SELECT min(xid::text::bigint) FROM unseen
        WHERE coalesce(pg_xact_status(xid), 'unknown') NOT IN ('aborted', 'in progress')),
       (SELECT count(*) FROM unseen)
"""


@dataclass(frozen=True)
class UnchangedProof:
    proven: bool
    reason: str  # why the source is unchanged, or why that could not be shown


def prove_unchanged_since(conn: psycopg.Connection, horizon: TransactionHorizon | None) -> UnchangedProof:
    """Whether no transaction the snapshot behind `horizon` did not see has committed since (the module
    docstring). Any doubt (no horizon, another cluster, too many transactions, a status no longer kept,
    an error) is "not proven": the caller then reads the tables."""
    if horizon is None:
        return UnchangedProof(False, "the snapshot recorded no transaction horizon")
    try:
        with savepoint(conn):
            row = conn.execute(
                _COMMITTED_SINCE_SQL,
                {"transactions": horizon.transactions, "limit": PROOF_MAX_NEW_TRANSACTIONS},
            ).fetchone()
    except psycopg.Error as exc:
        return UnchangedProof(False, f"transaction status unavailable: {error_text(exc)}")
    assert row is not None
    system_identifier, database_oid, server_started_at, started, committed, looked_up = row
    if system_identifier != horizon.system_identifier:
        return UnchangedProof(
            False,
            f"the source is cluster {system_identifier}, the snapshot was taken on "
            f"{horizon.system_identifier}",
        )
    if database_oid != horizon.database_oid:
        return UnchangedProof(
            False,
            f"the source is database {database_oid}, the snapshot was taken in database "
            f"{horizon.database_oid}",
        )
    if server_started_at != horizon.server_started_at:
        restarted = (
            "the source server has restarted since the snapshot (a crash recovery empties unlogged tables)"
        )
        return UnchangedProof(False, restarted)
    if started < 0 or started > PROOF_MAX_NEW_TRANSACTIONS:
        too_many = f"{started:,} transactions started since the snapshot: too many to look up"
        return UnchangedProof(False, too_many)
    if committed is not None:
        return UnchangedProof(False, f"transaction {committed} committed since the snapshot")
    return UnchangedProof(
        True,
        f"no transaction has committed on the source server since the snapshot "
        f"({plural(int(looked_up), 'transaction')} it did not see, none committed)",
    )


def source_drift(
    source_conn: psycopg.Connection,
    expected: Mapping[TableName, Fingerprint],
    *,
    columns: Mapping[TableName, Sequence[ColumnInfo]] | None = None,
    include_new_tables: bool = True,
) -> CheckOutcome:
    """Tables whose content on the source now differs from the snapshot's fingerprint: writes a cutover
    made now would lose. A WARN-level check (severity WARN; passed=False when anything drifted).

    `columns` should be the column lists the snapshot fingerprints were taken over (the copy records
    them); without it each table's current columns are used, so a column added since counts as drift.
    With `include_new_tables`, user tables created since the snapshot are drift too.
    """
    started = time.monotonic()
    drifted: list[str] = []
    details: list[JSONValue] = []
    for table, before in sorted(expected.items()):
        if relkind(source_conn, table) is None:
            drifted.append(f"{table}: dropped since the snapshot (had {plural(before.rows, 'row')})")
            details.append({"table": table.qualified, "snapshot_rows": before.rows, "now_rows": None})
            continue
        cols = list(columns[table]) if columns and table in columns else table_columns(source_conn, table)
        try:
            with savepoint(source_conn):
                now = table_fingerprint(source_conn, table, cols, algorithm=before.algorithm)
        except psycopg.Error as exc:
            drifted.append(f"{table}: cannot fingerprint now: {error_text(exc)}")
            continue
        if now != before:
            delta = now.rows - before.rows
            what = "content changed" if delta == 0 else f"{delta:+d} rows"
            drifted.append(f"{table}: {before.rows} -> {now.rows} rows ({what}) since the snapshot")
            details.append(
                {
                    "table": table.qualified,
                    "snapshot_rows": before.rows,
                    "now_rows": now.rows,
                    "checksum_changed": now.checksum != before.checksum,
                }
            )
    new_tables: list[str] = []
    if include_new_tables:
        known = set(expected)
        created = [info.table for info in list_tables(source_conn) if info.table not in known]
        new_tables = [t.qualified for t in created]
        drifted += [f"{t}: created since the snapshot" for t in created]
    meta: dict[str, JSONValue] = {
        "tables_checked": len(expected),
        "drifted": details,
        "new_tables": new_tables,  # type: ignore[dict-item]
        "seconds": round(time.monotonic() - started, 3),
    }
    if not drifted:
        return CheckOutcome(
            True,
            f"source: {plural(len(expected), 'table')} unchanged since the snapshot",
            [],
            meta,
            severity="WARN",
        )
    counted = plural(len(drifted), "table")
    summary = f"source: {counted} changed since the snapshot (a cutover now loses them): {drifted[0]}"
    return CheckOutcome(False, summary, capped(drifted), meta, severity="WARN")


def _prove_unchanged(
    source_url: DatabaseUrl, horizons: set[TransactionHorizon]
) -> dict[TransactionHorizon, UnchangedProof]:
    """`prove_unchanged_since` for each horizon, on one session; none when the source is unreachable
    (the sessions that read the tables then report it)."""
    if not horizons:
        return {}
    try:
        with connection(source_url, read_only=True, application_name="dual-db drift") as conn:
            return {h: prove_unchanged_since(conn, h) for h in sorted(horizons, key=str)}
    except DatabaseUnreachable:
        return {}


def source_drift_now(
    source_url: DatabaseUrl,
    expected: Mapping[TableName, Fingerprint],
    *,
    workers: int,
    horizons: Mapping[TableName, TransactionHorizon | None] | None = None,
) -> tuple[CheckOutcome, list[TableName]]:
    """Compare every copied table on the source now with its snapshot fingerprint.

    A table whose snapshot's horizon (`horizons`, from the copy's record) proves the source unchanged is
    not read (the module docstring); every other one is fingerprinted, in read-only sessions, `workers`
    at a time. Returns the merged WARN outcome and the tables that moved (a table that cannot be
    fingerprinted now counts as moved: nothing proves it did not).
    """
    started = time.monotonic()
    if not expected:
        outcome = CheckOutcome(True, "no table has been copied yet: nothing to compare", severity="WARN")
        return outcome, []
    tables = sorted(expected)
    horizons = horizons or {}
    proofs = _prove_unchanged(source_url, {h for t in tables if (h := horizons.get(t)) is not None})
    proven = {t for t in tables if (h := horizons.get(t)) is not None and h in proofs and proofs[h].proven}
    to_read = [t for t in tables if t not in proven]
    n = max(1, min(workers, len(to_read)))
    chunks = [to_read[i::n] for i in range(n)] if to_read else []

    def check(chunk: list[TableName]) -> list[tuple[TableName, CheckOutcome]]:
        with connection(source_url, read_only=True, application_name="dual-db drift") as conn:
            # One table per call, so that each finding is attributed to its table.
            return [
                (table, source_drift(conn, {table: expected[table]}, include_new_tables=False))
                for table in chunk
            ]

    try:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="dual-db-drift") as pool:
            per_table = sorted(
                (item for result in pool.map(check, chunks) for item in result), key=lambda item: item[0]
            )
    except DatabaseUnreachable as exc:
        # After cutover the old source may be gone: drift is then unknown, which is a warning about
        # the source, not a verification failure of the targets. The message carries a masked URL.
        summary = f"source drift unknown: {str(exc).splitlines()[0]}"
        unknown = {"tables_checked": 0, "seconds": round(time.monotonic() - started, 3)}
        return CheckOutcome(False, summary, [summary], unknown, severity="WARN"), []
    moved = [table for table, outcome in per_table if not outcome.passed]
    failures = [line for _, outcome in per_table for line in outcome.failures]
    details = [
        entry
        for _, outcome in per_table
        for entry in outcome.metadata.get("drifted") or []  # type: ignore[union-attr]
    ]
    reasons = sorted({p.reason for p in proofs.values()})
    metadata: dict[str, JSONValue] = {
        "tables_checked": len(tables),
        "tables_proven_unchanged": len(proven),
        "tables_read": len(to_read),
        # Why the tables were (or were not) proved unchanged without reading them, per snapshot.
        "unchanged_proof": reasons,  # type: ignore[dict-item]
        # How the source was checked, in one line: proved, or read (and why the proof did not hold).
        "checked_by": f"proved: {'; '.join(reasons)}"
        if not to_read
        else f"read {len(to_read)} table(s) ({'; '.join(reasons) or 'no snapshot horizon recorded'})",
        "moved_tables": [t.qualified for t in moved],
        "drifted": details,
        "seconds": round(time.monotonic() - started, 3),
    }
    if not moved:
        summary = f"source: {plural(len(tables), 'table')} unchanged since the snapshot"
        return CheckOutcome(True, summary, [], metadata, severity="WARN"), []
    summary = (
        f"source: {plural(len(moved), 'table')} changed since the snapshot (a cutover now loses these "
        f"writes unless they are re-copied): {', '.join(t.display for t in moved)}"
    )
    return CheckOutcome(False, summary, failures, metadata, severity="WARN"), moved
