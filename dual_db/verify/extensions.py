"""core_extension_rules and ai_extension_rules: pgvector only in AI, every vector index as the source's.

The rules of `dual_db.verify` (its package docstring) hold here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from dual_db.db.catalog import (
    PGVECTOR_TYPES,
    SYSTEM_SCHEMAS,
    installed_extension,
    regclass_literal,
    table_columns,
)
from dual_db.db.names import TableName
from dual_db.verify.common import relkind
from dual_db.verify.outcome import CheckOutcome, JSONValue, capped, plural

_PGVECTOR_COLUMNS_SQL = """
WITH RECURSIVE resolved AS (
    -- follow domains to their base type and arrays to their element type
    SELECT a.attrelid, a.attnum, a.atttypid AS typid, 0 AS depth
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE a.attnum > 0 AND NOT a.attisdropped
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
      AND n.nspname <> ALL (%(system)s)
  UNION ALL
    SELECT r.attrelid, r.attnum,
           CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END, r.depth + 1
    FROM resolved r JOIN pg_type t ON t.oid = r.typid
    WHERE (t.typtype = 'd' OR (t.typelem <> 0 AND t.typcategory = 'A')) AND r.depth < 10
)
SELECT DISTINCT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM resolved r
JOIN pg_type t ON t.oid = r.typid
JOIN pg_attribute a ON a.attrelid = r.attrelid AND a.attnum = r.attnum
JOIN pg_class c ON c.oid = r.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.typname = ANY (%(types)s)
ORDER BY 1, 2, 3
"""

_PGVECTOR_INDEXES_SQL = """
SELECT n.nspname, ic.relname, tc.relname, am.amname
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_am am ON am.oid = ic.relam
WHERE am.amname = ANY (%(methods)s)
ORDER BY 1, 2
"""

_PGVECTOR_ACCESS_METHODS = ("hnsw", "ivfflat")


def core_extension_rules(core_conn: psycopg.Connection) -> CheckOutcome:
    """Core has no `vector` extension, no column of a pgvector type (any schema, arrays and domains
    too) and no hnsw/ivfflat index."""
    failures: list[str] = []
    ext = installed_extension(core_conn, "vector")
    if ext is not None:
        failures.append(
            f"core: extension vector {ext[0]} is installed (schema {ext[1]}); core must not have it"
        )
    columns = core_conn.execute(
        _PGVECTOR_COLUMNS_SQL, {"system": list(SYSTEM_SCHEMAS), "types": list(PGVECTOR_TYPES)}
    ).fetchall()
    for schema, rel, col, type_sql in columns:
        failures.append(f"{TableName(schema, rel)}: column {col} has pgvector type {type_sql}")
    indexes = core_conn.execute(_PGVECTOR_INDEXES_SQL, {"methods": list(_PGVECTOR_ACCESS_METHODS)}).fetchall()
    for schema, index, rel, am in indexes:
        failures.append(f"{TableName(schema, rel)}: index {index} uses access method {am}")
    meta: dict[str, JSONValue] = {
        "vector_extension": ext[0] if ext else None,
        "vector_columns": [f"{TableName(s, r)}.{c}" for s, r, c, _ in columns],
        "vector_indexes": [f"{TableName(s, r)}: {i} ({am})" for s, i, r, am in indexes],
    }
    if not failures:
        return CheckOutcome(True, "core: no pgvector extension, vector columns or vector indexes", [], meta)
    summary = f"core: {plural(len(failures), 'pgvector rule')} broken: {failures[0]}"
    return CheckOutcome(False, summary, capped(failures), meta)


# One row per index key column of each hnsw/ivfflat index on a table, with its operator class.
_VECTOR_INDEX_COLUMNS_SQL = """
SELECT ic.relname, am.amname, k.ord::int, pg_get_indexdef(i.indexrelid, k.ord::int, true),
       opc.opcname, coalesce(ic.reloptions, '{}'), pg_get_expr(i.indpred, i.indrelid), i.indisvalid
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
JOIN LATERAL unnest(i.indclass) WITH ORDINALITY AS k(opclass, ord) ON true
JOIN pg_opclass opc ON opc.oid = k.opclass
WHERE i.indrelid = %(rel)s::regclass AND am.amname = ANY (%(methods)s)
ORDER BY ic.relname, k.ord
"""

# pgvector's defaults: `WITH (m = 16)` and no WITH clause build the same index.
_INDEX_OPTION_DEFAULTS = {"hnsw": {"m": "16", "ef_construction": "64"}, "ivfflat": {"lists": "100"}}


@dataclass(frozen=True)
class _VectorIndex:
    name: str
    method: str
    keys: tuple[tuple[str, str], ...]  # (column or expression, operator class)
    options: tuple[tuple[str, str], ...]
    predicate: str | None
    valid: bool

    @property
    def signature(self) -> tuple[object, ...]:
        return (self.method, self.keys, self.options, self.predicate)

    def describe(self) -> str:
        keys = ", ".join(f"{k} {op}" for k, op in self.keys)
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        text = f"USING {self.method} ({keys}) WITH ({opts})"
        return text + (f" WHERE {self.predicate}" if self.predicate else "")

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "name": self.name,
            "access_method": self.method,
            "columns": [k for k, _ in self.keys],
            "opclasses": [op for _, op in self.keys],
            "options": dict(self.options),
            "predicate": self.predicate,
            "valid": self.valid,
        }


def _vector_indexes(conn: psycopg.Connection, table: TableName) -> list[_VectorIndex]:
    rows = conn.execute(
        _VECTOR_INDEX_COLUMNS_SQL,
        {"rel": regclass_literal(table), "methods": list(_PGVECTOR_ACCESS_METHODS)},
    ).fetchall()
    grouped: dict[str, list[tuple[object, ...]]] = {}
    for r in rows:
        grouped.setdefault(r[0], []).append(r)
    result = []
    for name, parts in grouped.items():
        method = str(parts[0][1])
        options = dict(_INDEX_OPTION_DEFAULTS.get(method, {}))
        for option in parts[0][5]:  # type: ignore[attr-defined]
            key, _, value = str(option).partition("=")
            options[key] = value
        result.append(
            _VectorIndex(
                name=name,
                method=method,
                keys=tuple((str(p[3]), str(p[4])) for p in parts),
                options=tuple(sorted(options.items())),
                predicate=parts[0][6],  # type: ignore[arg-type]
                valid=bool(parts[0][7]),
            )
        )
    return result


def ai_extension_rules(
    source_conn: psycopg.Connection,
    ai_conn: psycopg.Connection,
    ai_tables: Sequence[TableName],
) -> CheckOutcome:
    """`vector` is installed on AI; every hnsw/ivfflat index of the AI tables on the source exists on AI
    with the same access method, operator classes and options (m, ef_construction, lists; pgvector's
    defaults filled in) and is valid.

    A vector column the source left unindexed needs no index on AI: the copy is to be the source's,
    and some columns can carry none (a `halfvec(16)[]` array, a `sparsevec` past hnsw's limits). Such
    columns are listed in the metadata (`unindexed_vector_columns`), not failed."""
    failures: list[str] = []
    ext = installed_extension(ai_conn, "vector")
    meta: dict[str, JSONValue] = {"vector_version": ext[0] if ext else None}
    if ext is None:
        failures.append("ai: extension vector is not installed")
    compared: list[JSONValue] = []
    unindexed: list[str] = []
    for table in ai_tables:
        if relkind(source_conn, table) is None:
            failures.append(f"{table}: not on the source")
            continue
        vector_columns = [c.name for c in table_columns(source_conn, table) if c.vector_type]
        source_indexes = _vector_indexes(source_conn, table)
        if relkind(ai_conn, table) is None:
            failures.append(f"{table}: table missing on AI")
            continue
        ai_indexes = _vector_indexes(ai_conn, table)
        ai_by_name = {ix.name: ix for ix in ai_indexes}
        used: set[str] = set()
        for src in source_indexes:
            # Prefer the index of the same name; any index with the same definition will do.
            candidates = [ai_by_name[src.name]] if src.name in ai_by_name else []
            candidates += [ix for ix in ai_indexes if ix.name != src.name]
            match = next(
                (ix for ix in candidates if ix.signature == src.signature and ix.name not in used), None
            )
            entry: dict[str, JSONValue] = {"table": table.qualified, "source": src.to_json(), "ai": None}
            if match is None:
                same_name = ai_by_name.get(src.name)
                got = f"AI has {same_name.describe()}" if same_name else "AI has no such index"
                failures.append(f"{table}: index {src.name} ({src.describe()}) missing on AI; {got}")
                entry["match"] = False
            else:
                used.add(match.name)
                entry.update(ai=match.to_json(), match=True)
                if not match.valid:
                    failures.append(f"{table}: index {match.name} is invalid on AI (indisvalid = false)")
            compared.append(entry)
        # pg_get_indexdef prints a column name double-quoted when it needs quoting
        indexed = {k for ix in source_indexes for k, _ in ix.keys}
        for col in vector_columns:
            if col not in indexed and '"' + col.replace('"', '""') + '"' not in indexed:
                unindexed.append(f"{table}.{col}")
    meta["indexes"] = compared
    meta["unindexed_vector_columns"] = sorted(unindexed)
    if not failures:
        indexes = plural(len(compared), "vector index", "vector indexes")
        summary = f"ai: vector {meta['vector_version']}, {indexes} match"
        return CheckOutcome(True, summary, [], meta)
    return CheckOutcome(
        False, f"ai: {plural(len(failures), 'problem')}: {failures[0]}", capped(failures), meta
    )
