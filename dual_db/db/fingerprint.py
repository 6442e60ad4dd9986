"""Order-independent content fingerprints, computed inside each server.

A table's fingerprint is its row count and the sum of a 64-bit hash of every row's text form. Sums do
not depend on row order, and, unlike XOR, two identical rows do not cancel out. The text form of every
value is pinned by the session settings in `dual_db.db.connect.PINNED_SETTINGS`, so the same content
hashes the same on any server and version. pgvector columns are hashed from their binary send form
(md5 of `vector_send(col)`): exact, and an order of magnitude cheaper than printing 1536 floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dual_db.db.catalog import ColumnInfo, installed_extension, table_columns
from dual_db.db.names import TableName

_SEND_FUNCTIONS = {"vector": "vector_send", "halfvec": "halfvec_send", "sparsevec": "sparsevec_send"}


@dataclass(frozen=True)
class Fingerprint:
    rows: int
    checksum: str  # the sum of row hashes, as decimal text

    def __str__(self) -> str:
        return f"{self.rows} rows, checksum {self.checksum}"


def column_hash_input(column: ColumnInfo, vector_schema: str | None) -> sql.Composable:
    """The expression whose text form stands for `column` in the row hash."""
    ident = sql.Identifier(column.name)
    send = _SEND_FUNCTIONS.get(column.vector_type or "")
    if send is not None and not column.type_name.startswith("_") and vector_schema is not None:
        return sql.SQL("md5({}({}))").format(sql.Identifier(vector_schema, send), ident)
    return ident


def row_hash_expression(columns: Sequence[ColumnInfo], *, vector_schema: str | None) -> sql.Composed:
    """The 64-bit hash of one row, as summed by `fingerprint_query`.

    Shared with the key-range bisection (`dual_db.verify.bisect`), whose per-range sums must add up to
    exactly the table fingerprint.
    """
    return sql.SQL("hashtextextended(ROW({})::text, 0)").format(
        sql.SQL(", ").join(column_hash_input(c, vector_schema) for c in columns)
    )


def fingerprint_query(
    table: TableName,
    columns: Sequence[ColumnInfo],
    *,
    vector_schema: str | None,
    where: sql.Composable | None = None,
) -> sql.Composed:
    """`SELECT count(*), sum(hash(row))` for `table`; `where` narrows it to a key range."""
    query = sql.SQL("SELECT count(*), coalesce(sum({hash}), 0)::text FROM {table}").format(
        hash=row_hash_expression(columns, vector_schema=vector_schema), table=table.ident
    )
    if where is not None:
        query = sql.SQL("{} WHERE {}").format(query, where)
    return query


def vector_extension_schema(conn: psycopg.Connection) -> str | None:
    installed = installed_extension(conn, "vector")
    return installed[1] if installed else None


def table_fingerprint(
    conn: psycopg.Connection,
    table: TableName,
    columns: Sequence[ColumnInfo] | None = None,
    *,
    where: sql.Composable | None = None,
    vector_schema: str | None = None,
) -> Fingerprint:
    """Fingerprint `table` over `columns` (default: all its columns, as this server sees them).

    Pass the same `columns` (taken from the source) when fingerprinting both sides, so both hash the
    same column list in the same order.
    """
    if columns is None:
        columns = table_columns(conn, table)
    if vector_schema is None and any(c.vector_type for c in columns):
        vector_schema = vector_extension_schema(conn)
    row = conn.execute(fingerprint_query(table, columns, vector_schema=vector_schema, where=where)).fetchone()
    assert row is not None
    return Fingerprint(rows=int(row[0]), checksum=str(row[1]))
