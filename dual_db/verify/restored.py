"""restored_matches_snapshot: a database restored from the backup equals the source at the snapshot.

The full backup is read from the copy's exported snapshot, so the source fingerprints recorded with
each table's copy are exactly what the restored tables must hash to, whatever the source holds now.

Sequences are not transactional: pg_dump and the copy each read them when they ran, both at or beyond
the snapshot, not necessarily at the same moment. So a restored sequence behind the value recorded at
the copy is a warning when no restored row uses the values in between (the source handed them out
after the backup read it, to rows the backup does not hold), and a failure when a restored row does
(the next insert would collide).
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql

from dual_db.db.catalog import list_sequences, list_tables, regclass_literal
from dual_db.db.fingerprint import Fingerprint, table_fingerprint
from dual_db.db.names import TableName
from dual_db.verify.outcome import CheckOutcome, JSONValue, capped, plural

RESTORED_MATCHES_SNAPSHOT = "restored_matches_snapshot"

_INCREMENT_SQL = "SELECT s.seqincrement FROM pg_sequence s WHERE s.seqrelid = to_regclass(%(rel)s)"


def _compare_tables(
    conn: psycopg.Connection, expected: Mapping[TableName, Fingerprint]
) -> tuple[list[str], list[JSONValue]]:
    present = {info.table for info in list_tables(conn)}
    failures: list[str] = []
    rows: list[JSONValue] = []
    for table, source in sorted(expected.items()):
        if table not in present:
            failures.append(f"{table}: missing from the restored database (source: {source})")
            rows.append({"table": table.qualified, "equal": False, "source_rows": source.rows})
            continue
        restored = table_fingerprint(conn, table, algorithm=source.algorithm)
        equal = restored == source
        rows.append(
            {
                "table": table.qualified,
                "equal": equal,
                "source_rows": source.rows,
                "restored_rows": restored.rows,
                "source_checksum": source.checksum,
                "restored_checksum": restored.checksum,
            }
        )
        if not equal:
            failures.append(f"{table}: restored {restored}, the source at the snapshot {source}")
    return failures, rows


def _highest_used(conn: psycopg.Connection, table: TableName, column: str, ascending: bool) -> int | None:
    query = sql.SQL("SELECT {}({}) FROM {}").format(
        sql.SQL("max" if ascending else "min"), sql.Identifier(column), table.ident
    )
    row = conn.execute(query).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _compare_sequences(
    conn: psycopg.Connection, recorded: Mapping[TableName, tuple[int, bool]]
) -> tuple[list[str], list[str], list[JSONValue]]:
    owners = {s.sequence: s for s in list_sequences(conn, with_values=False)}
    failures: list[str] = []
    warnings: list[str] = []
    rows: list[JSONValue] = []
    for seq, (last, called) in sorted(recorded.items()):
        inc_row = conn.execute(_INCREMENT_SQL, {"rel": regclass_literal(seq)}).fetchone()
        if inc_row is None:
            failures.append(f"{seq}: sequence missing from the restored database")
            rows.append({"sequence": seq.qualified, "recorded_last_value": last, "restored": None})
            continue
        increment = int(inc_row[0])
        value = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(seq.ident)).fetchone()
        assert value is not None
        restored_next = int(value[0]) + increment if value[1] else int(value[0])
        recorded_next = last + increment if called else last
        ascending = increment > 0
        aligned = restored_next >= recorded_next if ascending else restored_next <= recorded_next
        rows.append(
            {
                "sequence": seq.qualified,
                "recorded_next_value": recorded_next,
                "restored_next_value": restored_next,
                "aligned": aligned,
            }
        )
        if aligned:
            continue
        owner = owners.get(seq)
        used = (
            _highest_used(conn, owner.table, owner.column, ascending)
            if owner is not None and owner.table is not None and owner.column is not None
            else None
        )
        collides = used is not None and (used >= restored_next if ascending else used <= restored_next)
        if collides:
            failures.append(
                f"{seq}: the restored database would hand out {restored_next} next, but a restored row "
                f"already uses {used}"
            )
        else:
            warnings.append(
                f"{seq}: restored at {restored_next} next, the copy recorded {recorded_next}: the source "
                "handed out the values between after the backup read it; no restored row uses them"
            )
    return failures, warnings, rows


def restored_matches_snapshot(
    conn: psycopg.Connection,
    expected: Mapping[TableName, Fingerprint],
    sequences: Mapping[TableName, tuple[int, bool]],
) -> CheckOutcome:
    """Every table in `expected` hashes to its recorded source fingerprint on the restored database
    `conn`, and no sequence in `sequences` would hand out a value a restored row already uses."""
    table_failures, tables = _compare_tables(conn, expected)
    sequence_failures, warnings, checked = _compare_sequences(conn, sequences)
    unrecorded = sorted({info.table for info in list_tables(conn)} - set(expected))
    if unrecorded:
        warnings.append(
            f"{plural(len(unrecorded), 'table')} restored with no recorded fingerprint (not routed by the "
            f"plan): {', '.join(str(t) for t in unrecorded[:10])}"
        )
    metadata: dict[str, JSONValue] = {"tables": tables, "sequences": checked}
    equal = sum(1 for t in tables if isinstance(t, dict) and t.get("equal"))
    failures = table_failures + sequence_failures
    if not failures:
        return CheckOutcome(
            True,
            f"{equal}/{len(tables)} tables identical to the source at the snapshot, "
            f"{plural(len(checked), 'sequence')} checked",
            [],
            metadata,
            warnings,
        )
    differing = [
        str(TableName.parse(str(t["table"]))) for t in tables if isinstance(t, dict) and not t["equal"]
    ]
    summary = (
        f"{len(differing)}/{len(tables)} table(s) differ from the source at the snapshot: "
        f"{', '.join(differing[:10])}{' and more' if len(differing) > 10 else ''}"
        if differing
        else f"{plural(len(sequence_failures), 'sequence')} would collide with restored rows: "
        f"{sequence_failures[0]}"
    )
    return CheckOutcome(False, summary, capped(failures), metadata, warnings)
