"""A table's secondary indexes, set aside while it is reloaded and rebuilt before the load commits.

A COPY into a table whose indexes are in place inserts every row into every index, one row at a time.
For an HNSW index that is a graph search per row: a 40k x vector(256) table took 254 s to load into its
built index against 1.1 s into a bare table (issue 18, defect 5). Building the index once over the
loaded rows is a bulk build, as on the first load (post-data). So the replacing transaction drops the
indexes it can restore exactly, loads, and creates them again before it commits: a failure still rolls
back to the previous table with its indexes, and a one-table redo ends with every index it had.

Left in place (loaded row by row, as before):
- indexes behind a primary key, unique or exclusion constraint: dropping one means dropping the
  foreign keys of other tables that reference it, then adding and validating them again (their B-tree
  costs a COPY far less than a graph does);
- indexes something else depends on (a foreign key on a unique index), partitions of a partitioned
  index, the table's clustering or replica-identity index, indexes with a per-column statistics target,
  and invalid or unready indexes: pg_get_indexdef alone would not restore them as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dual_db.db.catalog import regclass_literal
from dual_db.db.index_memory import build_memory_bytes, parallel_maintenance_workers, parse_memory
from dual_db.db.names import TableName

# Secondary indexes of one table that its definition and comment restore exactly (see the docstring).
_SECONDARY_INDEXES_SQL = """
SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid), obj_description(i.indexrelid, 'pg_class'),
       am.amname, coalesce(c.reloptions, '{}'),
       (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[0])
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am am ON am.oid = c.relam
WHERE i.indrelid = %s::regclass
  AND c.relkind = 'i'
  AND i.indisvalid AND i.indisready AND NOT i.indisclustered AND NOT i.indisreplident
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indexrelid)
  AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
  AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = i.indexrelid AND coalesce(a.attstattarget, -1) >= 0)
ORDER BY c.relname
"""
VECTOR_METHODS = frozenset({"hnsw", "ivfflat"})


@dataclass(frozen=True)
class SetAsideIndex:
    """An index dropped for a load: what creates it again."""

    table: TableName
    schema: str
    name: str
    definition: str  # pg_get_indexdef: the CREATE INDEX statement, names qualified
    comment: str | None
    method: str
    options: list[str]  # reloptions, 'm=16'
    first_column: str | None  # None for an expression

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def vector(self) -> bool:
        return self.method in VECTOR_METHODS


def drop_secondary_indexes(conn: psycopg.Connection, table: TableName) -> list[SetAsideIndex]:
    """Drop `table`'s secondary indexes that `rebuild_indexes` restores exactly; inside the caller's
    transaction, so a rollback brings them back."""
    rows = conn.execute(_SECONDARY_INDEXES_SQL, (regclass_literal(table),)).fetchall()
    dropped = [SetAsideIndex(table, *row) for row in rows]
    for index in dropped:
        conn.execute(sql.SQL("DROP INDEX {}").format(index.ident))
    return dropped


def rebuild_indexes(
    conn: psycopg.Connection, indexes: Sequence[SetAsideIndex], *, max_index_memory: str = "1GB"
) -> None:
    """Create `indexes` again over the loaded rows, in the caller's transaction: B-trees first, vector
    indexes last with memory sized to their graph and parallel workers, as post-data builds them."""
    for index in sorted(indexes, key=lambda ix: (ix.vector, ix.name)):
        if index.vector:
            options = dict(option.partition("=")[::2] for option in index.options)
            memory = build_memory_bytes(
                conn,
                index.table,
                index.first_column,
                int(options.get("m", 16)),
                parse_memory(max_index_memory),
            )
            # Local to the load's transaction: the session's next table is loaded with its defaults.
            for name, value in (
                ("maintenance_work_mem", f"{memory // 1024}kB"),
                ("max_parallel_maintenance_workers", str(parallel_maintenance_workers())),
            ):
                conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        conn.execute(index.definition)  # type: ignore[arg-type]  # the server's own pg_get_indexdef
        if index.comment is not None:
            conn.execute(sql.SQL("COMMENT ON INDEX {} IS {}").format(index.ident, sql.Literal(index.comment)))
