"""Planner statistics for the copied tables: the source's, imported, instead of a new ANALYZE.

PostgreSQL 18 restores statistics with `pg_restore_relation_stats` and `pg_restore_attribute_stats`,
and pg_dump 18 writes those calls (`--statistics-only`) from any source version it dumps; pg_upgrade
keeps statistics that way. Importing costs milliseconds per table, where ANALYZE samples and sorts
30,000 rows per column: about 3 s of CPU for the demo's core tables at 350 MB, on the servers that
are building indexes at the time. And the new databases plan the application's queries with the
statistics the source planned them with.

What the import cannot give is ANALYZEd instead: a table without column statistics on the source
(never analyzed, or emptied), a column added since the source's last ANALYZE, extended statistics
(CREATE STATISTICS: pg_dump does not export their data), every table when the target or pg_dump is
older than 18, and every table when the server refused part of the import.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from dual_db.db.catalog import regclass_literal
from dual_db.db.connect import connection, server_version_num
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.schema.dump import pg_tool_version, run_pg_tool
from dual_db.schema.statements import strip_restrict_commands

# The first release with pg_restore_relation_stats / pg_restore_attribute_stats and
# pg_dump --statistics-only.
STATISTICS_IMPORT_VERSION = 18
_RESTORE_FUNCTIONS = frozenset({"pg_restore_relation_stats", "pg_restore_attribute_stats"})

# Tables of %(tables)s (regclass texts) that lack statistics for a column ANALYZE would cover
# (attstattarget 0 switches a column off), or that have extended statistics objects.
_LACKING_SQL = """
SELECT t.rel
FROM unnest(%(tables)s::text[]) AS t(rel)
JOIN pg_class c ON c.oid = t.rel::regclass
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE EXISTS (
        SELECT 1 FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          AND coalesce(a.attstattarget, -1) <> 0
          AND NOT EXISTS (
              SELECT 1 FROM pg_stats s
              WHERE s.schemaname = n.nspname AND s.tablename = c.relname
                AND s.attname = a.attname AND NOT s.inherited))
   OR EXISTS (SELECT 1 FROM pg_statistic_ext x WHERE x.stxrelid = c.oid)
"""


@dataclass
class StatisticsOutcome:
    """Which tables got the source's statistics and which were ANALYZEd here, and why."""

    imported: list[TableName] = field(default_factory=list)
    analyzed: list[TableName] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "statistics_imported": len(self.imported),
            "statistics_analyzed": [t.qualified for t in self.analyzed],
            "statistics_note": self.reason,
            "statistics_seconds": round(self.seconds, 3),
        }


def dump_statistics(
    url: DatabaseUrl, tables: Sequence[TableName], *, bin_dir: Path, timeout: float | None = 600
) -> str:
    """pg_dump's statistics of `tables` and their indexes on `url` (read-only), or "" when the pg_dump
    in `bin_dir` predates statistics export."""
    if not tables or pg_tool_version(bin_dir) < STATISTICS_IMPORT_VERSION:
        return ""
    # A pg_dump pattern in double quotes matches exactly that name (wildcards and dots are literal
    # inside them, a double quote is written twice): the same text as a quoted regclass literal.
    args = ["--statistics-only", "--format=plain", *(f"--table={regclass_literal(t)}" for t in tables)]
    result, _argv = run_pg_tool(bin_dir, "pg_dump", url, args, timeout=timeout)
    return result.stdout


def import_statistics(conn: psycopg.Connection, script: str) -> int:
    """Run pg_dump's statistics script on `conn`; the number of restore calls the server refused in
    part (each returns false and warns rather than failing)."""
    refused = 0
    cursor = conn.execute(strip_restrict_commands(script))
    while True:
        if cursor.description and cursor.description[0].name in _RESTORE_FUNCTIONS:
            refused += sum(1 for (ok,) in cursor.fetchall() if ok is not True)
        if not cursor.nextset():
            return refused


def tables_lacking_statistics(conn: psycopg.Connection, tables: Sequence[TableName]) -> list[TableName]:
    by_literal = {regclass_literal(t): t for t in tables}
    rows = conn.execute(_LACKING_SQL, {"tables": list(by_literal)}).fetchall()
    return [by_literal[rel] for (rel,) in rows]


def analyze(url: DatabaseUrl, tables: Sequence[TableName], *, workers: int) -> None:
    """ANALYZE `tables`, `workers` sessions at a time."""
    if not tables:
        return

    def run(chunk: Sequence[TableName]) -> None:
        with connection(url, autocommit=True, application_name="dual-db analyze") as conn:
            for table in chunk:
                conn.execute(sql.SQL("ANALYZE {}").format(table.ident))

    n = max(1, min(workers, len(tables)))
    with ThreadPoolExecutor(max_workers=n) as pool:
        for future in [pool.submit(run, tables[i::n]) for i in range(n)]:
            future.result()


def refresh_statistics(
    url: DatabaseUrl, tables: Sequence[TableName], script: str, *, workers: int = 2
) -> StatisticsOutcome:
    """Give `tables` on `url` planner statistics: the source's from `script` (dump_statistics) where
    the server takes them, ANALYZE for the rest."""
    started = time.monotonic()
    outcome = StatisticsOutcome()
    with connection(url, autocommit=True, application_name="dual-db statistics") as conn:
        if not script:
            outcome.reason = "pg_dump older than 18: no statistics to import"
            lacking = list(tables)
        elif server_version_num(conn) < STATISTICS_IMPORT_VERSION * 10000:
            outcome.reason = "target older than PostgreSQL 18: statistics cannot be imported"
            lacking = list(tables)
        else:
            refused = import_statistics(conn, script)
            if refused:
                outcome.reason = f"the server refused {refused} statistics import call(s): all analyzed"
                lacking = list(tables)
            else:
                lacking = tables_lacking_statistics(conn, tables)
                if lacking:
                    outcome.reason = "no usable statistics on the source for the analyzed tables"
    analyze(url, lacking, workers=workers)
    outcome.analyzed = lacking
    analyzed = set(lacking)
    outcome.imported = [t for t in tables if t not in analyzed]
    outcome.seconds = time.monotonic() - started
    return outcome
