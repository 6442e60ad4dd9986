"""The demo source builder against a real PostgreSQL 18 + pgvector server.

One build at scale 0.1 is shared by the read-only checks; determinism, reset and scaling make their
own databases. Nothing is mocked: each check reads the catalog or the rows the builder wrote.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dual_db.db.connect import connection
from dual_db.db.urls import DatabaseUrl
from dual_db.demo import (
    DemoSourceExists,
    DemoSourceSummary,
    build_demo_source,
    demo_table_names,
)
from dual_db.embedded import EmbeddedCluster
from dual_db.routing import DEFAULT_PLAN_FILE, RoutingPlan

SCALE = 0.1
SEED = 7

# The routing plan file lists the migration plan's "Table Distribution" (40 core incl. alembic_version,
# 3 AI): the demo must build exactly the tables the default plan routes.
_PLAN = RoutingPlan.load(DEFAULT_PLAN_FILE)
PLAN_CORE_TABLES = {t.name for t in _PLAN.core} - {"alembic_version"}
PLAN_AI_TABLES = {"ai_kb_documents", "ai_memories", "ai_feedback"}

_names = itertools.count()
DatabaseMaker = Callable[[], DatabaseUrl]


@pytest.fixture(scope="module")
def make_database(servers: EmbeddedCluster) -> Iterator[DatabaseMaker]:
    """Module-scoped databases on the source server (conftest's `new_database` is per test)."""
    server = servers["source"]
    created: list[str] = []

    def make() -> DatabaseUrl:
        name = f"demo_src_{os.getpid()}_{next(_names)}"
        server.drop_database(name)
        server.ensure_database(name)
        created.append(name)
        return server.url(name)

    yield make
    for name in created:
        server.drop_database(name)


@pytest.fixture(scope="module")
def demo(make_database: DatabaseMaker) -> tuple[DatabaseUrl, DemoSourceSummary]:
    url = make_database()
    return url, build_demo_source(url, scale=SCALE, seed=SEED)


@pytest.fixture(scope="module")
def same_seed_twin(make_database: DatabaseMaker) -> DatabaseUrl:
    url = make_database()
    build_demo_source(url, scale=SCALE, seed=SEED)
    return url


def _scalar(conn: psycopg.Connection, query: sql.Composable | str, params: tuple[object, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _count(conn: psycopg.Connection, table: str) -> int:
    return int(_scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))))


def _fingerprint(url: DatabaseUrl, tables: list[str]) -> dict[str, str]:
    """md5 of each table's rows in text form, in a fixed order."""
    out = {}
    with connection(url) as conn:
        for table in tables:
            out[table] = str(
                _scalar(
                    conn,
                    sql.SQL("SELECT md5(string_agg(t::text, E'\\n' ORDER BY t::text)) FROM {} AS t").format(
                        sql.Identifier(table)
                    ),
                )
            )
    return out


FINGERPRINT_TABLES = [
    "users",
    "positions",
    "market_data_cache",
    "agent_messages",
    "ai_kb_documents",
    "ai_feedback",
]


# ---- tables and rows -----------------------------------------------------------------------------


def test_table_names_match_the_plan() -> None:
    core, ai = demo_table_names()
    assert set(core) == PLAN_CORE_TABLES | {"alembic_version"}
    assert len(core) == len(set(core)) == 40
    assert set(ai) == PLAN_AI_TABLES


def test_every_listed_table_exists_with_the_reported_rows(
    demo: tuple[DatabaseUrl, DemoSourceSummary],
) -> None:
    url, summary = demo
    core, ai = demo_table_names()
    with connection(url) as conn:
        present = {
            str(r[0])
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
            )
        }
        assert set(core + ai) <= present
        for table in core + ai:
            rows = _count(conn, table)
            assert rows > 0, table
            assert summary.row_counts[table] == rows, table
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        sizes = int(
            _scalar(
                conn,
                "SELECT sum(pg_total_relation_size(format('public.%%I', t)::regclass))"
                " FROM unnest(%s::text[]) t",
                (core + ai,),
            )
        )
    assert len(versions) == 1 and len(versions[0][0]) == 12
    assert summary.total_bytes == sum(summary.table_bytes.values()) == sizes
    assert summary.seconds > 0


def test_tiny_scale_still_populates_every_table(make_database: DatabaseMaker) -> None:
    summary = build_demo_source(make_database(), scale=0.001, seed=3)
    core, ai = demo_table_names()
    assert summary.row_counts["alembic_version"] == 1
    thin = {t: n for t, n in summary.row_counts.items() if t != "alembic_version" and n < 3}
    assert not thin
    assert set(summary.row_counts) == set(core + ai)


def test_size_grows_linearly_with_scale(
    demo: tuple[DatabaseUrl, DemoSourceSummary], make_database: DatabaseMaker
) -> None:
    _, small = demo
    double = build_demo_source(make_database(), scale=2 * SCALE, seed=SEED)
    for table in ("market_data_cache", "ai_kb_documents", "position_factor_exposures", "portfolio_snapshots"):
        ratio = double.row_counts[table] / small.row_counts[table]
        assert 1.5 < ratio < 2.6, (table, ratio)
    assert 1.4 < double.total_bytes / small.total_bytes < 2.4


# ---- references ---------------------------------------------------------------------------------------


def test_foreign_keys_form_the_graph_and_have_no_orphans(demo: tuple[DatabaseUrl, DemoSourceSummary]) -> None:
    url, _ = demo
    with connection(url) as conn:
        fks = conn.execute(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text, c.convalidated,"
            " array_agg(a.attname ORDER BY k.n), array_agg(f.attname ORDER BY k.n)"
            " FROM pg_constraint c"
            " CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(child, parent, n)"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.child"
            " JOIN pg_attribute f ON f.attrelid = c.confrelid AND f.attnum = k.parent"
            " WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace"
            " GROUP BY c.oid, c.conrelid, c.confrelid, c.convalidated"
        ).fetchall()
        edges = {(child, parent) for child, parent, *_ in fks}
        for expected in [
            ("portfolios", "users"),
            ("positions", "portfolios"),
            ("position_greeks", "positions"),
            ("position_factor_exposures", "factor_definitions"),
            ("position_tags", "tags_v2"),
            ("position_tags", "positions"),
            ("portfolio_snapshots", "portfolios"),
            ("agent_messages", "agent_conversations"),
            ("pairwise_correlations", "correlation_calculations"),
            ("correlation_clusters", "correlation_calculations"),
            ("correlation_cluster_positions", "correlation_clusters"),
            ("stress_test_results", "stress_test_scenarios"),
            ("income_statements", "company_profiles"),
        ]:
            assert expected in edges
        assert len(fks) >= 15
        for child, parent, validated, child_cols, parent_cols in fks:
            assert validated, (child, parent)
            match = sql.SQL(" AND ").join(
                sql.SQL("p.{} = c.{}").format(sql.Identifier(pc), sql.Identifier(cc))
                for cc, pc in zip(child_cols, parent_cols, strict=True)
            )
            present = sql.SQL(" AND ").join(
                sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(cc)) for cc in child_cols
            )
            orphans = _scalar(
                conn,
                sql.SQL(
                    "SELECT count(*) FROM {child} c WHERE {present} AND NOT EXISTS "
                    "(SELECT 1 FROM {parent} p WHERE {match})"
                ).format(
                    child=sql.Identifier(child), parent=sql.Identifier(parent), present=present, match=match
                ),
            )
            assert orphans == 0, (child, parent)
            referencing = _scalar(
                conn, sql.SQL("SELECT count(*) FROM {} c WHERE {}").format(sql.Identifier(child), present)
            )
            if child_cols[0] in ("user_id", "portfolio_id", "position_id", "conversation_id"):
                assert int(referencing) > 0, (child, child_cols)


def test_ai_tables_use_soft_references_that_all_resolve(demo: tuple[DatabaseUrl, DemoSourceSummary]) -> None:
    url, _ = demo
    with connection(url) as conn:
        ai_fks = _scalar(
            conn,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
            " AND (conrelid::regclass::text = ANY(%s) OR confrelid::regclass::text = ANY(%s))",
            (sorted(PLAN_AI_TABLES), sorted(PLAN_AI_TABLES)),
        )
        assert ai_fks == 0
        memories_with_user = _scalar(conn, "SELECT count(*) FROM ai_memories WHERE user_id IS NOT NULL")
        memory_orphans = _scalar(
            conn,
            "SELECT count(*) FROM ai_memories m WHERE m.user_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.user_id)",
        )
        feedback_orphans = _scalar(
            conn,
            "SELECT count(*) FROM ai_feedback f"
            " WHERE NOT EXISTS (SELECT 1 FROM agent_messages m WHERE m.id = f.message_id)",
        )
        feedback_on_assistant = _scalar(
            conn,
            "SELECT bool_and(m.role = 'assistant')"
            " FROM ai_feedback f JOIN agent_messages m ON m.id = f.message_id",
        )
    assert int(memories_with_user) > 0
    assert memory_orphans == 0
    assert feedback_orphans == 0
    assert feedback_on_assistant is True


def test_every_sequence_is_past_its_rows(demo: tuple[DatabaseUrl, DemoSourceSummary]) -> None:
    url, _ = demo
    with connection(url) as conn:
        owned = conn.execute(
            "SELECT t.relname, a.attname, s.oid::regclass::text, d.deptype"
            " FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
            " JOIN pg_class t ON t.oid = d.refobjid"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid"
            " WHERE d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')"
        ).fetchall()
        assert {(t, kind) for t, _, _, kind in owned} >= {
            ("market_data_cache", "a"),
            ("batch_run_tracking", "i"),
        }
        for table, column, sequence, _ in owned:
            last = _scalar(
                conn,
                "SELECT last_value FROM pg_sequences WHERE format('%%I.%%I', schemaname,"
                " sequencename)::regclass = %s::regclass",
                (sequence,),
            )
            top = _scalar(
                conn, sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), sql.Identifier(table))
            )
            assert last is not None and top is not None
            assert int(last) >= int(top), (table, last, top)


# ---- pgvector ------------------------------------------------------------------------------------------


def test_hnsw_index_is_the_plans_and_the_planner_uses_it(demo: tuple[DatabaseUrl, DemoSourceSummary]) -> None:
    url, _ = demo
    with connection(url) as conn:
        definition = str(
            _scalar(
                conn, "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_ai_kb_documents_embedding_hnsw'"
            )
        )
        assert "USING hnsw (embedding vector_cosine_ops)" in definition
        assert "m='16'" in definition and "ef_construction='64'" in definition
        probe = str(
            _scalar(
                conn,
                "SELECT embedding::text FROM ai_kb_documents WHERE embedding IS NOT NULL ORDER BY id LIMIT 1",
            )
        )
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            str(r[0])
            for r in conn.execute(
                sql.SQL(
                    "EXPLAIN SELECT id FROM ai_kb_documents ORDER BY embedding <=> {}::vector LIMIT 10"
                ).format(sql.Literal(probe))
            )
        )
        dims = _scalar(
            conn, "SELECT DISTINCT vector_dims(embedding) FROM ai_kb_documents WHERE embedding IS NOT NULL"
        )
        norms = conn.execute(
            "SELECT min(vector_norm(embedding)), max(vector_norm(embedding)) FROM ai_kb_documents"
        ).fetchone()
        nulls, total = conn.execute(
            "SELECT count(*) FILTER (WHERE embedding IS NULL), count(*) FROM ai_kb_documents"
        ).fetchone() or (0, 0)
    assert "ix_ai_kb_documents_embedding_hnsw" in plan
    assert dims == 1536
    assert (
        norms is not None
        and math.isclose(norms[0], 1, abs_tol=1e-3)
        and math.isclose(norms[1], 1, abs_tol=1e-3)
    )
    assert 0 < nulls < 0.06 * total


# ---- content ------------------------------------------------------------------------------------------


def test_text_is_unicode_and_large_enough_to_toast(demo: tuple[DatabaseUrl, DemoSourceSummary]) -> None:
    url, _ = demo
    emoji = f"[{chr(0x1F300)}-{chr(0x1FAFF)}]"
    cjk = f"[{chr(0x4E00)}-{chr(0x9FFF)}]"
    with connection(url) as conn:
        assert int(_scalar(conn, "SELECT count(*) FROM agent_messages WHERE content ~ %s", (emoji,))) > 0
        assert int(_scalar(conn, "SELECT count(*) FROM ai_kb_documents WHERE content ~ %s", (cjk,))) > 0
        assert (
            int(_scalar(conn, "SELECT count(*) FROM users WHERE octet_length(full_name) > length(full_name)"))
            > 0
        )
        long_messages = _scalar(conn, "SELECT count(*) FROM agent_messages WHERE length(content) > 2500")
        toast_pages = _scalar(
            conn,
            "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'agent_messages'::regclass",
        )
        kb_min = _scalar(conn, "SELECT min(length(content)) FROM ai_kb_documents")
        nullable_nulls = _scalar(conn, "SELECT count(*) FROM positions WHERE notes IS NULL")
        arrays = _scalar(conn, "SELECT count(*) FROM batch_run_tracking WHERE cardinality(errors) > 0")
        tricky = _scalar(
            conn,
            "SELECT count(*) FROM batch_run_tracking WHERE %s = ANY(errors)",
            ('quote "stale", retried {3} times, gave up',),
        )
    assert int(long_messages) > 0 and int(toast_pages) > 0
    assert int(kb_min) >= 1500
    assert int(nullable_nulls) > 0
    assert int(arrays) > 0 and int(tricky) > 0


def test_schema_has_the_features_a_split_must_carry(demo: tuple[DatabaseUrl, DemoSourceSummary]) -> None:
    url, _ = demo
    with connection(url) as conn:
        enum_columns = conn.execute(
            "SELECT DISTINCT t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE t.typtype = 'e' AND c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
        ).fetchall()
        types = {
            str(r[0])
            for r in conn.execute(
                "SELECT DISTINCT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
                " JOIN pg_class c ON c.oid = a.attrelid"
                " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0"
            )
        }
        kinds = dict(
            conn.execute(
                "SELECT contype::text, count(*) FROM pg_constraint"
                " WHERE connamespace = 'public'::regnamespace GROUP BY contype"
            ).fetchall()
        )
        comments = _scalar(
            conn,
            "SELECT count(*) FROM pg_description d JOIN pg_class c ON c.oid = d.objoid"
            " WHERE d.objsubid = 0 AND c.relnamespace = 'public'::regnamespace",
        )
        function_defaults = _scalar(
            conn,
            "SELECT count(*) FROM pg_attrdef WHERE pg_get_expr(adbin, adrelid)"
            " IN ('gen_random_uuid()', 'now()')",
        )
        secondary = _scalar(
            conn,
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
            " WHERE c.relnamespace = 'public'::regnamespace"
            " AND NOT i.indisprimary AND NOT i.indisunique",
        )
        # The trigger must fire: updated_at moves to now() on UPDATE. Rolled back: the build is shared.
        with conn.transaction(force_rollback=True):
            before, after = conn.execute(
                "WITH p AS (SELECT id, updated_at FROM portfolios ORDER BY id LIMIT 1)"
                " UPDATE portfolios SET name = name || ' ✓' FROM p WHERE portfolios.id = p.id"
                " RETURNING p.updated_at, portfolios.updated_at"
            ).fetchone() or (None, None)
            now = _scalar(conn, "SELECT now()")
    assert len(enum_columns) >= 2
    for expected in (
        "uuid",
        "jsonb",
        "text[]",
        "bytea",
        "inet",
        "interval",
        "date",
        "bigint",
        "timestamp with time zone",
        "numeric(16,2)",
        "vector(1536)",
        "character(3)",
    ):
        assert expected in types, expected
    assert kinds["c"] >= 10 and kinds["u"] >= 10 and kinds["f"] >= 15 and kinds["p"] == 43
    assert int(comments) >= 2
    assert int(function_defaults) >= 40
    assert int(secondary) >= 10
    assert before is not None and after == now and after != before


# ---- determinism and reset ---------------------------------------------------------------------------


def test_same_seed_builds_identical_content(
    demo: tuple[DatabaseUrl, DemoSourceSummary], same_seed_twin: DatabaseUrl
) -> None:
    url, _ = demo
    assert _fingerprint(url, FINGERPRINT_TABLES) == _fingerprint(same_seed_twin, FINGERPRINT_TABLES)


def test_another_seed_builds_different_content(
    demo: tuple[DatabaseUrl, DemoSourceSummary], make_database: DatabaseMaker
) -> None:
    url, _ = demo
    other = make_database()
    build_demo_source(other, scale=SCALE, seed=SEED + 1)
    ours, theirs = _fingerprint(url, FINGERPRINT_TABLES), _fingerprint(other, FINGERPRINT_TABLES)
    assert all(ours[t] != theirs[t] for t in FINGERPRINT_TABLES)


def test_rebuild_needs_reset_and_reset_rebuilds_the_same(same_seed_twin: DatabaseUrl) -> None:
    url = same_seed_twin
    before = _fingerprint(url, FINGERPRINT_TABLES)
    with connection(url) as conn:
        counts_before = {t: _count(conn, t) for names in demo_table_names() for t in names}
    with connection(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE unrelated_keep_me (id int)")
    with pytest.raises(DemoSourceExists, match="--reset"):
        build_demo_source(url, scale=SCALE, seed=SEED)
    with connection(url) as conn:
        # Refusing must not have added a single row anywhere.
        assert {t: _count(conn, t) for t in counts_before} == counts_before
    summary = build_demo_source(url, scale=SCALE, seed=SEED, reset=True)
    assert summary.row_counts == counts_before
    assert _fingerprint(url, FINGERPRINT_TABLES) == before
    with connection(url) as conn:
        assert _scalar(conn, "SELECT to_regclass('public.unrelated_keep_me') IS NOT NULL") is True


@pytest.mark.parametrize("scale", [0, -1, float("nan"), float("inf")])
def test_rejects_nonsense_scale(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        build_demo_source(DatabaseUrl.parse("postgresql://nobody@127.0.0.1:1/none"), scale=scale)
