"""schema_parity: every migrated table's columns, keys, constraints, indexes and triggers equal the source's.

The rules of `dual_db.verify` (its package docstring) hold here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import psycopg

from dual_db.db.names import TableName
from dual_db.verify.outcome import CheckOutcome, JSONValue, capped, plural
from dual_db.verify.reparse import reconcile_reparse_drift
from dual_db.verify.schema import compare_tables, describe_table


def schema_parity(
    source_conn: psycopg.Connection,
    target_conn: psycopg.Connection,
    tables: Sequence[TableName],
    *,
    ignore_foreign_keys_to: set[TableName] | frozenset[TableName] = frozenset(),
    left_out: Mapping[TableName, Collection[tuple[str, str]]] | None = None,
) -> CheckOutcome:
    """Each table's columns (name, type, not null, default, identity/generated, collation), constraints
    (primary key, unique, check, exclusion, foreign keys by `pg_get_constraintdef`), indexes (definition
    without the name), triggers (`pg_get_triggerdef` and enabled state), persistence, row-level security
    and policies are equal on both sides. Foreign keys from the source that point to a table in
    `ignore_foreign_keys_to` (routed to the other database) are not expected on the target.

    A check constraint, default, generation expression, index or trigger whose text differs is first
    put through the target server's parser (`reconcile_reparse_drift`): PostgreSQL does not always
    print back the same text for what it parsed from its own print (pg_dump -> restore), so only what
    still differs after that is a difference.

    `left_out`: per table, the (kind, name) of the objects the routing plan accepted leaving out
    because they reach across the split (`accept_across_split`): not expected on the target."""
    left_out = left_out or {}
    differences: list[str] = []
    reparsed: list[str] = []
    per_table: dict[str, JSONValue] = {}
    for table in tables:
        target = describe_table(target_conn, table)
        source, notes = reconcile_reparse_drift(target_conn, describe_table(source_conn, table), target)
        reparsed += notes
        found = compare_tables(
            source,
            target,
            ignore_foreign_keys_to=frozenset(ignore_foreign_keys_to),
            left_out=left_out.get(table, ()),
        )
        differences += found
        per_table[table.qualified] = len(found)
    differing = [t for t, n in per_table.items() if n]
    meta: dict[str, JSONValue] = {
        "tables_compared": len(tables),
        "tables_differing": differing,
        "differences": capped(differences, 200),  # type: ignore[dict-item]
        "ignored_foreign_keys_to": sorted(t.qualified for t in ignore_foreign_keys_to),
        "left_out_by_plan": sorted(
            f"{t.qualified}: {k} {n}" for t, items in left_out.items() for k, n in items
        ),
        "equal_after_reparse": capped(reparsed, 200),  # type: ignore[dict-item]
    }
    if not differences:
        return CheckOutcome(True, f"{plural(len(tables), 'table')}: schema identical to the source", [], meta)
    counted = f"{plural(len(differences), 'schema difference')} in {plural(len(differing), 'table')}"
    # catalog text may span lines (pg_get_expr prints CASE over several): the summary is one line
    summary = f"{counted}: {' '.join(differences[0].split())}"
    return CheckOutcome(False, summary, capped(differences), meta)
