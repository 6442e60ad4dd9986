"""What one table's definition looks like in the catalog, in a form two servers can be compared on.

Everything is catalog text that PostgreSQL itself prints (`format_type`, `pg_get_expr`,
`pg_get_constraintdef`, `pg_get_indexdef`, `pg_get_triggerdef`), read with the pinned session
settings, so two servers with the same definitions produce the same text, PostgreSQL 16 and 18 alike.
Index definitions have the index name cut out so "same definition, other name" is reported as a rename,
not as one missing and one extra index.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace

import pglast
import psycopg
from pglast.stream import RawStream

from dual_db.db.catalog import regclass_literal
from dual_db.db.names import TableName

_EXISTS_SQL = "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass(%(rel)s)"

_COLUMNS_SQL = """
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       a.attnotnull,
       pg_get_expr(ad.adbin, ad.adrelid),
       a.attidentity::text,
       a.attgenerated::text,
       -- only a collation other than the type's default is part of the column's definition
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = %(rel)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# contype 'n' (PostgreSQL 18 records NOT NULL as constraints) is left out: attnotnull covers it and
# PostgreSQL 16 has no such rows. 't' (constraint triggers) are compared as triggers.
_CONSTRAINTS_SQL = """
SELECT k.conname, k.contype::text, pg_get_constraintdef(k.oid), fn.nspname, fc.relname
FROM pg_constraint k
LEFT JOIN pg_class fc ON fc.oid = k.confrelid AND k.contype = 'f'
LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE k.conrelid = %(rel)s::regclass AND k.contype IN ('p', 'u', 'c', 'f', 'x')
ORDER BY k.conname
"""

_INDEXES_SQL = """
SELECT ic.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = %(rel)s::regclass
ORDER BY ic.relname
"""

_TRIGGERS_SQL = """
SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text
FROM pg_trigger t
WHERE t.tgrelid = %(rel)s::regclass AND NOT t.tgisinternal
ORDER BY t.tgname
"""

_TABLE_SQL = """
SELECT c.relpersistence::text, c.relrowsecurity, c.relforcerowsecurity
FROM pg_class c WHERE c.oid = %(rel)s::regclass
"""

_POLICIES_SQL = """
SELECT p.polname,
       p.polcmd::text || CASE WHEN p.polpermissive THEN ' permissive' ELSE ' restrictive' END
       || ' to ' || array_to_string(ARRAY(
            SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END
            FROM unnest(p.polroles) AS r ORDER BY 1), ',')
       || ' using ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '-')
       || ' check ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-')
FROM pg_policy p
WHERE p.polrelid = %(rel)s::regclass
ORDER BY p.polname
"""

_PERSISTENCE = {"p": "logged", "u": "UNLOGGED", "t": "temporary"}
_TRIGGER_STATE = {"O": "enabled", "D": "DISABLED", "R": "enabled on replica only", "A": "enabled always"}


@dataclass(frozen=True)
class ColumnDef:
    name: str
    type_sql: str
    not_null: bool
    default: str | None
    identity: str
    generated: str
    collation: str | None

    def describe(self) -> str:
        text = self.type_sql
        if self.collation:
            text += f' COLLATE "{self.collation}"'
        if self.not_null:
            text += " NOT NULL"
        if self.identity:
            text += " GENERATED " + ("ALWAYS" if self.identity == "a" else "BY DEFAULT") + " AS IDENTITY"
        elif self.generated:
            text += f" GENERATED ALWAYS AS ({self.default})" + (
                " VIRTUAL" if self.generated == "v" else " STORED"
            )
        elif self.default is not None:
            text += f" DEFAULT {self.default}"
        return text


@dataclass(frozen=True)
class ConstraintDef:
    name: str
    kind: str  # p u c f x
    definition: str
    references: TableName | None  # for foreign keys

    @property
    def kind_text(self) -> str:
        return {
            "p": "primary key",
            "u": "unique constraint",
            "c": "check constraint",
            "f": "foreign key",
            "x": "exclusion constraint",
        }.get(self.kind, "constraint")


@dataclass
class TableSchema:
    table: TableName
    exists: bool
    relkind: str = ""
    columns: list[ColumnDef] = field(default_factory=list)
    constraints: dict[str, ConstraintDef] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)  # name -> definition without the name
    invalid_indexes: set[str] = field(default_factory=set)
    triggers: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (definition, state)
    properties: dict[str, str] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)


def index_definition_without_name(definition: str) -> str:
    """`CREATE INDEX ix ON public.t USING btree (a)` -> `CREATE INDEX ON public.t (a)`: the index's
    parse tree without its name, printed back by pglast (so both sides print the same way)."""
    try:
        (raw,) = pglast.parse_sql(definition)
    except (pglast.parser.ParseError, ValueError):
        return definition
    statement = raw.stmt
    if not isinstance(statement, pglast.ast.IndexStmt):
        return definition
    statement.idxname = None
    return RawStream()(statement)


def describe_table(conn: psycopg.Connection, table: TableName) -> TableSchema:
    rel = {"rel": regclass_literal(table)}
    row = conn.execute(_EXISTS_SQL, rel).fetchone()
    if row is None:
        return TableSchema(table, exists=False)
    schema = TableSchema(table, exists=True, relkind=row[0])
    schema.columns = [
        ColumnDef(r[0], r[1], bool(r[2]), r[3], r[4] or "", r[5] or "", r[6])
        for r in conn.execute(_COLUMNS_SQL, rel).fetchall()
    ]
    for r in conn.execute(_CONSTRAINTS_SQL, rel).fetchall():
        references = TableName(r[3], r[4]) if r[3] is not None else None
        schema.constraints[r[0]] = ConstraintDef(r[0], r[1], r[2], references)
    for name, definition, valid in conn.execute(_INDEXES_SQL, rel).fetchall():
        schema.indexes[name] = index_definition_without_name(definition)
        if not valid:
            schema.invalid_indexes.add(name)
    schema.triggers = {
        r[0]: (r[1], _TRIGGER_STATE.get(r[2], r[2])) for r in conn.execute(_TRIGGERS_SQL, rel).fetchall()
    }
    props = conn.execute(_TABLE_SQL, rel).fetchone()
    assert props is not None
    schema.properties = {
        "persistence": _PERSISTENCE.get(props[0], props[0]),
        "row level security": "enabled" if props[1] else "disabled",
        "forced row level security": "on" if props[2] else "off",
    }
    schema.policies = {r[0]: r[1] for r in conn.execute(_POLICIES_SQL, rel).fetchall()}
    return schema


def _compare_named(table: TableName, what: str, source: dict[str, str], target: dict[str, str]) -> list[str]:
    """Differences between two name -> definition maps; same definition under another name = rename."""
    out: list[str] = []
    only_source = {n: d for n, d in source.items() if n not in target}
    only_target = {n: d for n, d in target.items() if n not in source}
    for name in sorted(set(source) & set(target)):
        if source[name] != target[name]:
            out.append(f"{table}: {what} {name} differs (source {source[name]}, target {target[name]})")
    renamed_targets: set[str] = set()
    for name, definition in sorted(only_source.items()):
        twin = next(
            (n for n, d in sorted(only_target.items()) if d == definition and n not in renamed_targets), None
        )
        if twin is not None:
            renamed_targets.add(twin)
            out.append(f"{table}: {what} named differently (source {name}, target {twin}): {definition}")
        else:
            out.append(f"{table}: {what} {name} missing on target (source {definition}, target none)")
    for name, definition in sorted(only_target.items()):
        if name not in renamed_targets:
            out.append(f"{table}: {what} {name} only on target (source none, target {definition})")
    return out


def compare_tables(
    source: TableSchema,
    target: TableSchema,
    *,
    ignore_foreign_keys_to: frozenset[TableName] | set[TableName],
    left_out: Collection[tuple[str, str]] = (),
) -> list[str]:
    """Each difference as `table: what differs (source X, target Y)`. `left_out`: (kind, name) pairs
    (kind `constraint`, `index`, `trigger` or `policy`) of the source's that the routing plan accepted
    leaving out (`accept_across_split`): not expected on the target."""
    table = source.table
    if left_out:
        gone = set(left_out)
        source = replace(
            source,
            constraints={n: c for n, c in source.constraints.items() if ("constraint", n) not in gone},
            indexes={n: d for n, d in source.indexes.items() if ("index", n) not in gone},
            triggers={n: t for n, t in source.triggers.items() if ("trigger", n) not in gone},
            policies={n: p for n, p in source.policies.items() if ("policy", n) not in gone},
        )
    if not source.exists:
        return [f"{table}: table missing on source"]
    if not target.exists:
        return [f"{table}: table missing on target (source {len(source.columns)} columns, target none)"]
    out: list[str] = []
    if source.relkind != target.relkind:
        out.append(f"{table}: relation kind differs (source {source.relkind}, target {target.relkind})")

    # Columns: by name, then their order (SELECT * and COPY without a column list depend on it).
    src_cols = {c.name: c for c in source.columns}
    tgt_cols = {c.name: c for c in target.columns}
    for c in source.columns:
        t = tgt_cols.get(c.name)
        if t is None:
            out.append(f"{table}: column {c.name} missing on target (source {c.describe()}, target none)")
        elif t != c:
            out.append(f"{table}: column {c.name} differs (source {c.describe()}, target {t.describe()})")
    for c in target.columns:
        if c.name not in src_cols:
            out.append(f"{table}: column {c.name} only on target (source none, target {c.describe()})")
    common_src = [c.name for c in source.columns if c.name in tgt_cols]
    common_tgt = [c.name for c in target.columns if c.name in src_cols]
    if common_src != common_tgt:
        out.append(
            f"{table}: column order differs (source {', '.join(common_src)}, target {', '.join(common_tgt)})"
        )

    def constraint_map(schema: TableSchema, *, filter_fks: bool) -> dict[str, str]:
        return {
            n: f"{c.kind_text} {c.definition}"
            for n, c in schema.constraints.items()
            if not (filter_fks and c.kind == "f" and c.references in ignore_foreign_keys_to)
        }

    out += _compare_named(
        table, "constraint", constraint_map(source, filter_fks=True), constraint_map(target, filter_fks=False)
    )
    out += _compare_named(table, "index", source.indexes, target.indexes)
    for name in sorted(target.invalid_indexes - source.invalid_indexes):
        out.append(f"{table}: index {name} is invalid on target (source valid, target indisvalid = false)")
    out += _compare_named(
        table,
        "trigger",
        {n: f"{d} [{s}]" for n, (d, s) in source.triggers.items()},
        {n: f"{d} [{s}]" for n, (d, s) in target.triggers.items()},
    )
    for key, value in source.properties.items():
        if target.properties.get(key) != value:
            out.append(f"{table}: {key} differs (source {value}, target {target.properties.get(key)})")
    out += _compare_named(table, "policy", source.policies, target.policies)
    return out
