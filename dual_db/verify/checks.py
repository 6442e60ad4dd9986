"""The verification checks: each returns a `CheckOutcome` the Dagster layer maps 1:1 to an asset check.

Per table: `count_parity`, `checksum_parity` (source side = the fingerprint the copy recorded inside
its snapshot, target side = the target now). Per database: `core_extension_rules`,
`ai_extension_rules`, `schema_parity`, `foreign_keys_valid`, `soft_references`, `sequences_aligned`,
`source_drift`.

Rules that hold for every function here:
- The source is only read (plain SELECTs: it runs as a role with SELECT privileges only, on a
  read-only session). Temporary tables are created on targets only (`soft_references`, and
  `schema_parity` to re-parse a differing source definition, in a transaction it rolls back).
- Every identifier is composed with `psycopg.sql`; catalog SQL is module-level constants.
- A check never raises for a finding: a missing table, column or sequence is a failure in the outcome.
  Queries that may fail on a target run inside a savepoint, so the caller's transaction survives.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg
from psycopg import sql

from dual_db.db.catalog import (
    PGVECTOR_TYPES,
    SYSTEM_SCHEMAS,
    ColumnInfo,
    installed_extension,
    list_tables,
    regclass_literal,
    table_columns,
)
from dual_db.db.fingerprint import Fingerprint, table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.references import SoftReference
from dual_db.verify.bisect import BisectResult, key_columns, locate_difference
from dual_db.verify.outcome import CheckOutcome, JSONValue, capped, plural
from dual_db.verify.reparse import reconcile_reparse_drift
from dual_db.verify.schema import compare_tables, describe_table

# ---------------------------------------------------------------------------------------------------
# helpers


def _relkind(conn: psycopg.Connection, table: TableName) -> str | None:
    row = conn.execute(
        "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass(%s)", (regclass_literal(table),)
    ).fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def _savepoint(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction (or a savepoint inside the caller's): an error rolls back only what ran here."""
    with conn.transaction():
        yield


def _ident(name: str) -> str:
    """An identifier for messages, double-quoted only where PostgreSQL would need it."""
    return TableName("public", name).display


def _error_text(exc: psycopg.Error) -> str:
    # The server's primary message: names objects, never connection details.
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return str(primary or exc).strip().splitlines()[0]


# ---------------------------------------------------------------------------------------------------
# per table: count_parity, checksum_parity


def count_parity(
    expected: Fingerprint,
    target_conn: psycopg.Connection,
    target_table: TableName,
    columns: Sequence[ColumnInfo] | None = None,
) -> CheckOutcome:
    """The target's row count equals the source's at the snapshot. (`columns` is unused: a count.)"""
    del columns  # the interface is shared with checksum_parity; a count needs no column list
    t = target_table
    meta: dict[str, JSONValue] = {"table": t.qualified, "source_rows": expected.rows}
    if _relkind(target_conn, t) is None:
        meta["target_rows"] = None
        return CheckOutcome(False, f"{t}: table missing on target", [f"{t}: table missing on target"], meta)
    row = target_conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.ident)).fetchone()
    assert row is not None
    actual = int(row[0])
    missing, extra = max(expected.rows - actual, 0), max(actual - expected.rows, 0)
    meta.update(target_rows=actual, missing_rows=missing, extra_rows=extra)
    if actual == expected.rows:
        return CheckOutcome(True, f"{t}: {plural(actual, 'row')}, as in the source at the snapshot", [], meta)
    failure = (
        f"{t}: target has {plural(actual, 'row')}, source had {expected.rows} at the snapshot "
        f"({missing} missing, {extra} extra)"
    )
    return CheckOutcome(False, failure, [failure], meta)


def checksum_parity(
    expected: Fingerprint,
    target_conn: psycopg.Connection,
    target_table: TableName,
    columns: Sequence[ColumnInfo],
    *,
    source_conn: psycopg.Connection | None = None,
    source_table: TableName | None = None,
    source_at_snapshot: bool = True,
) -> CheckOutcome:
    """The target's content fingerprint over the source's `columns` equals the one recorded at the snapshot.

    On a mismatch with `source_conn` given, the first differing primary-key range is located by
    bisection against `source_conn` (inside the copy's snapshot if the caller still holds it; pass
    `source_at_snapshot=False` when it reads the source as it is now, and the outcome says so).
    """
    t = target_table
    source_table = source_table or target_table
    meta: dict[str, JSONValue] = {
        "table": t.qualified,
        "columns": [c.name for c in columns],
        "source_rows": expected.rows,
        "source_checksum": expected.checksum,
    }
    if _relkind(target_conn, t) is None:
        return CheckOutcome(False, f"{t}: table missing on target", [f"{t}: table missing on target"], meta)
    try:
        with _savepoint(target_conn):
            actual = table_fingerprint(target_conn, t, columns)
    except psycopg.Error as exc:
        failure = f"{t}: cannot fingerprint the target over the source's columns: {_error_text(exc)}"
        return CheckOutcome(False, failure, [failure], meta)
    meta.update(target_rows=actual.rows, target_checksum=actual.checksum)
    if actual == expected:
        return CheckOutcome(
            True, f"{t}: content identical to the source at the snapshot ({expected})", [], meta
        )

    failures = [f"{t}: content differs from the source at the snapshot (source {expected}, target {actual})"]
    warnings: list[str] = []
    summary = failures[0]
    if source_conn is None:
        warnings.append(f"{t}: no source connection given, so the differing key range was not located")
    else:
        meta["compared_against"] = "the source at the snapshot" if source_at_snapshot else "the source now"
        key = key_columns(source_conn, source_table)
        if not key:
            failures.append(f"{t}: has no primary key, so the difference cannot be narrowed to a key range")
            meta["key_range"] = None
        else:
            try:
                with _savepoint(source_conn), _savepoint(target_conn):
                    found = locate_difference(source_conn, source_table, target_conn, t, columns, key)
            except psycopg.Error as exc:
                failures.append(f"{t}: could not locate the differing key range: {_error_text(exc)}")
            else:
                summary = _describe_bisect(t, found, expected, source_at_snapshot, failures, warnings, meta)
    return CheckOutcome(False, summary, failures, meta, warnings)


def _describe_bisect(
    t: TableName,
    found: BisectResult,
    expected: Fingerprint,
    source_at_snapshot: bool,
    failures: list[str],
    warnings: list[str],
    meta: dict[str, JSONValue],
) -> str:
    meta["key_range"] = found.to_json()
    meta["source_read_matches_snapshot"] = found.source_total == expected
    when = "at the snapshot" if source_at_snapshot else "now (the snapshot is gone: later writes show too)"
    if found.source_total != expected:
        warnings.append(
            f"{t}: the source read for bisection ({found.source_total}) is not the snapshot's ({expected}): "
            "it has changed since the copy"
        )
    if not found.found:
        failures.append(
            f"{t}: the target equals the source as read {when}, but not the fingerprint recorded at the "
            "snapshot: the source changed after the snapshot, or the recorded fingerprint is stale"
        )
        return failures[0]
    rng = found.key_range
    detail = (
        f"{t}: first differing key range {rng.describe()} (source {found.source.rows} rows, target "
        f"{found.target.rows} rows in range; source read {when})"
    )
    failures.append(detail)
    if found.differences:
        listed = "; ".join(d.describe(rng.columns) for d in found.differences[:5])
        more = " ..." if len(found.differences) > 5 or found.differences_truncated else ""
        failures.append(f"{t}: in that range: {listed}{more}")
    return f"{t}: content differs, first at key range {rng.describe()}"


# ---------------------------------------------------------------------------------------------------
# per database: extension rules

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
    *,
    require_index: bool = True,
) -> CheckOutcome:
    """`vector` is installed on AI; every hnsw/ivfflat index of the AI tables on the source exists on AI
    with the same access method, operator classes and options (m, ef_construction, lists; pgvector's
    defaults filled in) and is valid. With `require_index`, a vector column the source left unindexed
    must still have a valid hnsw/ivfflat index on AI (the plan's "HNSW indexes")."""
    failures: list[str] = []
    ext = installed_extension(ai_conn, "vector")
    meta: dict[str, JSONValue] = {"vector_version": ext[0] if ext else None}
    if ext is None:
        failures.append("ai: extension vector is not installed")
    compared: list[JSONValue] = []
    for table in ai_tables:
        if _relkind(source_conn, table) is None:
            failures.append(f"{table}: not on the source")
            continue
        vector_columns = [c.name for c in table_columns(source_conn, table) if c.vector_type]
        source_indexes = _vector_indexes(source_conn, table)
        if _relkind(ai_conn, table) is None:
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
        indexed = {k for ix in source_indexes for k, _ in ix.keys}
        for col in vector_columns:
            if col in indexed or '"' + col.replace('"', '""') + '"' in indexed:
                continue
            # pg_get_indexdef prints a column name double-quoted when it needs quoting
            spellings = {col, '"' + col.replace('"', '""') + '"'}
            ai_valid = [ix for ix in ai_indexes if ix.valid and any(k in spellings for k, _ in ix.keys)]
            compared.append(
                {
                    "table": table.qualified,
                    "column": col,
                    "source": None,
                    "ai": [ix.to_json() for ix in ai_valid],
                    "match": bool(ai_valid),
                }
            )
            if require_index and not ai_valid:
                failures.append(f"{table}: vector column {col} has no valid hnsw/ivfflat index on AI")
    meta["indexes"] = compared
    if not failures:
        indexes = plural(len(compared), "vector index", "vector indexes")
        summary = f"ai: vector {meta['vector_version']}, {indexes} match"
        return CheckOutcome(True, summary, [], meta)
    return CheckOutcome(
        False, f"ai: {plural(len(failures), 'problem')}: {failures[0]}", capped(failures), meta
    )


# ---------------------------------------------------------------------------------------------------
# per database: schema parity


def schema_parity(
    source_conn: psycopg.Connection,
    target_conn: psycopg.Connection,
    tables: Sequence[TableName],
    *,
    ignore_foreign_keys_to: set[TableName] | frozenset[TableName] = frozenset(),
) -> CheckOutcome:
    """Each table's columns (name, type, not null, default, identity/generated, collation), constraints
    (primary key, unique, check, exclusion, foreign keys by `pg_get_constraintdef`), indexes (definition
    without the name), triggers (`pg_get_triggerdef` and enabled state), persistence, row-level security
    and policies are equal on both sides. Foreign keys from the source that point to a table in
    `ignore_foreign_keys_to` (routed to the other database) are not expected on the target.

    A check constraint, default, generation expression, index or trigger whose text differs is first
    put through the target server's parser (`reconcile_reparse_drift`): PostgreSQL does not always
    print back the same text for what it parsed from its own print (pg_dump -> restore), so only what
    still differs after that is a difference."""
    differences: list[str] = []
    reparsed: list[str] = []
    per_table: dict[str, JSONValue] = {}
    for table in tables:
        target = describe_table(target_conn, table)
        source, notes = reconcile_reparse_drift(target_conn, describe_table(source_conn, table), target)
        reparsed += notes
        found = compare_tables(source, target, ignore_foreign_keys_to=frozenset(ignore_foreign_keys_to))
        differences += found
        per_table[table.qualified] = len(found)
    differing = [t for t, n in per_table.items() if n]
    meta: dict[str, JSONValue] = {
        "tables_compared": len(tables),
        "tables_differing": differing,
        "differences": capped(differences, 200),  # type: ignore[dict-item]
        "ignored_foreign_keys_to": sorted(t.qualified for t in ignore_foreign_keys_to),
        "equal_after_reparse": capped(reparsed, 200),  # type: ignore[dict-item]
    }
    if not differences:
        return CheckOutcome(True, f"{plural(len(tables), 'table')}: schema identical to the source", [], meta)
    counted = f"{plural(len(differences), 'schema difference')} in {plural(len(differing), 'table')}"
    # catalog text may span lines (pg_get_expr prints CASE over several): the summary is one line
    summary = f"{counted}: {' '.join(differences[0].split())}"
    return CheckOutcome(False, summary, capped(differences), meta)


# ---------------------------------------------------------------------------------------------------
# per database: foreign keys

_FOREIGN_KEYS_SQL = """
SELECT k.conname, k.convalidated, k.confmatchtype::text, fn.nspname, fc.relname,
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum ORDER BY u.ord),
       ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY AS u(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum ORDER BY u.ord),
       -- the RI triggers enforce the key; disabled (ALTER TABLE ... DISABLE TRIGGER ALL) = not enforced
       EXISTS (SELECT 1 FROM pg_trigger tg WHERE tg.tgconstraint = k.oid AND tg.tgenabled = 'D')
FROM pg_constraint k
JOIN pg_class fc ON fc.oid = k.confrelid
JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE k.contype = 'f' AND k.conrelid = %(rel)s::regclass
ORDER BY k.conname
"""


def _orphan_condition(
    match_type: str, child_columns: Sequence[str], parent: TableName, parent_columns: Sequence[str]
) -> sql.Composable:
    """Rows of alias `c` that break the key: MATCH SIMPLE skips rows with any NULL key column,
    MATCH FULL only rows with all of them NULL (a partly-NULL key is itself a violation)."""
    c, p = sql.Identifier("c"), sql.Identifier("p")
    cols = [sql.SQL("{}.{}").format(c, sql.Identifier(n)) for n in child_columns]
    join = sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}").format(p, sql.Identifier(pn), cc)
        for pn, cc in zip(parent_columns, cols, strict=True)
    )
    missing_parent = sql.SQL("NOT EXISTS (SELECT 1 FROM {} AS {} WHERE {})").format(parent.ident, p, join)
    all_set = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(x) for x in cols)
    if match_type == "f":
        all_null = sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(x) for x in cols)
        return sql.SQL("NOT ({all_null}) AND (NOT ({all_set}) OR {missing})").format(
            all_null=all_null, all_set=all_set, missing=missing_parent
        )
    return sql.SQL("{} AND {}").format(all_set, missing_parent)


def foreign_keys_valid(conn: psycopg.Connection, tables: Sequence[TableName]) -> CheckOutcome:
    """Every foreign key on `tables` is validated, enforced (its triggers enabled) and has no orphan
    rows (anti-join per key, NULLs per MATCH SIMPLE / MATCH FULL)."""
    failures: list[str] = []
    checked: list[JSONValue] = []
    for table in tables:
        if _relkind(conn, table) is None:
            failures.append(f"{table}: table missing")
            continue
        for name, validated, match_type, p_schema, p_name, cols, p_cols, disabled in conn.execute(
            _FOREIGN_KEYS_SQL, {"rel": regclass_literal(table)}
        ).fetchall():
            parent = TableName(p_schema, p_name)
            condition = _orphan_condition(match_type, cols, parent, p_cols)
            c = sql.Identifier("c")
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {} AS {} WHERE {}").format(table.ident, c, condition)
            ).fetchone()
            orphans = int(row[0]) if row else 0
            sample: list[list[str | None]] = []
            if orphans:
                keys = sql.SQL(", ").join(sql.SQL("{}.{}::text").format(c, sql.Identifier(n)) for n in cols)
                sample = [
                    list(r)
                    for r in conn.execute(
                        sql.SQL("SELECT {} FROM {} AS {} WHERE {} LIMIT 5").format(
                            keys, table.ident, c, condition
                        )
                    ).fetchall()
                ]
            ref = f"({', '.join(map(_ident, cols))}) -> {parent}({', '.join(map(_ident, p_cols))})"
            name = _ident(name)
            checked.append(
                {
                    "table": table.qualified,
                    "constraint": name,
                    "references": ref,
                    "validated": bool(validated),
                    "enforced": not disabled,
                    "orphan_rows": orphans,
                    "orphan_sample": sample,
                }
            )  # type: ignore[dict-item]
            if not validated:
                failures.append(f"{table}: foreign key {name} {ref} is NOT VALID (never checked)")
            if disabled:
                failures.append(
                    f"{table}: foreign key {name} {ref} is not enforced (its triggers are disabled)"
                )
            if orphans:
                shown = "; ".join(
                    "(" + ", ".join("NULL" if v is None else v for v in s) + ")" for s in sample
                )
                failures.append(
                    f"{table}: foreign key {name} {ref} has {plural(orphans, 'orphan row')}, e.g. {shown}"
                )
    meta: dict[str, JSONValue] = {"foreign_keys": checked, "tables": len(tables)}
    if not failures:
        return CheckOutcome(
            True,
            f"{plural(len(checked), 'foreign key')} on {plural(len(tables), 'table')}: valid, no orphans",
            [],
            meta,
        )
    return CheckOutcome(
        False, f"{plural(len(failures), 'foreign key problem')}: {failures[0]}", capped(failures), meta
    )


# ---------------------------------------------------------------------------------------------------
# soft references (AI -> core, no FK possible across databases)


def _reference_name(ref: SoftReference) -> str:
    return ref.name or ref.describe()


_PROBE = TableName("pg_temp", "dual_db_soft_reference_probe")


def _soft_reference_orphans(
    from_conn: psycopg.Connection, to_conn: psycopg.Connection, ref: SoftReference
) -> tuple[int, int, int, list[list[str]]]:
    """(distinct keys, orphan keys, orphan rows, sample) for one reference.

    The distinct non-NULL keys with their row counts are streamed with COPY from the referencing side
    into a temporary table on the referenced side (a target, never the source), typed like the
    referenced columns so the text form parses back exactly; one anti-join there finds the orphans.
    """
    from_cols = [sql.Identifier(c) for c in ref.from_columns]
    key_names = [sql.Identifier(f"k{i}") for i in range(len(from_cols))]
    n = sql.Identifier("n")
    export = sql.SQL(
        "COPY (SELECT {cols}, count(*) FROM {t} WHERE {not_null} GROUP BY {cols}) TO STDOUT"
    ).format(
        cols=sql.SQL(", ").join(from_cols),
        t=ref.from_table.ident,
        not_null=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in from_cols),
    )
    create = sql.SQL(
        "CREATE TEMP TABLE {probe} AS SELECT {typed}, 0::bigint AS {n} FROM {to} WITH NO DATA"
    ).format(
        probe=sql.Identifier(_PROBE.name),
        typed=sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(sql.Identifier(c), k)
            for c, k in zip(ref.to_columns, key_names, strict=True)
        ),
        n=n,
        to=ref.to_table.ident,
    )
    p, t = sql.Identifier("p"), sql.Identifier("t")
    orphan = sql.SQL("NOT EXISTS (SELECT 1 FROM {to} AS {t} WHERE {join})").format(
        to=ref.to_table.ident,
        t=t,
        join=sql.SQL(" AND ").join(
            sql.SQL("{}.{} = {}.{}").format(t, sql.Identifier(c), p, k)
            for c, k in zip(ref.to_columns, key_names, strict=True)
        ),
    )
    probe = _PROBE.ident
    if from_conn is to_conn:
        # Both tables on one database: a plain anti-join, no copying needed.
        grouped = sql.SQL("SELECT {keys}, count(*) AS {n} FROM {t} WHERE {not_null} GROUP BY {cols}").format(
            keys=sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(c, k) for c, k in zip(from_cols, key_names, strict=True)
            ),
            n=n,
            t=ref.from_table.ident,
            not_null=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in from_cols),
            cols=sql.SQL(", ").join(from_cols),
        )
        probe = sql.SQL("({})").format(grouped)
        return _count_orphans(to_conn, probe, orphan, key_names, n)
    with to_conn.transaction():
        to_conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(probe))
        to_conn.execute(create)
        with from_conn.cursor() as src, to_conn.cursor() as dst:
            with src.copy(export) as out, dst.copy(sql.SQL("COPY {} FROM STDIN").format(probe)) as into:
                for chunk in out:
                    into.write(chunk)
        to_conn.execute(sql.SQL("ANALYZE {}").format(probe))
        result = _count_orphans(to_conn, probe, orphan, key_names, n)
        to_conn.execute(sql.SQL("DROP TABLE {}").format(probe))
    return result


def _count_orphans(
    conn: psycopg.Connection,
    probe: sql.Composable,
    orphan: sql.Composable,
    key_names: Sequence[sql.Identifier],
    n: sql.Identifier,
) -> tuple[int, int, int, list[list[str]]]:
    p = sql.Identifier("p")
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE {o}), coalesce(sum({n}) FILTER (WHERE {o}), 0) "
            "FROM {probe} AS {p}"
        ).format(o=orphan, n=n, probe=probe, p=p)
    ).fetchone()
    assert row is not None
    sample = [
        list(r)
        for r in conn.execute(
            sql.SQL("SELECT {keys} FROM {probe} AS {p} WHERE {o} ORDER BY {keys} LIMIT 5").format(
                keys=sql.SQL(", ").join(sql.SQL("{}.{}::text").format(p, k) for k in key_names),
                probe=probe,
                p=p,
                o=orphan,
            )
        ).fetchall()
    ]
    return int(row[0]), int(row[1]), int(row[2]), sample


def soft_references(
    ai_conn: psycopg.Connection,
    core_conn: psycopg.Connection,
    references: Sequence[SoftReference],
    *,
    strict: bool = False,
) -> CheckOutcome:
    """For each cross-database reference, how many referencing rows point at no row on the other side.

    A reference with `from_database` ("ai"/"core") starts there and points into the other database;
    otherwise `from_table` is looked up on AI first, then core, and `to_table` on core first, then AI.
    Orphans are warnings (passed=True, severity WARN) unless `strict`. Needs no dblink; it creates a
    temporary table on the referenced (target) database.
    """
    failures: list[str] = []
    findings: list[str] = []
    details: list[JSONValue] = []
    total_orphan_rows = 0
    for ref in references:
        name = _reference_name(ref)
        side = getattr(ref, "from_database", None)
        if side in ("ai", "core"):
            # The reference says where it starts: the referenced table is on the other database.
            from_conn, to_conn = (ai_conn, core_conn) if side == "ai" else (core_conn, ai_conn)
            from_conn = from_conn if _relkind(from_conn, ref.from_table) is not None else None
            to_conn = to_conn if _relkind(to_conn, ref.to_table) is not None else None
        else:
            from_conn = next(
                (c for c in (ai_conn, core_conn) if _relkind(c, ref.from_table) is not None), None
            )
            to_conn = next((c for c in (core_conn, ai_conn) if _relkind(c, ref.to_table) is not None), None)
        label = f"{name}: {ref.describe()}"
        if from_conn is None or to_conn is None:
            missing = ref.from_table if from_conn is None else ref.to_table
            failures.append(f"{label}: table {missing} is not on the expected database")
            details.append({"name": name, "error": f"table {missing} missing"})
            continue
        try:
            keys, orphan_keys, orphan_rows, sample = _soft_reference_orphans(from_conn, to_conn, ref)
        except psycopg.Error as exc:
            failures.append(f"{label}: cannot check: {_error_text(exc)}")
            details.append({"name": name, "error": _error_text(exc)})
            continue
        total_orphan_rows += orphan_rows
        details.append(
            {
                "name": name,
                "from": f"{ref.from_table}({', '.join(ref.from_columns)})",
                "to": f"{ref.to_table}({', '.join(ref.to_columns)})",
                "distinct_keys": keys,
                "orphan_keys": orphan_keys,
                "orphan_rows": orphan_rows,
                "orphan_sample": sample,
            }
        )  # type: ignore[dict-item]
        if orphan_rows:
            shown = ", ".join("(" + ", ".join(s) + ")" for s in sample)
            findings.append(
                f"{label}: {plural(orphan_rows, 'orphan row')} ({plural(orphan_keys, 'key')}), e.g. {shown}"
            )
    meta: dict[str, JSONValue] = {"references": details, "orphan_rows": total_orphan_rows, "strict": strict}
    passed = not failures and not (strict and findings)
    summary = (
        f"{plural(len(references), 'soft reference')}: {plural(total_orphan_rows, 'orphan row')}"
        + (f" ({findings[0]})" if findings else "")
        + (f"; {failures[0]}" if failures else "")
    )
    if strict:
        return CheckOutcome(passed, summary, capped(failures + findings), meta)
    return CheckOutcome(passed, summary, capped(failures), meta, capped(findings), severity="WARN")


# ---------------------------------------------------------------------------------------------------
# sequences


class _SequenceValueLike(Protocol):
    last_value: int | None
    is_called: bool


SequenceExpectation = int | tuple[int, bool] | _SequenceValueLike | None

_SEQUENCE_SQL = """
SELECT s.seqincrement FROM pg_sequence s WHERE s.seqrelid = to_regclass(%(rel)s)
"""


def _expected_bound(value: SequenceExpectation) -> tuple[int | None, bool]:
    """(source last_value, is_called). A bare int is a value the source may already have handed out."""
    if value is None or isinstance(value, int):
        return value, True
    if isinstance(value, tuple):
        return int(value[0]), bool(value[1])
    return value.last_value, bool(value.is_called)


def sequences_aligned(
    expected: Mapping[TableName, SequenceExpectation], target_conn: psycopg.Connection
) -> CheckOutcome:
    """Every sequence's next value on the target is beyond what the source handed out at the snapshot.

    `expected` maps each sequence to the source's state: a `SequenceInfo`/`SequenceValue` (last_value,
    is_called), a `(last_value, is_called)` pair, or an int taken as handed out. The source handed out
    `last_value` only if `is_called`; the target's next value is `last_value + increment` if its
    `is_called`, else `last_value`. Descending sequences compare the other way round.
    """
    failures: list[str] = []
    checked: list[JSONValue] = []
    warnings: list[str] = []
    for seq, value in sorted(expected.items()):
        last, called = _expected_bound(value)
        if last is None:
            warnings.append(f"{seq}: no source value recorded; not checked")
            continue
        inc_row = target_conn.execute(_SEQUENCE_SQL, {"rel": regclass_literal(seq)}).fetchone()
        if inc_row is None:
            failures.append(f"{seq}: sequence missing on target (source last value {last})")
            checked.append({"sequence": seq.qualified, "source_last_value": last, "target": None})
            continue
        increment = int(inc_row[0])
        row = target_conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(seq.ident)
        ).fetchone()
        assert row is not None
        t_last, t_called = int(row[0]), bool(row[1])
        target_next = t_last + increment if t_called else t_last
        # The first value the source has NOT handed out yet; the target must not hand out anything before it.
        source_next = last + increment if called else last
        ok = target_next >= source_next if increment > 0 else target_next <= source_next
        checked.append(
            {
                "sequence": seq.qualified,
                "source_last_value": last,
                "source_is_called": called,
                "target_last_value": t_last,
                "target_is_called": t_called,
                "target_next_value": target_next,
                "aligned": ok,
            }
        )
        if not ok:
            failures.append(
                f"{seq}: target would hand out {target_next} next, but the source had already reached "
                f"{last}{'' if called else ' (not yet used)'}: new rows would collide with copied ones"
            )
    meta: dict[str, JSONValue] = {"sequences": checked}
    if not failures:
        return CheckOutcome(
            True, f"{plural(len(checked), 'sequence')} aligned with the source", [], meta, warnings
        )
    return CheckOutcome(
        False,
        f"{plural(len(failures), 'sequence')} behind the source: {failures[0]}",
        capped(failures),
        meta,
        warnings,
    )


# ---------------------------------------------------------------------------------------------------
# source drift


def source_drift(
    source_conn: psycopg.Connection,
    expected: Mapping[TableName, Fingerprint],
    *,
    columns: Mapping[TableName, Sequence[ColumnInfo]] | None = None,
    include_new_tables: bool = True,
) -> CheckOutcome:
    """Tables whose content on the source now differs from the snapshot's fingerprint: writes a cutover
    made now would lose. A WARN-level check (severity WARN; passed=False when anything drifted).

    `columns` should be the column lists the snapshot fingerprints were taken over (the copy records
    them); without it each table's current columns are used, so a column added since counts as drift.
    With `include_new_tables`, user tables created since the snapshot are drift too.
    """
    started = time.monotonic()
    drifted: list[str] = []
    details: list[JSONValue] = []
    for table, before in sorted(expected.items()):
        if _relkind(source_conn, table) is None:
            drifted.append(f"{table}: dropped since the snapshot (had {plural(before.rows, 'row')})")
            details.append({"table": table.qualified, "snapshot_rows": before.rows, "now_rows": None})
            continue
        cols = list(columns[table]) if columns and table in columns else table_columns(source_conn, table)
        try:
            with _savepoint(source_conn):
                now = table_fingerprint(source_conn, table, cols)
        except psycopg.Error as exc:
            drifted.append(f"{table}: cannot fingerprint now: {_error_text(exc)}")
            continue
        if now != before:
            delta = now.rows - before.rows
            what = "content changed" if delta == 0 else f"{delta:+d} rows"
            drifted.append(f"{table}: {before.rows} -> {now.rows} rows ({what}) since the snapshot")
            details.append(
                {
                    "table": table.qualified,
                    "snapshot_rows": before.rows,
                    "now_rows": now.rows,
                    "checksum_changed": now.checksum != before.checksum,
                }
            )
    new_tables: list[str] = []
    if include_new_tables:
        known = set(expected)
        created = [info.table for info in list_tables(source_conn) if info.table not in known]
        new_tables = [t.qualified for t in created]
        drifted += [f"{t}: created since the snapshot" for t in created]
    meta: dict[str, JSONValue] = {
        "tables_checked": len(expected),
        "drifted": details,
        "new_tables": new_tables,  # type: ignore[dict-item]
        "seconds": round(time.monotonic() - started, 3),
    }
    if not drifted:
        return CheckOutcome(
            True,
            f"source: {plural(len(expected), 'table')} unchanged since the snapshot",
            [],
            meta,
            severity="WARN",
        )
    counted = plural(len(drifted), "table")
    summary = f"source: {counted} changed since the snapshot (a cutover now loses them): {drifted[0]}"
    return CheckOutcome(False, summary, capped(drifted), meta, severity="WARN")
