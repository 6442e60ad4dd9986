"""Planner statistics on the targets: the source's, imported (pg_dump --statistics-only, PostgreSQL 18's
pg_restore_*_stats), and ANALYZE only where they cannot be (schema/statistics.py)."""

from __future__ import annotations

from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.pg_tools import pg_bin_dir
from dual_db.db.urls import DatabaseUrl
from dual_db.schema.statistics import dump_statistics, refresh_statistics
from dual_db_tests.conftest import Databases

# Autovacuum off on both sides: it would ANALYZE the loaded tables on its own and blur what the
# import did. "Weird.Name*" checks that pg_dump's pattern matches that one table and not weird_name.
SCHEMA_SQL = """
CREATE TABLE prices (id int PRIMARY KEY, symbol text, close numeric(12,4))
    WITH (autovacuum_enabled = off);
CREATE INDEX prices_lower_symbol ON prices (lower(symbol));
CREATE TABLE never_analyzed (id int PRIMARY KEY, note text) WITH (autovacuum_enabled = off);
CREATE TABLE with_extended (a int, b int) WITH (autovacuum_enabled = off);
CREATE STATISTICS with_extended_ab ON a, b FROM with_extended;
CREATE TABLE "Weird.Name*" (id int, tag text) WITH (autovacuum_enabled = off);
CREATE TABLE weird_name (id int, tag text) WITH (autovacuum_enabled = off);
"""
DATA_SQL = """
INSERT INTO prices SELECT g, 'SYM' || (g % 40), (g % 997) / 7.0 FROM generate_series(1, 20000) g;
INSERT INTO never_analyzed SELECT g, md5(g::text) FROM generate_series(1, 500) g;
INSERT INTO with_extended SELECT g % 10, g % 10 FROM generate_series(1, 1000) g;
INSERT INTO "Weird.Name*" SELECT g, 'w' || (g % 3) FROM generate_series(1, 300) g;
INSERT INTO weird_name SELECT g, 'x' FROM generate_series(1, 300) g;
"""
ANALYZED = ("prices", "with_extended", "Weird.Name*", "weird_name")
PUBLIC = "public"


def _table(name: str) -> TableName:
    return TableName(PUBLIC, name)


def _stats(url: DatabaseUrl, relname: str) -> list[tuple[object, ...]]:
    with connection(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT attname, null_frac, n_distinct, most_common_vals::text, histogram_bounds::text "
            "FROM pg_stats WHERE schemaname = 'public' AND tablename = %s ORDER BY attname",
            (relname,),
        ).fetchall()


def _analyzed_here(url: DatabaseUrl) -> set[str]:
    with connection(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        rows = conn.execute("SELECT relname FROM pg_stat_user_tables WHERE analyze_count > 0").fetchall()
    return {r[0] for r in rows}


def _prepare(databases: Databases) -> None:
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)  # type: ignore[arg-type]
        conn.execute(DATA_SQL)  # type: ignore[arg-type]
        for name in ANALYZED:
            conn.execute(f'ANALYZE "{name}"')  # type: ignore[arg-type]  # fixed names of this test
    with connection(databases.core, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)  # type: ignore[arg-type]
        conn.execute(DATA_SQL)  # type: ignore[arg-type]


def test_the_targets_get_the_sources_statistics_without_analyze(databases: Databases) -> None:
    _prepare(databases)
    tables = [_table(n) for n in ("prices", "never_analyzed", "with_extended", "Weird.Name*")]
    script = dump_statistics(databases.source, tables, bin_dir=pg_bin_dir(18))
    assert "weird_name'" not in script  # the pattern matched "Weird.Name*" only

    outcome = refresh_statistics(databases.core, tables, script, workers=2)

    # The source's statistics, exactly (a fresh ANALYZE samples anew and would differ).
    assert _stats(databases.core, "prices") == _stats(databases.source, "prices")
    assert _stats(databases.core, "Weird.Name*") == _stats(databases.source, "Weird.Name*")
    assert _stats(databases.core, "prices")  # not vacuously equal
    # The expression index's statistics came along.
    with connection(databases.core, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'prices_lower_symbol'").fetchone()
    assert row is not None and row[0] == 1
    # What the source could not give was analyzed here: never analyzed there; extended statistics.
    assert sorted(t.name for t in outcome.imported) == ["Weird.Name*", "prices"]
    assert sorted(t.name for t in outcome.analyzed) == ["never_analyzed", "with_extended"]
    assert _analyzed_here(databases.core) == {"never_analyzed", "with_extended"}
    assert _stats(databases.core, "never_analyzed")
    assert "weird_name" not in {t.name for t in outcome.imported + outcome.analyzed}


def test_without_a_statistics_script_every_table_is_analyzed(databases: Databases) -> None:
    """pg_dump 16 cannot export statistics: the target gets ANALYZE, as before PostgreSQL 18."""
    _prepare(databases)
    tables = [_table("prices"), _table("never_analyzed")]
    assert dump_statistics(databases.source, tables, bin_dir=pg_bin_dir(16)) == ""

    outcome = refresh_statistics(databases.core, tables, "", workers=1)

    assert sorted(t.name for t in outcome.analyzed) == ["never_analyzed", "prices"]
    assert outcome.imported == [] and "pg_dump older than 18" in outcome.reason
    assert _analyzed_here(databases.core) == {"never_analyzed", "prices"}
