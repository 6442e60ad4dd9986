"""count_parity and checksum_parity: the per-table checks, one path for the copy and for `verify`.

The source side is always the fingerprint recorded inside the copy's snapshot. During a copy the engine
has just fingerprinted the target too, so the checks compare two numbers; `verify` fingerprints the
target as it is now. Only a mismatch pays for locating the difference, by bisecting primary-key ranges
against the source: inside the snapshot while the run still holds it, else as the source is now (the
outcome says which).

A check never raises for a finding: a missing table or column is a failure in the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from dual_db.db.catalog import ColumnInfo
from dual_db.db.connect import connection
from dual_db.db.fingerprint import Fingerprint, table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.snapshot import snapshot_session
from dual_db.db.urls import DatabaseUrl
from dual_db.verify.bisect import BisectResult, key_columns, locate_difference
from dual_db.verify.common import error_text, relkind, savepoint
from dual_db.verify.outcome import CheckOutcome, JSONValue, plural

COUNT_PARITY = "count_parity"
CHECKSUM_PARITY = "checksum_parity"


def count_parity(
    expected: Fingerprint,
    target_conn: psycopg.Connection | None,
    target_table: TableName,
    columns: Sequence[ColumnInfo] | None = None,
    *,
    actual: Fingerprint | None = None,
) -> CheckOutcome:
    """The target's row count equals the source's at the snapshot.

    With `actual` (the target's fingerprint, already taken) no query runs and `target_conn` may be None.
    """
    del columns  # the interface is shared with checksum_parity; a count needs no column list
    t = target_table
    meta: dict[str, JSONValue] = {"table": t.qualified, "source_rows": expected.rows}
    if actual is not None:
        rows = actual.rows
    else:
        assert target_conn is not None, "count_parity needs a target connection or the target's fingerprint"
        if relkind(target_conn, t) is None:
            meta["target_rows"] = None
            return CheckOutcome(
                False, f"{t}: table missing on target", [f"{t}: table missing on target"], meta
            )
        row = target_conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.ident)).fetchone()
        assert row is not None
        rows = int(row[0])
    missing, extra = max(expected.rows - rows, 0), max(rows - expected.rows, 0)
    meta.update(target_rows=rows, missing_rows=missing, extra_rows=extra)
    if rows == expected.rows:
        return CheckOutcome(True, f"{t}: {plural(rows, 'row')}, as in the source at the snapshot", [], meta)
    failure = (
        f"{t}: target has {plural(rows, 'row')}, source had {expected.rows} at the snapshot "
        f"({missing} missing, {extra} extra)"
    )
    return CheckOutcome(False, failure, [failure], meta)


def _missing(t: TableName, meta: dict[str, JSONValue]) -> CheckOutcome:
    return CheckOutcome(False, f"{t}: table missing on target", [f"{t}: table missing on target"], meta)


def checksum_parity(
    expected: Fingerprint,
    target_conn: psycopg.Connection | None,
    target_table: TableName,
    columns: Sequence[ColumnInfo],
    *,
    source_conn: psycopg.Connection | None = None,
    source_table: TableName | None = None,
    source_at_snapshot: bool = True,
    actual: Fingerprint | None = None,
) -> CheckOutcome:
    """The target's content fingerprint over the source's `columns` equals the one recorded at the snapshot.

    With `actual` the target is not read again. On a mismatch with `source_conn` (and `target_conn`)
    given, the first differing primary-key range is located by bisection against `source_conn`; pass
    `source_at_snapshot=False` when it reads the source as it is now, and the outcome says so.
    """
    t = target_table
    source_table = source_table or target_table
    meta: dict[str, JSONValue] = {
        "table": t.qualified,
        "columns": [c.name for c in columns],
        "source_rows": expected.rows,
        "source_checksum": expected.checksum,
        "fingerprint_algorithm": expected.algorithm,
    }
    if actual is None:
        assert target_conn is not None, (
            "checksum_parity needs a target connection or the target's fingerprint"
        )
        if relkind(target_conn, t) is None:
            return CheckOutcome(
                False, f"{t}: table missing on target", [f"{t}: table missing on target"], meta
            )
        try:
            with savepoint(target_conn):
                actual = table_fingerprint(target_conn, t, columns, algorithm=expected.algorithm)
        except psycopg.Error as exc:
            failure = f"{t}: cannot fingerprint the target over the source's columns: {error_text(exc)}"
            return CheckOutcome(False, failure, [failure], meta)
    meta.update(target_rows=actual.rows, target_checksum=actual.checksum)
    if actual == expected:
        return CheckOutcome(
            True, f"{t}: content identical to the source at the snapshot ({expected})", [], meta
        )

    failures = [f"{t}: content differs from the source at the snapshot (source {expected}, target {actual})"]
    warnings: list[str] = []
    summary = f"{t}: content differs from the source at the snapshot"
    if source_conn is None or target_conn is None:
        warnings.append(f"{t}: no source connection given, so the differing key range was not located")
    else:
        meta["compared_against"] = "the source at the snapshot" if source_at_snapshot else "the source now"
        key = key_columns(source_conn, source_table)
        if not key:
            failures.append(f"{t}: has no primary key, so the difference cannot be narrowed to a key range")
            meta["key_range"] = None
        else:
            try:
                with savepoint(source_conn), savepoint(target_conn):
                    found = locate_difference(
                        source_conn, source_table, target_conn, t, columns, key, algorithm=expected.algorithm
                    )
            except psycopg.Error as exc:
                failures.append(f"{t}: could not locate the differing key range: {error_text(exc)}")
            else:
                summary = _describe_bisect(t, found, expected, source_at_snapshot, failures, warnings, meta)
    return CheckOutcome(False, summary, failures, meta, warnings)


def _describe_bisect(
    t: TableName,
    found: BisectResult,
    expected: Fingerprint,
    source_at_snapshot: bool,
    failures: list[str],
    warnings: list[str],
    meta: dict[str, JSONValue],
) -> str:
    """Record where the two sides first differ; returns the one-line summary a person reads first:
    `positions: content differs from the source at the snapshot; first differing key range:
    id >= '1225' AND id < '1241' (changed 1234)`."""
    meta["key_range"] = found.to_json()
    meta["source_read_matches_snapshot"] = found.source_total == expected
    when = "at the snapshot" if source_at_snapshot else "now (the snapshot is gone: later writes show too)"
    if found.source_total != expected:
        warnings.append(
            f"{t}: the source read for bisection ({found.source_total}) is not the snapshot's ({expected}): "
            "it has changed since the copy"
        )
    if not found.found:
        failures.append(
            f"{t}: the target equals the source as read {when}, but not the fingerprint recorded at the "
            "snapshot: the source changed after the snapshot, or the recorded fingerprint is stale"
        )
        return failures[0]
    rng = found.key_range
    # The condition a person pastes into a query, and the differing keys, as top-level metadata.
    meta["range"] = rng.describe()
    meta["differences"] = [{"kind": d.kind, "key": list(d.key)} for d in found.differences]
    failures.append(
        f"{t}: first differing key range {rng.describe()} (source {found.source.rows} rows, target "
        f"{found.target.rows} rows in range; source read {when})"
    )
    if found.differences:
        listed = "; ".join(d.describe(rng.columns) for d in found.differences[:5])
        more = " ..." if len(found.differences) > 5 or found.differences_truncated else ""
        failures.append(f"{t}: in that range: {listed}{more}")
    shown = ", ".join(f"{d.kind} {', '.join(map(str, d.key))}" for d in found.differences[:5])
    more = ", ..." if len(found.differences) > 5 else ""
    return (
        f"{t}: content differs from the source at the snapshot; first differing key range: {rng.describe()}"
        + (f" ({shown}{more})" if shown else "")
    )


def table_parity(
    expected: Fingerprint,
    table: TableName,
    columns: Sequence[ColumnInfo],
    *,
    source_url: DatabaseUrl,
    target_url: DatabaseUrl,
    snapshot_id: str | None,
    actual: Fingerprint | None = None,
) -> dict[str, CheckOutcome]:
    """Both checks for one table, opening connections only where needed.

    `actual` is the target's fingerprint if the caller just took it (the copy did); without it the
    target is fingerprinted now. On a mismatch the source is bisected inside `snapshot_id` while the run
    still holds it, else as it is now (`snapshot_id=None`).
    """
    if actual is not None and actual == expected:
        return {
            COUNT_PARITY: count_parity(expected, None, table, actual=actual),
            CHECKSUM_PARITY: checksum_parity(expected, None, table, columns, actual=actual),
        }
    with connection(target_url, autocommit=True, application_name="dual-db verify") as target_conn:
        if actual is None:
            # One scan: the fingerprint carries the row count (a separate count(*) read it again).
            checksum = checksum_parity(expected, target_conn, table, columns)
            actual_now = _fingerprint_from(checksum, expected.algorithm)
            count = count_parity(expected, None if actual_now else target_conn, table, actual=actual_now)
            if checksum.passed:
                return {COUNT_PARITY: count, CHECKSUM_PARITY: checksum}
        else:
            count = count_parity(expected, target_conn, table, actual=actual)
            actual_now = actual
        if actual_now is None:  # missing table or columns: nothing to bisect
            return {COUNT_PARITY: count, CHECKSUM_PARITY: checksum}
        with snapshot_session(source_url, snapshot_id) as source_conn:
            checksum = checksum_parity(
                expected,
                target_conn,
                table,
                columns,
                source_conn=source_conn,
                source_at_snapshot=snapshot_id is not None,
                actual=actual_now,
            )
    return {COUNT_PARITY: count, CHECKSUM_PARITY: checksum}


def _fingerprint_from(outcome: CheckOutcome, algorithm: str) -> Fingerprint | None:
    rows, checksum = outcome.metadata.get("target_rows"), outcome.metadata.get("target_checksum")
    if rows is None or checksum is None:
        return None
    return Fingerprint(int(rows), str(checksum), algorithm)  # type: ignore[arg-type]


def partitioned_parity(
    table: TableName,
    whole: dict[str, CheckOutcome],
    leaves: dict[TableName, dict[str, CheckOutcome]],
) -> dict[str, CheckOutcome]:
    """A partitioned table's checks: the table as a whole (through the partitioned table on the target)
    and each of its leaf partitions. Passes only when all pass; a failure names the partition."""
    combined: dict[str, CheckOutcome] = {}
    for name, outcome in whole.items():
        per_leaf = {leaf: checks[name] for leaf, checks in sorted(leaves.items())}
        failing = [(leaf, o) for leaf, o in per_leaf.items() if not o.passed]
        meta = dict(outcome.metadata)
        meta["partitions"] = [
            {
                "partition": leaf.qualified,
                "passed": o.passed,
                "source_rows": o.metadata.get("source_rows"),
                "target_rows": o.metadata.get("target_rows"),
            }
            for leaf, o in per_leaf.items()
        ]
        if failing:
            summary = f"{table} partition {failing[0][1].summary}"
            if len(failing) > 1:
                summary += f" (and {plural(len(failing) - 1, 'other partition')})"
        elif not outcome.passed:
            summary = outcome.summary
        else:
            summary = f"{outcome.summary}; each of its {plural(len(per_leaf), 'partition')} too"
        combined[name] = CheckOutcome(
            passed=outcome.passed and not failing,
            summary=summary,
            failures=[*(f for _, o in failing for f in o.failures), *outcome.failures],
            metadata=meta,
            warnings=[*outcome.warnings, *(w for o in per_leaf.values() for w in o.warnings)],
            severity=outcome.severity,
        )
    return combined
