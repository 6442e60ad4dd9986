"""The soak week's probes: after cutover, is the new pair healthy, fast, consistent, and is the old
database really left alone? Plain functions over connections, each returning a `CheckOutcome` with its
numbers; the Dagster layer runs them on a schedule (`dual_db.defs.soak`).
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql

from dual_db.cutover import ChangeCounters
from dual_db.db.names import TableName
from dual_db.verify.common import relkind
from dual_db.verify.outcome import CheckOutcome, JSONValue, plural


def no_writes_since_cutover(at_cutover: ChangeCounters, now: ChangeCounters) -> CheckOutcome:
    """ERROR when any table of the old database was written (its counters moved) after cutover.

    Commits are reported, not judged: every read (this probe's included) commits a transaction too.
    """
    moved = now.moved_since(at_cutover)
    meta: dict[str, JSONValue] = {
        "tables_written": [t.qualified for t in moved],
        "tables_watched": len(at_cutover.tables),
        "commits_since_cutover": now.commits - at_cutover.commits,
    }
    if not moved:
        return CheckOutcome(
            True, f"old database: no table written since the cutover at {at_cutover.read_at}", [], meta
        )
    lines = []
    for table in moved:
        before, after = at_cutover.tables.get(table), now.tables.get(table)
        if before is None or after is None:
            lines.append(f"{table}: {'created' if before is None else 'dropped'} since the cutover")
            continue
        lines.append(
            f"{table}: +{after.inserted - before.inserted} inserted, "
            f"+{after.updated - before.updated} updated, +{after.deleted - before.deleted} deleted"
            + (" (truncated or rewritten)" if after.relfilenode != before.relfilenode else "")
        )
    summary = (
        f"old database written after the cutover in {plural(len(moved), 'table')}: "
        f"{', '.join(str(t) for t in moved[:5])} — something still writes there; those writes are not in "
        "the new pair"
    )
    return CheckOutcome(False, summary, lines, meta)


def row_counts(
    conn: psycopg.Connection, migrated: Mapping[TableName, int], *, shrink_bound: float = 0.1
) -> CheckOutcome:
    """WARN when a table holds fewer rows than migrated by more than `shrink_bound` (a fraction)."""
    counts: dict[str, JSONValue] = {}
    shrunk: list[str] = []
    for table, rows in sorted(migrated.items()):
        if relkind(conn, table) is None:
            shrunk.append(f"{table}: missing (had {rows} rows at the migration)")
            continue
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()
        now = int(row[0]) if row else 0
        counts[table.qualified] = now
        if rows and now < rows * (1 - shrink_bound):
            shrunk.append(f"{table}: {now} rows, {rows} at the migration ({(rows - now) / rows:.0%} fewer)")
    meta: dict[str, JSONValue] = {"rows": counts, "shrink_bound": shrink_bound, "tables_shrunk": len(shrunk)}
    if not shrunk:
        return CheckOutcome(
            True,
            f"{plural(len(migrated), 'table')}: none shrank by more than {shrink_bound:.0%}",
            [],
            meta,
            severity="WARN",
        )
    return CheckOutcome(
        False, f"{plural(len(shrunk), 'table')} shrank: {shrunk[0]}", shrunk, meta, severity="WARN"
    )


_HEALTH_SQL = """
SELECT deadlocks, xact_rollback, xact_commit, conflicts, temp_files, temp_bytes
FROM pg_stat_database WHERE datname = current_database()
"""


def health_counters(conn: psycopg.Connection) -> dict[str, int]:
    """The database's cumulative counters from pg_stat_database."""
    row = conn.execute(_HEALTH_SQL).fetchone()
    assert row is not None
    names = ("deadlocks", "rollbacks", "commits", "conflicts", "temp_files", "temp_bytes")
    return dict(zip(names, (int(v) for v in row), strict=True))


def database_health(
    now: Mapping[str, int],
    previous: Mapping[str, int] | None,
    label: str,
    *,
    max_deadlocks: int = 0,
    max_rollback_ratio: float = 0.05,
    min_transactions: int = 1000,
) -> CheckOutcome:
    """WARN past the bounds over the interval since the previous soak run (cumulative counters since
    the statistics reset when there is none): deadlocks, recovery conflicts, and the share of
    rolled-back transactions — judged only over at least `min_transactions`, since dual-db's own probes
    (which roll back what they only read) would dominate an idle database."""
    base = previous or {}
    delta = {k: now[k] - int(base.get(k, 0)) for k in now}
    transactions = delta["rollbacks"] + delta["commits"]
    ratio = delta["rollbacks"] / transactions if transactions else 0.0
    meta: dict[str, JSONValue] = {**delta, "transactions": transactions, "rollback_ratio": round(ratio, 4)}
    problems = []
    if delta["deadlocks"] > max_deadlocks:
        problems.append(f"{label}: {plural(delta['deadlocks'], 'deadlock')} (bound {max_deadlocks})")
    if transactions >= min_transactions and ratio > max_rollback_ratio:
        problems.append(
            f"{label}: {ratio:.1%} of {transactions} transactions rolled back "
            f"(bound {max_rollback_ratio:.0%})"
        )
    if delta["conflicts"]:
        problems.append(f"{label}: {plural(delta['conflicts'], 'recovery conflict')}")
    summary = (
        problems[0]
        if problems
        else (
            f"{label}: {delta['deadlocks']} deadlocks, {ratio:.1%} of {transactions} transactions "
            f"rolled back, {delta['temp_files']} temp files"
        )
    )
    return CheckOutcome(not problems, summary, problems, meta, severity="WARN")


def vector_indexes_valid(conn: psycopg.Connection) -> tuple[int, list[str]]:
    """(number of hnsw/ivfflat indexes, the invalid ones)."""
    rows = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname), i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_am am ON am.oid = c.relam WHERE am.amname IN ('hnsw', 'ivfflat')",
        {},
    ).fetchall()
    return len(rows), [str(r[0]) for r in rows if not r[1]]


def vector_index_outcome(
    indexes: int,
    invalid: list[str],
    *,
    index_used: bool | None,
    rag_queries: int,
    recall: float | None,
    recall_base: float | None,
    baseline_index_used: bool | None,
    recall_tolerance: float,
) -> CheckOutcome:
    """The vector indexes are valid and *used*: the RAG probe's queries went through one (`index_used`,
    from the index scan counters), and its recall@10 is not below the baseline's.

    An index that is valid but not used is a WARN failure: the application's RAG query is answered by
    an exact scan, whose cost grows with the table (PostgreSQL's seq-scan cost leaves the TOASTed
    vectors out, so the planner can choose it where reading them costs ten times the index's pages).
    Invalid or missing indexes are ERROR. `index_used` None: no RAG probe ran (no table to probe)."""
    problems = [f"invalid vector index: {name}" for name in invalid]
    if indexes == 0:
        problems.append("no vector index on the AI database")
    elif index_used is False:
        problems.append(
            f"the RAG query did not use the vector index ({rag_queries} probe queries; the planner "
            "chose an exact scan): tune random_page_cost on the AI server (sql/tuning/ai.sql) or check "
            "the index's operator class against the query's distance operator"
        )
    if recall is not None and recall_base is not None and recall < recall_base - recall_tolerance:
        how = "" if baseline_index_used in (None, True) else " (the old database answered by exact search)"
        problems.append(f"recall@10 {recall:.3f} below the baseline's {recall_base:.3f}{how}")
    used = {None: "no RAG probe", True: f"used by the RAG query ({rag_queries} probe queries)"}.get(
        index_used, "not used by the RAG query"
    )
    summary = f"{plural(indexes, 'vector index', 'vector indexes')} valid, {used}; recall@10 {recall}"
    meta: dict[str, JSONValue] = {
        "vector_indexes": indexes,
        "invalid": list(invalid),
        "recall_at_10": recall,
        "rag_index_used": index_used,
    }
    return CheckOutcome(
        not problems,
        problems[0] if problems else summary,
        problems,
        meta,
        severity="ERROR" if invalid or indexes == 0 else "WARN",
    )


def compared_with_baseline(
    figure: str, now: float | None, baseline: float | None, *, at_most: float, label: str
) -> tuple[bool, str]:
    """Whether `now` <= `at_most` x `baseline`, with the sentence a person reads."""
    if now is None or baseline is None:
        return True, f"{label}: no {'baseline' if baseline is None else 'measurement'} to compare"
    ok = now <= at_most * baseline
    return ok, f"{label}: {now:.2f} now, {baseline:.2f} at the baseline (must be ≤ {at_most:.0%} of it)"


def orphan_growth(previous: int | None, now: int) -> CheckOutcome:
    """ERROR when cross-database orphans grew since the previous soak run (no foreign key guards them)."""
    meta: dict[str, JSONValue] = {"orphan_rows": now, "previous_orphan_rows": previous}
    if previous is not None and now > previous:
        summary = (
            f"soft-reference orphans grew from {previous} to {now}: the application writes references "
            "to rows the other database does not have"
        )
        return CheckOutcome(False, summary, [summary], meta)
    return CheckOutcome(
        True,
        f"{plural(now, 'orphan row')} across the two databases"
        + ("" if previous is None else f" (previous run: {previous})"),
        [],
        meta,
    )
