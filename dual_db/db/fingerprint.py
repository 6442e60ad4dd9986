"""Order-independent content fingerprints, computed inside each server.

A table's fingerprint is its row count and the sum of a 64-bit hash of every row. Sums do not depend
on row order, and, unlike XOR, two identical rows do not cancel out.

The row hash (algorithm `typed-v2`) hashes every column in a form that is exact and the same on any
server and version, without printing values as text:

- types whose own 64-bit hash is exact (int2, int4, oid, date, bool, uuid, bytea, "char") as they
  are; text-like types (text, varchar, char(n), name) under `COLLATE "C"`, so their hash is of the
  bytes whatever the column's collation;
- every other built-in type as its binary send form (`int8send`, `timestamptz_send`, `numeric_send`,
  `jsonb_send`, `interval_send`, `array_send`, ...), hashed as bytea. Built-in send forms hold no
  server-specific OIDs (an array's element type is built-in too), and they are exact where the types'
  own hashes are not: int8 and timestamps hash through a 32-bit fold, numeric and interval hash by
  equality (1.0 = 1.00, '1 day' = '24 hours'), jsonb hashes its numbers by value (10 = 10.0);
- pgvector columns as their send form (`vector_send`): exact, no text;
- enums as their label (their OIDs differ between servers), and anything else that is not built-in
  (composites, arrays of user types) as its text form, pinned by `dual_db.db.connect.PINNED_SETTINGS`.

`hash_record_extended(ROW(...), 0)` hashes each column with its type's 64-bit extended hash and combines
them by position (`31 * h + h_i`, a NULL counts 0): a changed value, a NULL for a value and two values
swapped between columns all change it. That combination is linear in the column hashes, so values
swapped between two *rows* of one column would cancel out in the sum; `hashint4extended(0, h)` (a full
64-bit mix of its seed) makes the row hash non-linear again before it is summed.

The previous algorithm, `text-v1` (the hash of the row's text form), stays available: fingerprints
recorded by older runs name no algorithm, and are re-checked with it (`Fingerprint.algorithm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dual_db.db.catalog import ColumnInfo, installed_extension, table_columns
from dual_db.db.names import TableName

# The hash of each row's text form (`hashtextextended(ROW(...)::text, 0)`): what runs before this one
# recorded, under no name.
TEXT_V1 = "text-v1"
# Per-column exact binary forms combined by hash_record_extended (the module docstring).
TYPED_V2 = "typed-v2"
CURRENT_ALGORITHM = TYPED_V2
ALGORITHMS = (TEXT_V1, TYPED_V2)

_SEND_FUNCTIONS = {"vector": "vector_send", "halfvec": "halfvec_send", "sparsevec": "sparsevec_send"}

# Built-in types whose own extended hash is exact over the value's whole binary form, and is the same
# function (or the same result) on PostgreSQL 14 to 18.
_HASHED_AS_THEY_ARE = frozenset({"int2", "int4", "oid", "date", "bool", "uuid", "bytea", "char"})
# Built-in text-like types: hashed as bytes under COLLATE "C" (bpchar ignores trailing blanks, as its
# equality does: char(n) pads every value to n anyway).
_TEXT_LIKE = frozenset({"text", "varchar", "bpchar", "name"})
_FLOATS = frozenset({"float4", "float8"})


@dataclass(frozen=True)
class Fingerprint:
    rows: int
    checksum: str  # the sum of row hashes, as decimal text
    algorithm: str = CURRENT_ALGORITHM  # the row hash it was computed with: only equal ones compare

    def __str__(self) -> str:
        return f"{self.rows} rows, checksum {self.checksum}"


def column_hash_input(column: ColumnInfo, vector_schema: str | None) -> sql.Composable:
    """`text-v1`: the expression whose text form stands for `column` in the row's text."""
    ident = sql.Identifier(column.name)
    send = _SEND_FUNCTIONS.get(column.vector_type or "")
    if send is not None and not column.type_name.startswith("_") and vector_schema is not None:
        return sql.SQL("md5({}({}))").format(sql.Identifier(vector_schema, send), ident)
    return ident


def _collate_c(expr: sql.Composable) -> sql.Composable:
    return sql.SQL("{} COLLATE {}").format(expr, sql.Identifier("C"))


def _as_text(ident: sql.Composable) -> sql.Composable:
    return _collate_c(sql.SQL("({})::text").format(ident))


def column_hash_element(
    column: ColumnInfo, vector_schema: str | None, *, numeric: str = "send", jsonb: str = "send"
) -> sql.Composable:
    """`typed-v2`: the value standing for `column` in the hashed ROW (see the module docstring).

    `numeric` and `jsonb` pick other forms ("hash": the type's own equality-based hash; "text"), for
    measuring them (bench/fingerprint_algorithms.py); the fingerprint uses the defaults.
    """
    ident = sql.Identifier(column.name)
    send = _SEND_FUNCTIONS.get(column.vector_type or "")
    if send is not None and not column.type_name.startswith("_") and vector_schema is not None:
        return sql.SQL("{}({})").format(sql.Identifier(vector_schema, send), ident)
    if column.base_kind == "e":
        return _as_text(ident)
    if not column.base_builtin or column.base_kind == "c" or not column.send_function:
        return _as_text(ident)
    base = column.base_type
    # A domain's value, relabelled as its base type (a no-op cast), so the base type's hash applies.
    value: sql.Composable = ident
    if column.type_name != base:
        value = sql.SQL("{}::{}").format(ident, sql.Identifier("pg_catalog", base))
    if base in _HASHED_AS_THEY_ARE:
        return value
    if base in _TEXT_LIKE:
        return _collate_c(value)
    if base == "numeric" and numeric != "send":
        return value if numeric == "hash" else _as_text(ident)
    if base == "jsonb" and jsonb != "send":
        return value if jsonb == "hash" else _as_text(ident)
    if base in _FLOATS:
        # The exact bits (-0 is not 0), except that every NaN is one NaN: a text-format copy writes
        # back the canonical NaN whatever bits the source held.
        value = sql.SQL("CASE WHEN {v} = {nan} THEN {nan} ELSE {v} END").format(
            v=value, nan=sql.SQL("{}::{}").format(sql.Literal("NaN"), sql.Identifier("pg_catalog", base))
        )
    return sql.SQL("{}({})").format(sql.Identifier("pg_catalog", column.send_function), value)


def row_hash_expression(
    columns: Sequence[ColumnInfo],
    *,
    vector_schema: str | None,
    algorithm: str = CURRENT_ALGORITHM,
    **element_options: str,
) -> sql.Composed:
    """The 64-bit hash of one row, as summed by `fingerprint_query`.

    Shared with the key-range bisection (`dual_db.verify.bisect`), whose per-range sums must add up to
    exactly the table fingerprint.
    """
    if algorithm == TEXT_V1:
        return sql.SQL("hashtextextended(ROW({})::text, 0)").format(
            sql.SQL(", ").join(column_hash_input(c, vector_schema) for c in columns)
        )
    if algorithm != TYPED_V2:
        raise ValueError(f"unknown fingerprint algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
    return sql.SQL("hashint4extended(0, hash_record_extended(ROW({}), 0))").format(
        sql.SQL(", ").join(column_hash_element(c, vector_schema, **element_options) for c in columns)
    )


def fingerprint_query(
    table: TableName,
    columns: Sequence[ColumnInfo],
    *,
    vector_schema: str | None,
    where: sql.Composable | None = None,
    algorithm: str = CURRENT_ALGORITHM,
) -> sql.Composed:
    """`SELECT count(*), sum(hash(row))` for `table`; `where` narrows it to a key range."""
    query = sql.SQL("SELECT count(*), coalesce(sum({hash}), 0)::text FROM {table}").format(
        hash=row_hash_expression(columns, vector_schema=vector_schema, algorithm=algorithm),
        table=table.ident,
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
    algorithm: str = CURRENT_ALGORITHM,
) -> Fingerprint:
    """Fingerprint `table` over `columns` (default: all its columns, as this server sees them).

    Pass the same `columns` (taken from the source) when fingerprinting both sides, so both hash the
    same column list in the same order. To compare with a recorded fingerprint, pass its `algorithm`.
    """
    if columns is None:
        columns = table_columns(conn, table)
    if vector_schema is None and any(c.vector_type for c in columns):
        vector_schema = vector_extension_schema(conn)
    row = conn.execute(
        fingerprint_query(table, columns, vector_schema=vector_schema, where=where, algorithm=algorithm)
    ).fetchone()
    assert row is not None
    return Fingerprint(rows=int(row[0]), checksum=str(row[1]), algorithm=algorithm)
