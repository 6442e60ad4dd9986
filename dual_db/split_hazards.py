"""What the routing plan must decide before anything is written: things a table copy cannot carry.

- **A foreign key across the split.** Core and AI are two databases: no foreign key can point from one
  into the other, so the schema split removes it. Removed silently, its orphans would be counted by
  nobody. A key that crosses the split in either direction must be declared under the plan's
  `soft_references`; `foreign_keys_valid` (verify) and the soak week's `soft_reference_orphans` read
  that list, so a declared key is named, counted and watched. An undeclared one is refused by name.
  (Not converted automatically: the plan is what the checks and the soak week are built from, and
  giving up an enforced key is the application's decision, made once in the plan, not per run.)
- **Large objects.** A column of type `oid`, or a domain over it such as the lo extension's `lo`, or an
  array of either, holds ids of large objects (`pg_largeobject`). A table COPY carries the ids, not the
  objects, so core or AI would get references to nothing while the row checksums agree. The rule is
  read from the catalog only, with no scan of the tables: such a column in a routed table, when the
  source has any large object. (An `oid` column holding other ids in a database that also has large
  objects is refused too; the message says how to proceed.)

Read-only, plain Python (no Dagster): `split_hazards` lists the problems, `check_split_hazards` raises
the guards' GuardError.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.preflight import GuardError
from dual_db.routing import ForeignKey, RoutingPlan, declares, sides_of, source_foreign_keys

# Columns whose type is `oid` once domains and arrays are looked through (depth-bounded: a domain over
# a domain over an array...). `%(schemas)s`/`%(names)s` are the routed tables, pairwise.
_OID_COLUMNS_SQL = """
WITH RECURSIVE cols AS (
    SELECT n.nspname, c.relname, a.attnum, a.attname, a.atttypid
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN unnest(%(schemas)s::text[], %(names)s::text[]) AS r(nspname, relname)
      ON r.nspname = n.nspname AND r.relname = c.relname
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
), resolved AS (
    SELECT nspname, relname, attnum, atttypid AS typid, 0 AS depth FROM cols
    UNION ALL
    SELECT r.nspname, r.relname, r.attnum,
           CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END, r.depth + 1
    FROM resolved r JOIN pg_type t ON t.oid = r.typid
    WHERE r.depth < 8 AND (t.typtype = 'd' OR (t.typcategory = 'A' AND t.typelem <> 0))
)
SELECT DISTINCT c.nspname, c.relname, c.attnum, c.attname
FROM cols c
JOIN resolved r ON r.nspname = c.nspname AND r.relname = c.relname AND r.attnum = c.attnum
WHERE r.typid = 'oid'::regtype
ORDER BY c.nspname, c.relname, c.attnum
"""

_LARGE_OBJECTS_SQL = "SELECT count(*) FROM pg_largeobject_metadata"


def crossing_foreign_keys(conn: psycopg.Connection, plan: RoutingPlan) -> list[tuple[ForeignKey, str]]:
    """Every foreign key between a core table and an AI table, with the side it starts on."""
    keys = source_foreign_keys(conn)
    side = {t: "core" for t in plan.core} | {t: "ai" for t in plan.ai}
    side = sides_of(conn, side, [t for fk in keys for t in (fk.table, fk.ref_table)])
    return [
        (fk, side[fk.table])
        for fk in keys
        if fk.table in side and fk.ref_table in side and side[fk.table] != side[fk.ref_table]
    ]


def undeclared_foreign_keys(conn: psycopg.Connection, plan: RoutingPlan) -> list[str]:
    problems = []
    for fk, start in crossing_foreign_keys(conn, plan):
        if declares(plan, fk):
            continue
        into = "AI" if start == "core" else "core"
        entry = (
            f"{{from: {fk.table}, columns: [{', '.join(fk.columns)}], to: {fk.ref_table}, "
            f"to_columns: [{', '.join(fk.ref_columns)}]}}"
        )
        problems.append(
            f"foreign key {fk.name} {fk.describe()} points from {start} into {into}, where no foreign key "
            f"can follow it, and the plan does not declare it: add `- {entry}` under soft_references in "
            "the routing plan (verify and the soak week then count its orphans), or route both tables "
            "to the same database"
        )
    return problems


def large_object_columns(conn: psycopg.Connection, tables: Sequence[TableName]) -> dict[TableName, list[str]]:
    """The columns of `tables` that can hold large-object ids (oid, lo, arrays of them)."""
    found: dict[TableName, list[str]] = {}
    params = {"schemas": [t.schema for t in tables], "names": [t.name for t in tables]}
    for schema, name, _, column in conn.execute(_OID_COLUMNS_SQL, params):
        found.setdefault(TableName(schema, name), []).append(str(column))
    return found


def large_object_problems(conn: psycopg.Connection, plan: RoutingPlan) -> list[str]:
    row = conn.execute(_LARGE_OBJECTS_SQL).fetchone()
    count = int(row[0]) if row else 0
    if not count:
        return []  # nothing a copy could lose
    columns = large_object_columns(conn, [*plan.core, *plan.ai])
    if not columns:
        return []
    named = ", ".join(f"{table}({', '.join(cols)})" for table, cols in columns.items())
    tables = ", ".join(str(t) for t in columns)
    return [
        f"{named} hold large-object ids and the source has {count} large object"
        f"{'' if count == 1 else 's'}, which no table copy carries: core and AI would get the ids without "
        "the objects. Move the content into a bytea column on the source (lo_get(column) reads it), or "
        f"list {tables} under exclude in the routing plan"
    ]


def split_hazards(conn: psycopg.Connection, plan: RoutingPlan) -> list[str]:
    """What the plan leaves undecided on this source, each naming the table, column or key."""
    return [*large_object_problems(conn, plan), *undeclared_foreign_keys(conn, plan)]


def check_split_hazards(source_url: DatabaseUrl, plan: RoutingPlan) -> None:
    """Raise GuardError (nothing written) when the plan leaves any of it undecided."""
    with connection(source_url, read_only=True, application_name="dual-db preflight plan") as conn:
        problems = split_hazards(conn, plan)
    if problems:
        raise GuardError(
            f"the routing plan leaves {len(problems)} thing(s) that cannot be copied as they are: "
            + "; ".join(problems)
        )
