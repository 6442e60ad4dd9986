"""Catalog reads shared by the routing plan, the copy engine and verification.

Every query here is read-only and works on PostgreSQL 13+ (the copy engine reads the source inside the
exported snapshot, so what it sees is the catalog as of that snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from dual_db.db.names import TableName

# Schemas that are never user data.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

# pgvector's types, by name: a column of any of them is a vector column.
# pgvector's types: a column of any of them (or an array or domain over one) belongs in AI only.
PGVECTOR_TYPES = frozenset({"vector", "halfvec", "sparsevec"})

# Built-in objects have OIDs below FirstNormalObjectId.
FIRST_NORMAL_OID = 16384


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type_sql: str  # format_type(), e.g. "numeric(18,4)", "public.vector(1536)"
    type_name: str  # the base type's name, e.g. "vector", "numeric", "_text" for arrays
    type_schema: str
    not_null: bool
    default: str | None
    generated: bool  # a GENERATED ALWAYS AS (...) STORED column: never copied, the target computes it
    identity: str  # '' | 'a' (always) | 'd' (by default)
    # True when the binary COPY form carries no server-specific OIDs (arrays of and composites
    # built from user-defined types do), so binary COPY is safe between two different servers.
    binary_portable: bool
    vector_type: str | None  # 'vector' | 'halfvec' | 'sparsevec' for pgvector columns
    # The type once domains are resolved (an array keeps its array type, e.g. "_text"): what the
    # fingerprint hashes. `base_builtin` when it is one of PostgreSQL's own types (its OID, its send
    # function and its binary form are the same on every server); `base_kind` is its pg_type.typtype
    # ('b' base, 'e' enum, 'c' composite, 'r' range, 'm' multirange); `send_function` its typsend.
    base_type: str = ""
    base_builtin: bool = False
    base_kind: str = ""
    send_function: str = ""


@dataclass(frozen=True)
class SequenceInfo:
    sequence: TableName
    table: TableName | None  # the owning table, if any
    column: str | None
    last_value: int | None
    is_called: bool


# A partitioned table (relkind 'p') is listed by its root, never by its partitions: it is routed,
# copied and verified as one table. Its size and row estimate are its leaves' (the parent stores nothing).
_TABLES_SQL = """
SELECT n.nspname, c.relname,
       CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(pg_table_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t
                  WHERE t.isleaf)
            ELSE pg_table_size(c.oid) END AS bytes,
       CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(greatest(l.reltuples, 0)), 0) FROM pg_partition_tree(c.oid) t
                  JOIN pg_class l ON l.oid = t.relid WHERE t.isleaf)
            ELSE c.reltuples END::bigint AS estimated_rows,
       c.relkind::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> ALL (%(system)s)
  AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'
  -- tables that belong to an extension are re-created by CREATE EXTENSION, not copied
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""


@dataclass(frozen=True)
class TableInfo:
    table: TableName
    bytes: int
    estimated_rows: int
    kind: str = "r"  # pg_class.relkind: 'r' a table, 'p' a partitioned table, 'f' a foreign table

    @property
    def partitioned(self) -> bool:
        return self.kind == "p"


def list_tables(conn: psycopg.Connection) -> list[TableInfo]:
    """User tables (ordinary or partitioned, not partitions, not extension-owned, not temporary), with
    their on-disk size."""
    rows = conn.execute(_TABLES_SQL, {"system": list(SYSTEM_SCHEMAS)}).fetchall()
    return [TableInfo(TableName(r[0], r[1]), int(r[2]), max(int(r[3]), 0), str(r[4])) for r in rows]


# Every leaf of a partition tree at any depth (a sub-partitioned partition is not a leaf: its own
# partitions are), in name order.
_LEAVES_SQL = """
SELECT n.nspname, c.relname, coalesce(pg_table_size(c.oid), 0), greatest(c.reltuples, 0)::bigint,
       c.relkind::text
FROM pg_partition_tree(%(rel)s::regclass) t
JOIN pg_class c ON c.oid = t.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.isleaf
ORDER BY n.nspname, c.relname
"""


def partition_leaves(conn: psycopg.Connection, table: TableName) -> list[TableInfo]:
    """The partitions of `table` that hold its rows (the leaves of its partition tree, at any depth;
    kind 'f' for a foreign-table partition); an empty list for a partitioned table without partitions
    (and for a plain table)."""
    rows = conn.execute(_LEAVES_SQL, {"rel": regclass_literal(table)}).fetchall()
    return [TableInfo(TableName(r[0], r[1]), int(r[2]), int(r[3]), str(r[4])) for r in rows]


def partitions_of(conn: psycopg.Connection) -> dict[TableName, TableName]:
    """Every partition (at any depth) of a user table, mapped to the root of its partition tree."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, rn.nspname, r.relname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class r ON r.oid = pg_partition_root(c.oid)
        JOIN pg_namespace rn ON rn.oid = r.relnamespace
        WHERE c.relispartition AND c.relkind IN ('r', 'p', 'f')
        """
    ).fetchall()
    return {TableName(r[0], r[1]): TableName(r[2], r[3]) for r in rows}


_COLUMNS_SQL = """
WITH RECURSIVE base AS (
    -- resolve domains to their base type; arrays to their element type
    SELECT a.attnum, a.atttypid AS typid, 0 AS depth
    FROM pg_attribute a
    WHERE a.attrelid = %(rel)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
    SELECT b.attnum,
           CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END,
           b.depth + 1
    FROM base b JOIN pg_type t ON t.oid = b.typid
    WHERE (t.typtype = 'd' OR (t.typelem <> 0 AND t.typcategory = 'A')) AND b.depth < 10
), resolved AS (
    SELECT a.attnum, a.atttypid AS typid, 0 AS depth
    FROM pg_attribute a
    WHERE a.attrelid = %(rel)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
    SELECT r.attnum, t.typbasetype, r.depth + 1
    FROM resolved r JOIN pg_type t ON t.oid = r.typid
    WHERE t.typtype = 'd' AND r.depth < 10
), non_portable AS (
    -- a column is not binary-portable when its array element or composite type is user-defined
    SELECT DISTINCT b.attnum
    FROM base b JOIN pg_type t ON t.oid = b.typid
    WHERE (b.depth > 0 AND t.oid >= %(first_oid)s AND t.typtype IN ('b', 'c', 'e', 'd', 'r', 'm')
           AND EXISTS (SELECT 1 FROM base b2 JOIN pg_type t2 ON t2.oid = b2.typid
                       WHERE b2.attnum = b.attnum AND t2.typcategory = 'A'))
       OR (t.typtype = 'c')
)
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       t.typname,
       tn.nspname,
       a.attnotnull,
       pg_get_expr(ad.adbin, ad.adrelid),
       a.attgenerated <> '',
       a.attidentity::text,
       NOT EXISTS (SELECT 1 FROM non_portable np WHERE np.attnum = a.attnum),
       CASE WHEN bt.typname = ANY (%(vector_types)s)
                 AND EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                             WHERE d.classid = 'pg_type'::regclass AND d.objid = bt.oid
                               AND d.deptype = 'e' AND e.extname = 'vector')
            THEN bt.typname END,
       dt.typname,
       dt.oid < %(first_oid)s,
       dt.typtype::text,
       (SELECT p.proname FROM pg_proc p WHERE p.oid = dt.typsend)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
-- the type with domains (over domains) resolved, as getBaseType does: what the fingerprint hashes
JOIN resolved r ON r.attnum = a.attnum
JOIN pg_type dt ON dt.oid = r.typid AND dt.typtype <> 'd'
JOIN pg_namespace tn ON tn.oid = t.typnamespace
-- the element type for arrays of vectors (vector[]) is still a vector column
JOIN pg_type bt ON bt.oid = CASE WHEN t.typelem <> 0 AND t.typcategory = 'A' THEN t.typelem ELSE t.oid END
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attrelid = %(rel)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def regclass_literal(table: TableName) -> str:
    """The text form `'"schema"."name"'::regclass` accepts, quoting always (tricky names)."""
    return '"' + table.schema.replace('"', '""') + '"."' + table.name.replace('"', '""') + '"'


def table_columns(conn: psycopg.Connection, table: TableName) -> list[ColumnInfo]:
    rows = conn.execute(
        _COLUMNS_SQL,
        {"rel": regclass_literal(table), "first_oid": FIRST_NORMAL_OID, "vector_types": list(PGVECTOR_TYPES)},
    ).fetchall()
    return [
        ColumnInfo(
            name=r[0],
            type_sql=r[1],
            type_name=r[2],
            type_schema=r[3],
            not_null=bool(r[4]),
            default=r[5],
            generated=bool(r[6]),
            identity=r[7] or "",
            binary_portable=bool(r[8]),
            vector_type=r[9],
            base_type=r[10],
            base_builtin=bool(r[11]),
            base_kind=r[12],
            send_function=r[13] or "",  # '' for a type without one (typsend = 0)
        )
        for r in rows
    ]


_PRIMARY_KEY_SQL = """
SELECT a.attname
FROM pg_index i
JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %(rel)s::regclass AND i.indisprimary
ORDER BY k.ord
"""


def primary_key(conn: psycopg.Connection, table: TableName) -> list[str]:
    rows = conn.execute(_PRIMARY_KEY_SQL, {"rel": regclass_literal(table)}).fetchall()
    return [r[0] for r in rows]


_SEQUENCES_SQL = """
SELECT sn.nspname, s.relname, tn.nspname, t.relname, a.attname
FROM pg_class s
JOIN pg_namespace sn ON sn.oid = s.relnamespace
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid
LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE s.relkind = 'S'
  AND sn.nspname <> ALL (%(system)s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass
                  AND e.objid = s.oid AND e.deptype = 'e')
ORDER BY sn.nspname, s.relname
"""


def list_sequences(
    conn: psycopg.Connection, *, with_values: bool = True, owned_by: TableName | None = None
) -> list[SequenceInfo]:
    """Every user sequence, its owning table/column (serial, identity, OWNED BY) and current value.

    Sequence values are not transactional: read inside a snapshot they are still the current value,
    which is at least the value at the snapshot, the bound the target must reach.
    """
    from psycopg import sql

    result = []
    for r in conn.execute(_SEQUENCES_SQL, {"system": list(SYSTEM_SCHEMAS)}).fetchall():
        if owned_by is not None and (r[2], r[3]) != (owned_by.schema, owned_by.name):
            continue  # read only the values asked for: one query per sequence
        sequence = TableName(r[0], r[1])
        last_value: int | None = None
        is_called = False
        if with_values:
            row = conn.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(sequence.ident)
            ).fetchone()
            if row is not None:
                last_value, is_called = int(row[0]), bool(row[1])
        result.append(
            SequenceInfo(
                sequence=sequence,
                table=TableName(r[2], r[3]) if r[2] is not None else None,
                column=r[4],
                last_value=last_value,
                is_called=is_called,
            )
        )
    return result


def installed_extension(conn: psycopg.Connection, name: str) -> tuple[str, str] | None:
    """(version, schema) of an installed extension, or None."""
    row = conn.execute(
        "SELECT e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = %s",
        (name,),
    ).fetchone()
    return (row[0], row[1]) if row else None


def extension_available(conn: psycopg.Connection, name: str) -> str | None:
    """The default version of an extension the server could install, or None."""
    row = conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = %s", (name,)
    ).fetchone()
    return row[0] if row else None


def referenced_by_other_tables(conn: psycopg.Connection, table: TableName) -> list[TableName]:
    """Tables whose foreign keys point at `table` (TRUNCATE refuses to run while they exist)."""
    rows = conn.execute(
        """
        SELECT DISTINCT n.nspname, c.relname
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE k.contype = 'f' AND k.confrelid = %(rel)s::regclass AND k.conrelid <> k.confrelid
        """,
        {"rel": regclass_literal(table)},
    ).fetchall()
    return [TableName(r[0], r[1]) for r in rows]


def tables_with_triggers_or_foreign_keys(
    conn: psycopg.Connection, tables: Sequence[TableName]
) -> list[TableName]:
    """Those of `tables` (all existing) whose load would fire user triggers or foreign-key checks,
    in one query."""
    rows = conn.execute(
        """
        SELECT r.name FROM unnest(%(rels)s::text[]) AS r(name)
        WHERE EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = r.name::regclass)
           OR EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f'
                      AND (conrelid = r.name::regclass OR confrelid = r.name::regclass))
        """,
        {"rels": [regclass_literal(t) for t in tables]},
    ).fetchall()
    found = {str(r[0]) for r in rows}
    return [t for t in tables if regclass_literal(t) in found]


def has_triggers_or_foreign_keys(conn: psycopg.Connection, table: TableName) -> bool:
    """Whether loading into `table` would fire user triggers or foreign-key checks."""
    return bool(tables_with_triggers_or_foreign_keys(conn, [table]))


def server_identity(conn: psycopg.Connection) -> dict[str, str]:
    """Which database this is: name and oid, server version (no superuser-only functions)."""
    row = conn.execute(
        "SELECT current_database(), (SELECT oid::text FROM pg_database WHERE datname = current_database()), "
        "current_setting('server_version')"
    ).fetchone()
    assert row is not None
    return {"database": row[0], "database_oid": row[1], "version": row[2]}
