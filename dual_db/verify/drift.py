"""source_drift: which source tables changed since their copy's snapshot.

The rules of `dual_db.verify` (its package docstring) hold here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import psycopg

from dual_db.db.catalog import (
    ColumnInfo,
    list_tables,
    table_columns,
)
from dual_db.db.connect import DatabaseUnreachable, connection
from dual_db.db.fingerprint import Fingerprint, table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.verify.common import error_text, relkind, savepoint
from dual_db.verify.outcome import CheckOutcome, JSONValue, capped, plural


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


def source_drift_now(
    source_url: DatabaseUrl, expected: Mapping[TableName, Fingerprint], *, workers: int
) -> tuple[CheckOutcome, list[TableName]]:
    """Fingerprint every copied table on the source now and compare with its snapshot fingerprint.

    Read-only sessions, `workers` at a time. Returns the merged WARN outcome and the tables that moved
    (a table that cannot be fingerprinted now counts as moved: nothing proves it did not).
    """
    started = time.monotonic()
    if not expected:
        outcome = CheckOutcome(True, "no table has been copied yet: nothing to compare", severity="WARN")
        return outcome, []
    tables = sorted(expected)
    n = max(1, min(workers, len(tables)))
    chunks = [tables[i::n] for i in range(n)]

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
    metadata: dict[str, JSONValue] = {
        "tables_checked": len(tables),
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
