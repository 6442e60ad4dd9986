"""What one vector index build runs with: memory sized to its graph, and parallel maintenance workers.

An HNSW graph that does not fit in `maintenance_work_mem` builds several times slower. Post-data
(first load) and the copy engine (a re-run's rebuild) size every vector index build the same way.
"""

from __future__ import annotations

import os

import psycopg
from psycopg import sql

from dual_db.db.names import TableName

# The least memory a vector index build is given.
MIN_BUILD_BYTES = 64 * 1024 * 1024


def graph_memory_bytes(conn: psycopg.Connection, table: TableName, column: str, m: int) -> int:
    """What an HNSW graph over `column` needs in memory: the vectors plus 2·m neighbours per element
    on layer 0 (and a little for the upper layers), with headroom."""
    row = conn.execute(
        sql.SQL("SELECT count({col}), coalesce(sum(pg_column_size({col})), 0) FROM {tbl}").format(
            col=sql.Identifier(column), tbl=table.ident
        )
    ).fetchone()
    rows, vector_bytes = (int(row[0]), int(row[1])) if row else (0, 0)
    neighbour_bytes = rows * (2 * m + m) * 10
    return int((vector_bytes + neighbour_bytes + rows * 64) * 1.3)


def build_memory_bytes(
    conn: psycopg.Connection, table: TableName | None, column: str | None, m: int, max_bytes: int
) -> int:
    """`maintenance_work_mem` for a vector index over `table`.`column`: its graph's size, within
    MIN_BUILD_BYTES and `max_bytes`; `max_bytes` when the column is not known (an expression)."""
    if table is None or column is None:
        return max_bytes
    return max(MIN_BUILD_BYTES, min(graph_memory_bytes(conn, table, column, m), max_bytes))


def parse_memory(text: str) -> int:
    """Bytes of a PostgreSQL-style memory size: '1GB', '512MB', '65536kB', '1048576'."""
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
    value = text.strip().lower()
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(float(value[: -len(unit)].strip()) * factor)
    return int(value)


def parallel_maintenance_workers() -> int:
    """Parallel maintenance workers for one vector index build (the rest of the machine's cores)."""
    return max(1, min(7, (os.cpu_count() or 2) - 1))
