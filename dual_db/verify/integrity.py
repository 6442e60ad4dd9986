"""foreign_keys_valid and soft_references: no orphan rows, within a database and across the two.

The rules of `dual_db.verify` (its package docstring) hold here.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from dual_db.db.catalog import (
    regclass_literal,
)
from dual_db.db.names import TableName
from dual_db.db.references import SoftReference
from dual_db.verify.common import error_text, message_ident, relkind
from dual_db.verify.outcome import CheckOutcome, JSONValue, capped, plural

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
-- a key to a partitioned table is cloned for each of its partitions (conparentid): the clones are
-- part of the key, which is checked against the partitioned table as a whole
WHERE k.contype = 'f' AND k.conrelid = %(rel)s::regclass AND k.conparentid = 0
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
        if relkind(conn, table) is None:
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
            own, theirs = ", ".join(map(message_ident, cols)), ", ".join(map(message_ident, p_cols))
            ref = f"({own}) -> {parent}({theirs})"
            name = message_ident(name)
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
            from_conn = from_conn if relkind(from_conn, ref.from_table) is not None else None
            to_conn = to_conn if relkind(to_conn, ref.to_table) is not None else None
        else:
            from_conn = next(
                (c for c in (ai_conn, core_conn) if relkind(c, ref.from_table) is not None), None
            )
            to_conn = next((c for c in (core_conn, ai_conn) if relkind(c, ref.to_table) is not None), None)
        label = f"{name}: {ref.describe()}"
        if from_conn is None or to_conn is None:
            missing = ref.from_table if from_conn is None else ref.to_table
            failures.append(f"{label}: table {missing} is not on the expected database")
            details.append({"name": name, "error": f"table {missing} missing"})
            continue
        try:
            keys, orphan_keys, orphan_rows, sample = _soft_reference_orphans(from_conn, to_conn, ref)
        except psycopg.Error as exc:
            failures.append(f"{label}: cannot check: {error_text(exc)}")
            details.append({"name": name, "error": error_text(exc)})
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
