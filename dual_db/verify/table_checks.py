"""count_parity and checksum_parity for one table, from a source and a target fingerprint.

The copy engine fingerprints both sides as each table lands (the source inside the run's snapshot),
so these checks compare two numbers each and cost nothing more; only a mismatch pays for locating
the difference, by bisecting key ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dual_db.db.catalog import ColumnInfo
from dual_db.db.fingerprint import Fingerprint
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl

COUNT_PARITY = "count_parity"
CHECKSUM_PARITY = "checksum_parity"


@dataclass(frozen=True)
class TableCheck:
    name: str
    passed: bool
    summary: str
    metadata: dict[str, Any] = field(default_factory=dict)


def count_check(table: TableName, expected: Fingerprint, actual: Fingerprint) -> TableCheck:
    missing = max(expected.rows - actual.rows, 0)
    extra = max(actual.rows - expected.rows, 0)
    passed = missing == 0 and extra == 0
    if passed:
        summary = f"{table}: {actual.rows} rows, as in the source at the snapshot"
    else:
        summary = (
            f"{table}: target has {actual.rows} rows, source had {expected.rows} at the snapshot "
            f"({missing} missing, {extra} extra)"
        )
    return TableCheck(
        COUNT_PARITY,
        passed,
        summary,
        {
            "source_rows": expected.rows,
            "target_rows": actual.rows,
            "missing_rows": missing,
            "extra_rows": extra,
        },
    )


def table_checks(
    expected: Fingerprint,
    actual: Fingerprint,
    table: TableName,
    columns: Sequence[ColumnInfo],
    *,
    source_url: DatabaseUrl,
    target_url: DatabaseUrl,
    snapshot_id: str | None,
    recorded_snapshot_id: str | None = None,
) -> list[TableCheck]:
    """Both checks for `table`. On a checksum mismatch, locate the first differing key range.

    `snapshot_id` is the copy's exported snapshot while it is still held (during the copy); after
    that the source can only be read as it is now, which the result says.
    """
    count = count_check(table, expected, actual)
    metadata: dict[str, Any] = {"source_checksum": expected.checksum, "target_checksum": actual.checksum}
    if expected == actual:
        checksum = TableCheck(
            CHECKSUM_PARITY, True, f"{table}: content identical to the source at the snapshot", metadata
        )
        return [count, checksum]
    summary = f"{table}: content differs from the source at the snapshot"
    located = _locate(table, columns, source_url, target_url, snapshot_id)
    if located is not None:
        summary += f"; first differing key range: {located['range']}"
        differences = located.get("differences") or []
        if isinstance(differences, list) and differences:
            shown = ", ".join(
                f"{d.get('kind')} {', '.join(map(str, d.get('key') or []))}"
                for d in differences[:5]
                if isinstance(d, dict)
            )
            summary += f" ({shown}{', ...' if len(differences) > 5 else ''})"
        metadata.update(located)
    if snapshot_id is None:
        metadata["compared_against"] = (
            "the source now (the copy's snapshot "
            + (recorded_snapshot_id or "?")
            + " is gone): writes since the copy also show as differences"
        )
    return [count, TableCheck(CHECKSUM_PARITY, False, summary, metadata)]


def _locate(
    table: TableName,
    columns: Sequence[ColumnInfo],
    source_url: DatabaseUrl,
    target_url: DatabaseUrl,
    snapshot_id: str | None,
) -> dict[str, Any] | None:
    from dual_db.db.connect import connection
    from dual_db.db.snapshot import snapshot_session
    from dual_db.verify.bisect import first_differing_range

    with (
        snapshot_session(source_url, snapshot_id) as source_conn,
        connection(target_url, autocommit=True) as target_conn,
    ):
        found = first_differing_range(source_conn, target_conn, table, columns)
    return found
