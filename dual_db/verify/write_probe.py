"""The write probe: can the application still write every table of a target?

The schema split reads function bodies for references across the split, but some it cannot read
(dynamic `EXECUTE`, a PL/pgSQL body the parser does not resolve). So after post-data, each table gets
one real write, with its triggers, rules and foreign keys on: one row is deleted and inserted back in a
single statement, then updated in place, and the transaction is rolled back. A trigger, rule or default
naming a relation, function or type the target lacks fails that write exactly as the application's
first write would ("relation "ai_events" does not exist"), and is named here instead.

Only such missing-object errors are a finding: any other error (a trigger forbidding deletes, a
RESTRICT foreign key with children) is the schema's own rule, which the source enforces alike, and is
reported as inconclusive. An empty table has no row to probe. The rolled-back writes leave no row
behind; sequences a trigger drew from stay advanced (sequences cannot roll back), which is why the
post-data step aligns the sequences with the source after the probe.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import errors, sql

from dual_db.db.catalog import table_columns
from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl

# What a write raises when something it runs names an object the database does not have.
MISSING_OBJECT_ERRORS: tuple[type[psycopg.Error], ...] = (
    errors.UndefinedTable,
    errors.UndefinedFunction,
    errors.UndefinedObject,
    errors.InvalidSchemaName,
)
PROBE_TIMEOUT = "30s"


@dataclass
class WriteProbeReport:
    probed: list[TableName] = field(default_factory=list)
    empty: list[TableName] = field(default_factory=list)
    broken: dict[TableName, str] = field(default_factory=dict)  # table -> the server's error, one line
    inconclusive: dict[TableName, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "tables_probed": len(self.probed),
            "tables_empty": [t.qualified for t in self.empty],
            "broken": {t.qualified: why for t, why in self.broken.items()},
            "inconclusive": {t.qualified: why for t, why in self.inconclusive.items()},
            "seconds": round(self.seconds, 3),
        }


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _statements(conn: psycopg.Connection, table: TableName) -> list[sql.Composed] | None:
    described = [c for c in table_columns(conn, table) if not c.generated]
    if not described:
        return None
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in described)
    one_row = sql.SQL("(SELECT ctid FROM {t} LIMIT 1)").format(t=table.ident)
    statements = [
        sql.SQL(
            "WITH gone AS (DELETE FROM {t} WHERE ctid = {row} RETURNING {cols}) "
            "INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM gone"
        ).format(t=table.ident, row=one_row, cols=cols)
    ]
    # The UPDATE triggers too, on a column an UPDATE may set (not an identity GENERATED ALWAYS).
    updatable = next((c.name for c in described if c.identity != "a"), None)
    if updatable is not None:
        column = sql.Identifier(updatable)
        statements.append(
            sql.SQL("UPDATE {t} SET {c} = {c} WHERE ctid = {row}").format(
                t=table.ident, c=column, row=one_row
            )
        )
    return statements


def write_probe(url: DatabaseUrl, tables: Sequence[TableName]) -> WriteProbeReport:
    """Probe each of `tables` on the target at `url` (module docstring); nothing stays written."""
    report = WriteProbeReport()
    started = time.monotonic()
    with connection(url, autocommit=True, application_name="dual-db write probe") as conn:
        for table in tables:
            statements = _statements(conn, table)
            if statements is None or conn.execute(
                sql.SQL("SELECT NOT EXISTS (SELECT FROM {t})").format(t=table.ident)
            ).fetchone() == (True,):
                report.empty.append(table)
                continue
            report.probed.append(table)
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute(
                        sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(PROBE_TIMEOUT))
                    )
                    for statement in statements:
                        conn.execute(statement)
            except MISSING_OBJECT_ERRORS as exc:
                report.broken[table] = _one_line(exc)
            except psycopg.DatabaseError as exc:
                report.inconclusive[table] = _one_line(exc)
    report.seconds = time.monotonic() - started
    return report


def broken_summary(target: str, report: WriteProbeReport) -> str:
    """One line naming every table the application could not write, and why."""
    named = "; ".join(f"{t.qualified}: {why}" for t, why in report.broken.items())
    return (
        f"the write probe on {target} failed for {len(report.broken)} table(s), as the application's "
        f"first write would: {named}. Something these writes run (a trigger, rule or default) names an "
        "object the target lacks: change it in the source, route what it needs to the same database, "
        "or list it under accept_across_split in the routing plan"
    )
