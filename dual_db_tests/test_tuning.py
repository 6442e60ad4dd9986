"""`core/tuning`, `ai/tuning`: the plan's settings applied, and reported as they really are afterwards.

ALTER SYSTEM changes a whole server, so every test here runs on a dedicated embedded server (started
with `shared_buffers = 128MB`, so that both files' values differ from the running one), reset before
each test; the shared session servers are never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import dagster as dg
import pytest
from psycopg import sql

from dual_db.db.connect import connection
from dual_db.db.urls import DatabaseUrl
from dual_db.definitions import build_definitions
from dual_db.defs.constants import AI_TUNING, CORE_TUNING, MIGRATE_JOB, VERIFY_JOB
from dual_db.defs.resources import AiDatabase, CoreDatabase
from dual_db.defs.tuning.assets import tuning_assets
from dual_db.embedded import EmbeddedServer
from dual_db.routing import RoutingPlan
from dual_db.tune.apply import (
    Scope,
    Status,
    TuningError,
    apply_tuning,
    load_tuning_file,
    rejected_error,
    tuning_statements,
)
from dual_db_tests.test_migrate_job import environment as environment  # a fixture


@pytest.fixture(scope="module")
def tuning_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(
        name="tuning", root=tmp_path_factory.mktemp("tuning"), settings={"shared_buffers": "128MB"}
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(tuning_server: EmbeddedServer) -> EmbeddedServer:
    """The dedicated server with no ALTER SYSTEM setting left by an earlier test."""
    with connection(tuning_server.url(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM RESET ALL")
        conn.execute("SELECT pg_reload_conf()")
    return tuning_server


@pytest.fixture
def tuning_db(server: EmbeddedServer) -> Iterator[DatabaseUrl]:
    server.drop_database("tuned")
    server.ensure_database("tuned")
    yield server.url("tuned")
    server.drop_database("tuned")


def _ai_database(url: DatabaseUrl) -> None:
    with connection(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE ai_memories (id int PRIMARY KEY, embedding vector(3))")
        conn.execute(
            "INSERT INTO ai_memories SELECT i, ARRAY[i, i * 2, 1]::vector FROM generate_series(1, 50) i"
        )
        conn.execute("CREATE INDEX ON ai_memories USING hnsw (embedding vector_cosine_ops)")


def test_the_shipped_files_set_the_plans_values() -> None:
    core = {s.name: (s.scope, s.value) for s in load_tuning_file("core")}
    ai = {s.name: (s.scope, s.value) for s in load_tuning_file("ai")}
    assert core == {
        "shared_buffers": (Scope.SYSTEM, "256MB"),
        "work_mem": (Scope.SYSTEM, "64MB"),
        "effective_cache_size": (Scope.SYSTEM, "768MB"),
        "random_page_cost": (Scope.SYSTEM, "1.1"),
        "max_parallel_workers_per_gather": (Scope.SYSTEM, "2"),
    }
    assert ai == {
        "shared_buffers": (Scope.SYSTEM, "512MB"),
        "work_mem": (Scope.SYSTEM, "256MB"),
        "effective_cache_size": (Scope.SYSTEM, "1GB"),
        "maintenance_work_mem": (Scope.SYSTEM, "256MB"),
        # Not in the plan: without it the RAG query of the demo's knowledge base is a sequential scan
        # (test_ai_tuning_puts_the_demo_knowledge_base_rag_query_on_its_hnsw_index).
        "random_page_cost": (Scope.SYSTEM, "1.1"),
        # The plan's session-only `SET hnsw.ef_search` made a database setting.
        "hnsw.ef_search": (Scope.DATABASE, "100"),
    }


@pytest.mark.parametrize(
    ("script", "named"),
    [
        ("SELECT pg_reload_conf();", "SELECT pg_reload_conf()"),
        ("SET hnsw.ef_search = 100;", "SET hnsw.ef_search = 100"),
        ("ALTER SYSTEM RESET work_mem;", "ALTER SYSTEM RESET work_mem"),
        ("ALTER SYSTEM SET work_mem = '1MB'; ALTER SYSTEM SET work_mem = '2MB';", "set twice: work_mem"),
    ],
)
def test_a_tuning_file_holds_only_settings(script: str, named: str) -> None:
    with pytest.raises(TuningError, match=named.replace("(", r"\(").replace(")", r"\)")):
        tuning_statements(script)


def test_core_settings_before_and_after_with_shared_buffers_pending_restart(tuning_db: DatabaseUrl) -> None:
    report = apply_tuning(tuning_db, load_tuning_file("core"))
    settings = report.by_name()
    assert report.reloaded
    # shared_buffers is read at start only: the server took 256MB, and runs with 128MB until restarted.
    buffers = settings["shared_buffers"]
    assert buffers.status is Status.PENDING_RESTART
    assert (buffers.before.shown, buffers.after.shown, buffers.after.pending_restart) == (
        "128MB",
        "128MB",
        True,
    )
    work_mem = settings["work_mem"]
    assert (work_mem.before.shown, work_mem.after.shown, work_mem.status) == ("4MB", "64MB", Status.APPLIED)
    assert work_mem.after.source == "configuration file"
    assert work_mem.numeric_after() == 64 * 1024  # kB
    assert (settings["effective_cache_size"].after.shown, settings["effective_cache_size"].status) == (
        "768MB",
        Status.APPLIED,
    )
    assert (settings["random_page_cost"].before.shown, settings["random_page_cost"].after.shown) == (
        "4",
        "1.1",
    )
    assert settings["max_parallel_workers_per_gather"].status is Status.APPLIED
    assert report.counts()[Status.APPLIED] == 4
    markdown = report.markdown()
    assert "| shared_buffers | system | 256MB | 128MB | 128MB |" in markdown
    assert "pending restart: 256MB once the server restarts" in markdown
    # Read independently, in yet another session: what the report says is what sessions get.
    with connection(tuning_db) as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("64MB",)
        assert conn.execute("SHOW shared_buffers").fetchone() == ("128MB",)


def test_a_database_setting_that_overrides_the_server_is_reported_not_in_effect(
    tuning_db: DatabaseUrl,
) -> None:
    with connection(tuning_db, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET work_mem = '8MB'").format(sql.Identifier("tuned")))
    work_mem = apply_tuning(tuning_db, load_tuning_file("core")).by_name()["work_mem"]
    assert work_mem.status is Status.NOT_IN_EFFECT
    assert (work_mem.after.shown, work_mem.after.source) == ("8MB", "database")
    assert "a new session sees 8MB (source: database)" in work_mem.detail


def test_ai_tuning_asset_sets_ef_search_for_every_new_session(
    tuning_db: DatabaseUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ai_database(tuning_db)
    monkeypatch.setenv("AI_DATABASE_URL", tuning_db.uri())
    monkeypatch.setenv("CORE_DATABASE_URL", tuning_db.with_dbname("postgres").uri())
    (ai_tuning,) = [a for a in tuning_assets if a.key == AI_TUNING]
    result = dg.materialize(
        [ai_tuning], resources={"core": CoreDatabase(), "ai": AiDatabase()}, raise_on_error=False
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    (materialization,) = result.asset_materializations_for_node(ai_tuning.node_def.name)
    metadata = materialization.metadata
    assert metadata["summary"].value.endswith(
        "6 settings on " + tuning_db.masked() + ": 5 applied, 1 pending restart"
    )
    table = metadata["settings"].value
    assert "| hnsw.ef_search | database | 100 | 40 | 100 | database | applied |" in table
    assert "| shared_buffers | system | 512MB | 128MB | 128MB |" in table
    assert metadata["work_mem [kB]"].value == 256 * 1024
    assert metadata["maintenance_work_mem [kB]"].value == 256 * 1024
    assert metadata["settings pending restart"].value == 1
    # A new session of the AI database: pgvector's library loaded by a vector search, ef_search is 100
    # without anyone running SET.
    with connection(tuning_db) as conn:
        conn.execute("SET enable_seqscan = off")
        nearest = conn.execute(
            "SELECT id FROM ai_memories ORDER BY embedding <=> '[1,2,1]' LIMIT 3"
        ).fetchall()
        assert len(nearest) == 3
        assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("100",)
        assert conn.execute(
            "SELECT setting, source FROM pg_settings WHERE name = 'hnsw.ef_search'"
        ).fetchone() == ("100", "database")
    # Another database on the same server is not affected by the database setting.
    with connection(tuning_db.with_dbname("postgres")) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("SELECT '[1]'::vector")
        assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("40",)
        conn.execute("DROP EXTENSION vector")
        conn.commit()


def test_a_database_owner_without_superuser_gets_not_permitted_and_the_rest_applied(
    server: EmbeddedServer,
) -> None:
    role, password = "tuning_owner", "Tuning-Owner-Pass-1"
    admin = server.url()
    with connection(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS tuned_by_owner WITH (FORCE)"))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(sql.SQL("CREATE DATABASE tuned_by_owner OWNER {}").format(sql.Identifier(role)))
    try:
        _ai_database(admin.with_dbname("tuned_by_owner"))
        owner = replace(admin, user=role, password=password, dbname="tuned_by_owner")
        report = apply_tuning(owner, load_tuning_file("ai"))
        settings = report.by_name()
        for name in (
            "shared_buffers",
            "work_mem",
            "effective_cache_size",
            "maintenance_work_mem",
            "random_page_cost",
        ):
            assert settings[name].status is Status.NOT_PERMITTED, settings[name]
            assert settings[name].detail == f'permission denied to set parameter "{name}"'
            assert settings[name].before.shown == settings[name].after.shown
        assert settings["hnsw.ef_search"].status is Status.APPLIED
        assert not report.reloaded  # nothing server-wide was changed: no reload needed (nor permitted)
        assert report.summary().endswith("1 applied, 5 not permitted")
        with connection(owner) as conn:
            assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("100",)
    finally:
        with connection(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS tuned_by_owner WITH (FORCE)"))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_rejected_value_is_one_line_after_the_others_are_applied(tuning_db: DatabaseUrl) -> None:
    statements = tuning_statements(
        "ALTER SYSTEM SET work_mem = '12MB'; ALTER SYSTEM SET random_page_cost = 'fast';"
    )
    report = apply_tuning(tuning_db, statements)
    settings = report.by_name()
    assert settings["work_mem"].status is Status.APPLIED
    assert settings["random_page_cost"].status is Status.REJECTED
    assert 'invalid value for parameter "random_page_cost"' in settings["random_page_cost"].detail
    error = rejected_error(report)
    assert error is not None and "\n" not in str(error)
    assert "the server rejected random_page_cost = fast (" in str(error)


def test_an_alter_database_names_the_tuned_database(tuning_db: DatabaseUrl) -> None:
    statements = tuning_statements("ALTER DATABASE railway SET hnsw.ef_search = 100;")
    with pytest.raises(TuningError, match=r"names target_database .*here tuned.*not railway"):
        apply_tuning(tuning_db, statements)


def test_migrate_and_verify_never_tune(environment: object) -> None:
    defs = build_definitions(RoutingPlan.load())
    graph = defs.resolve_asset_graph()
    tuning = {CORE_TUNING, AI_TUNING}
    assert tuning <= graph.get_all_asset_keys()
    for job in (MIGRATE_JOB, VERIFY_JOB):
        selected = defs.resolve_job_def(job).asset_layer.executable_asset_keys
        assert selected and not selected & tuning, job
    # And a real migrate run materializes neither.
    with dg.DagsterInstance.ephemeral() as instance:
        from dual_db_tests.job_support import run_job

        result = run_job(MIGRATE_JOB, instance)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        materialized = {m.asset_key for m in result.get_asset_materialization_events() if m.asset_key}
        assert materialized and not materialized & tuning
        assert instance.get_latest_materialization_event(AI_TUNING) is None


def test_core_tuning_asset_fails_in_one_line_when_the_server_rejects_a_value(
    tuning_db: DatabaseUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistake in the file (a value the server refuses) fails the asset with one line naming it,
    after the other settings were applied; a setting not permitted would not fail it."""
    import dual_db.defs.tuning.assets as tuning_module

    script = "ALTER SYSTEM SET work_mem = '12MB'; ALTER SYSTEM SET random_page_cost = 'fast';"
    monkeypatch.setattr(tuning_module, "load_tuning_file", lambda target: tuning_statements(script))
    monkeypatch.setenv("CORE_DATABASE_URL", tuning_db.uri())
    monkeypatch.setenv("AI_DATABASE_URL", tuning_db.with_dbname("postgres").uri())
    (core_tuning,) = [a for a in tuning_assets if a.key == CORE_TUNING]
    result = dg.materialize(
        [core_tuning], resources={"core": CoreDatabase(), "ai": AiDatabase()}, raise_on_error=False
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    user_failure = failure.step_failure_data.user_failure_data
    assert user_failure is not None and user_failure.description is not None
    assert "\n" not in user_failure.description
    assert user_failure.description.startswith(
        f"{tuning_db.masked()}: the server rejected random_page_cost = fast ("
    )
    with connection(tuning_db) as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("12MB",)


def _demo_knowledge_base(url: DatabaseUrl) -> str:
    """The demo's `ai_kb_documents` at scale 1 (its own generator and DDL: 3000 documents, 1536-dim
    embeddings TOASTed out of line, 3% without one) with its HNSW index; returns a query embedding."""
    from pgvector.psycopg import register_vector

    from dual_db.db.sql_files import sql_file
    from dual_db.demo.source import _KB_COLUMNS, _DemoData

    schema = sql_file("demo_source", "schema.sql").read_text()
    start = schema.index("CREATE TABLE ai_kb_documents")
    with connection(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute(schema[start : schema.index(");", start) + 2])  # type: ignore[arg-type]
        columns = sql.SQL(", ").join(map(sql.Identifier, _KB_COLUMNS))
        with conn.cursor().copy(sql.SQL("COPY ai_kb_documents ({}) FROM STDIN").format(columns)) as copy:
            for row in _DemoData(seed=42, scale=1.0).ai_kb_documents():
                copy.write_row(row)
        conn.execute(
            "CREATE INDEX ix_ai_kb_documents_embedding_hnsw ON ai_kb_documents "
            "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        conn.execute("VACUUM ANALYZE ai_kb_documents")
        row = conn.execute(
            "SELECT embedding::text FROM ai_kb_documents WHERE embedding IS NOT NULL "
            "ORDER BY id OFFSET 17 LIMIT 1"
        ).fetchone()
    assert row is not None
    return str(row[0])


def _rag_plan(url: DatabaseUrl, embedding: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the workload's RAG query in a new session at pgvector's default
    ef_search (what a session gets that sets its own, or before the tuning)."""
    from dual_db.db.sql_files import sql_file

    query = sql_file("workload", "rag.sql").read_text()
    with connection(url) as conn:
        conn.execute("SET hnsw.ef_search = 40")
        conn.execute(sql.SQL("PREPARE rag(vector) AS {}").format(sql.SQL(query)))  # type: ignore[arg-type]
        explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) EXECUTE rag({})").format(sql.Literal(embedding))
        rows = conn.execute(explain).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def _shared_buffers(plan: str) -> int:
    line = next(line for line in plan.splitlines() if "Buffers: shared" in line)
    return sum(int(part.split("=")[1]) for part in line.split(":")[1].split() if "=" in part)


@pytest.mark.slow
def test_ai_tuning_puts_the_demo_knowledge_base_rag_query_on_its_hnsw_index(tuning_db: DatabaseUrl) -> None:
    """PostgreSQL's seq-scan cost counts the heap's pages, not the TOASTed embeddings the distance reads:
    at random_page_cost 4 the planner answers the RAG query over the demo's 3000 documents by a
    sequential scan reading ~21,000 buffers (the soak's rag_index_used = 0, issue 18 #10). ai.sql's
    random_page_cost = 1.1 (the core's value; the AI database is on the same SSDs) puts it on the index."""
    embedding = _demo_knowledge_base(tuning_db)
    before = _rag_plan(tuning_db, embedding)
    assert "Seq Scan on ai_kb_documents" in before, before
    tuned = apply_tuning(tuning_db, load_tuning_file("ai")).by_name()
    assert tuned["random_page_cost"].status is Status.APPLIED, tuned["random_page_cost"]
    after = _rag_plan(tuning_db, embedding)
    assert "Index Scan using ix_ai_kb_documents_embedding_hnsw" in after, after
    print(f"RAG query before the AI tuning:\n{before}\nafter:\n{after}")
    assert _shared_buffers(after) * 10 < _shared_buffers(before)
