"""What the routing plan must decide before anything is written (issue 18, defects 2 and 7).

- Large objects: a routed table's `oid` (or `lo`) column holds ids of large objects that no table
  COPY carries. `migrate` refuses before any write, naming the table and column.
- A foreign key across the split: dropping it silently leaves orphans nobody counts. An undeclared one
  is refused by name; once declared under `soft_references`, verify and the soak week count it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.references import SoftReference
from dual_db.definitions import build_definitions
from dual_db.routing import RoutingPlan, accept, discover, propose
from dual_db_tests.conftest import Databases
from dual_db_tests.job_support import migration_environment


@pytest.fixture
def env(databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Databases]:
    migration_environment(monkeypatch, tmp_path, databases.source, databases.core, databases.ai)
    yield databases


def _write_plan(path: Path, text: str) -> RoutingPlan:
    path.write_text(text)
    return RoutingPlan.load(path)


def _run(
    job: str, plan: RoutingPlan, instance: dg.DagsterInstance, selection: list[str] | None = None
) -> dg.ExecuteInProcessResult:
    from dual_db.defs.targets.schema import _split_once

    _split_once.cache_clear()
    return (
        build_definitions(plan)
        .resolve_job_def(job)
        .execute_in_process(
            instance=instance,
            raise_on_error=False,
            asset_selection=[dg.AssetKey.from_user_string(s) for s in selection] if selection else None,
        )
    )


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every failure a user sees: failed steps' messages and failed checks' descriptions."""
    texts = [str(e.message) for e in result.all_events if e.is_failure]
    texts += [
        e.step_failure_data.error.message
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data.error is not None
    ]
    texts += [
        str(e.description) for e in result.get_asset_check_evaluations() if not e.passed and e.description
    ]
    return "\n".join(texts)


def _cli(cwd: Path, *args: str) -> str:
    """`dual-db …` as a user runs it (the URLs from the environment); its standard output."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "dual_db.cli", *args], capture_output=True, text=True, check=True, cwd=cwd
    )
    return done.stdout


def _user_tables(url: object) -> list[str]:
    with connection(url) as conn:  # type: ignore[arg-type]
        return [
            str(r[0])
            for r in conn.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
            )
        ]


# ---- defect 2: large objects ---------------------------------------------------------------------

LARGE_OBJECTS_SQL = """
CREATE EXTENSION vector;
CREATE DOMAIN lo AS oid;  -- what the lo extension defines
CREATE TABLE docs (id int PRIMARY KEY, content oid);
CREATE TABLE scans (id int PRIMARY KEY, image lo, thumbnails oid[]);
CREATE TABLE plain (id int PRIMARY KEY, note text);
CREATE TABLE ai_chunks (id int PRIMARY KEY, embedding vector(3));
CREATE INDEX ON ai_chunks USING hnsw (embedding vector_l2_ops);
INSERT INTO docs SELECT g, lo_from_bytea(0, 'x') FROM generate_series(1, 20) g;
INSERT INTO scans VALUES (1, lo_from_bytea(0, 'image'), NULL);
INSERT INTO plain VALUES (1, 'n');
INSERT INTO ai_chunks VALUES (1, '[1,2,3]');
"""


def test_large_object_columns_are_refused_before_anything_is_written(env: Databases, tmp_path: Path) -> None:
    with connection(env.source, autocommit=True) as conn:
        conn.execute(LARGE_OBJECTS_SQL)  # type: ignore[arg-type]
    plan = _write_plan(tmp_path / "plan.yaml", "core: [docs, scans, plain]\nai: [ai_chunks]\n")
    with dg.DagsterInstance.ephemeral() as instance:
        result = _run("migrate", plan, instance)
        assert not result.success, "migrate copied large-object ids without the large objects"
    text = _failure_text(result)
    assert "docs(content)" in text and "scans(image, thumbnails)" in text, text
    assert "21 large objects" in text and "bytea" in text and "exclude" in text, text
    assert "plain" not in text.split("large object")[0]
    # Nothing was written to either target.
    assert _user_tables(env.core) == [] and _user_tables(env.ai) == []
    # `dual-db plan --discover` says it at plan time.
    out = _cli(tmp_path, "plan", "--discover", "--file", "discovered.yaml")
    assert "migrate refuses until decided: docs(content), scans(image, thumbnails) hold" in out, out

    # The fix the message names: the tables excluded, the rest of the plan is fine.
    from dual_db.split_hazards import split_hazards

    excluded = _write_plan(tmp_path / "plan.yaml", "core: [plain]\nai: [ai_chunks]\nexclude: [docs, scans]\n")
    with connection(env.source, read_only=True) as conn:
        assert split_hazards(conn, excluded) == []
        hazards = split_hazards(conn, plan)
    assert len(hazards) == 1 and hazards[0].startswith("docs(content), scans(image, thumbnails)"), hazards


def test_oid_columns_pass_when_the_source_has_no_large_objects(env: Databases, tmp_path: Path) -> None:
    with connection(env.source, autocommit=True) as conn:
        conn.execute("CREATE TABLE catalog_refs (id int PRIMARY KEY, rel oid)")
        conn.execute("INSERT INTO catalog_refs VALUES (1, 'pg_class'::regclass)")
    plan = _write_plan(tmp_path / "plan.yaml", "core: [catalog_refs]\nai: []\n")
    from dual_db.split_hazards import split_hazards

    with connection(env.source, read_only=True) as conn:
        assert split_hazards(conn, plan) == []


# ---- defect 7: a foreign key from core into AI ---------------------------------------------------

CROSS_FK_SQL = """
CREATE EXTENSION vector;
CREATE TABLE users (id int PRIMARY KEY);
CREATE TABLE ai_kb_documents (id int PRIMARY KEY, embedding vector(3));
CREATE INDEX ON ai_kb_documents USING hnsw (embedding vector_l2_ops);
CREATE TABLE agent_messages (
    id int PRIMARY KEY,
    user_id int REFERENCES users(id),
    doc_id int CONSTRAINT fk_agent_messages_doc REFERENCES ai_kb_documents(id),
    body text
);
INSERT INTO users SELECT g FROM generate_series(1, 5) g;
INSERT INTO ai_kb_documents SELECT g, ARRAY[g, 0, 1]::vector FROM generate_series(1, 10) g;
INSERT INTO agent_messages SELECT g, 1 + g % 5, CASE WHEN g % 4 = 0 THEN NULL ELSE 1 + g % 10 END, 'm'
FROM generate_series(1, 40) g;
-- four orphans, as a load with triggers off leaves them
SET session_replication_role = replica;
INSERT INTO agent_messages SELECT g, 1, 1000 + g, 'orphan' FROM generate_series(41, 44) g;
RESET session_replication_role;
"""
CROSS_PLAN = "core: [users, agent_messages]\nai: [ai_kb_documents]\n"
DECLARED = (
    "soft_references:\n  - {from: agent_messages, columns: [doc_id], to: ai_kb_documents, to_columns: [id]}\n"
)


def _checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def _soft_orphans(evaluation: dg.AssetCheckEvaluation) -> int:
    return int(evaluation.metadata["soft_references"].value["orphan_rows"])  # type: ignore[index]


def test_an_undeclared_foreign_key_from_core_into_ai_is_refused_by_name(
    env: Databases, tmp_path: Path
) -> None:
    with connection(env.source, autocommit=True) as conn:
        conn.execute(CROSS_FK_SQL)  # type: ignore[arg-type]
    plan = _write_plan(tmp_path / "plan.yaml", CROSS_PLAN)
    with dg.DagsterInstance.ephemeral() as instance:
        result = _run("migrate", plan, instance)
        assert not result.success, "the foreign key was dropped without a word"
    text = _failure_text(result)
    assert "fk_agent_messages_doc" in text and "agent_messages(doc_id) -> ai_kb_documents(id)" in text, text
    assert "soft_references" in text and "route" in text, text
    assert _user_tables(env.core) == [] and _user_tables(env.ai) == []
    # A one-asset run skips routing_complete: the schema step refuses by itself, before writing.
    with dg.DagsterInstance.ephemeral() as instance:
        assert _run("migrate", plan, instance, ["source/schema_dump"]).success is False
        alone = _run("migrate", plan, instance, ["core/core_schema"])
    assert not alone.success and "fk_agent_messages_doc" in _failure_text(alone)
    assert _user_tables(env.core) == []


def test_a_declared_foreign_key_across_the_split_is_counted_by_verify_and_watched_by_the_soak(
    env: Databases, tmp_path: Path
) -> None:
    with connection(env.source, autocommit=True) as conn:
        conn.execute(CROSS_FK_SQL)  # type: ignore[arg-type]
    plan = _write_plan(tmp_path / "plan.yaml", CROSS_PLAN + DECLARED)
    soak_config = {"resources": {"soak": {"config": {"workload_runs": 1, "rag_queries": 3}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        migrated = _run("migrate", plan, instance)
        assert migrated.success, _failure_text(migrated)
        # The schema step says, at WARNING, that the key is now a soft reference.
        warnings = [
            e.message
            for e in instance.all_logs(migrated.run_id)
            if e.message and e.level == 30 and "fk_agent_messages_doc" in e.message
        ]
        assert warnings and "soft reference" in warnings[0], warnings
        check = _checks(migrated)[("core/post_data", "foreign_keys_valid")]
        assert _soft_orphans(check) == 4 and "4 orphan rows" in (check.description or "")
        # Counted once: on core, which holds the referencing rows, not again on AI's check.
        ai_check = _checks(migrated)[("ai/vector_indexes", "foreign_keys_valid")]
        assert "soft_references" not in ai_check.metadata, ai_check.description

        verified = _run("verify", plan, instance)
        assert verified.success, _failure_text(verified)
        check = _checks(verified)[("core/post_data", "foreign_keys_valid")]
        assert _soft_orphans(check) == 4, check.description
        assert "agent_messages(doc_id) -> ai_kb_documents(id)" in (check.description or "")

        assert _run("migrate", plan, instance, ["cutover"]).success
        soak = build_definitions(plan).resolve_job_def("soak")
        first = soak.execute_in_process(instance=instance, run_config=soak_config, raise_on_error=False)
        orphans = {e.check_name: e for e in first.get_asset_check_evaluations()}["soft_reference_orphans"]
        assert orphans.passed and "4 orphan rows" in (orphans.description or ""), orphans.description

        # The application writes a fifth dangling reference: core no longer has the key to stop it.
        with connection(env.core, autocommit=True) as conn:
            conn.execute("INSERT INTO agent_messages VALUES (100, 1, 4242, 'dangling')")
        second = soak.execute_in_process(instance=instance, run_config=soak_config, raise_on_error=False)
        orphans = {e.check_name: e for e in second.get_asset_check_evaluations()}["soft_reference_orphans"]
        assert not orphans.passed and "grew from 4 to 5" in (orphans.description or ""), orphans.description


def test_discover_says_which_foreign_key_moves_a_table_and_keeps_a_routed_one(
    databases: Databases,
) -> None:
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(CROSS_FK_SQL)  # type: ignore[arg-type]
    with connection(databases.source, read_only=True) as conn:
        fresh, _ = discover(conn, None)
        proposals, _ = propose(conn, fresh)
        reasons = {p.table.name: p.reason for p in proposals}
        assert "fk_agent_messages_doc" in reasons["agent_messages"], reasons
        assert "ai_kb_documents(id)" in reasons["agent_messages"], reasons

        # The plan already routes agent_messages to core: that choice is kept; the key becomes a
        # proposed soft reference, named by the constraint.
        existing = RoutingPlan(
            core=[TableName.parse("users"), TableName.parse("agent_messages")],
            ai=[TableName.parse("ai_kb_documents")],
        )
        plan, _ = discover(conn, existing)
        proposals, references = propose(conn, plan, existing)
        assert proposals == []
        by_name = {r.name: r.describe() for r in references}
        assert by_name == {"fk_agent_messages_doc": "agent_messages(doc_id) -> ai_kb_documents(id)"}
        accepted = accept(plan, proposals, references)
        from dual_db.split_hazards import split_hazards

        assert TableName.parse("agent_messages") in accepted.core
        assert split_hazards(conn, accepted) == []
        assert split_hazards(conn, plan) != []


def test_plan_discover_accept_prints_why_it_moves_a_table(env: Databases, tmp_path: Path) -> None:
    with connection(env.source, autocommit=True) as conn:
        conn.execute(CROSS_FK_SQL)  # type: ignore[arg-type]
    out = _cli(tmp_path, "plan", "--discover", "--accept", "--file", "p.yaml")
    moved = [line for line in out.splitlines() if line.startswith("moved: agent_messages")]
    assert moved and "fk_agent_messages_doc" in moved[0] and "ai_kb_documents(id)" in moved[0], out
    # Moving it makes its key into users cross the split: recorded as a soft reference, by name.
    assert any(
        line.startswith("recorded soft reference: agent_messages(user_id) -> users(id)")
        and "agent_messages_user_id_fkey" in line
        for line in out.splitlines()
    ), out


def test_an_undeclared_foreign_key_from_ai_into_core_is_named_too(databases: Databases) -> None:
    from dual_db.split_hazards import split_hazards

    with connection(databases.source, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE agent_messages (id int PRIMARY KEY);"
            "CREATE TABLE ai_feedback (id int PRIMARY KEY, message_id int, CONSTRAINT fk_feedback_message "
            "FOREIGN KEY (message_id) REFERENCES agent_messages(id));"
        )
    plan = RoutingPlan(core=[TableName.parse("agent_messages")], ai=[TableName.parse("ai_feedback")])
    with connection(databases.source, read_only=True) as conn:
        (problem,) = split_hazards(conn, plan)
        assert problem.startswith(
            "foreign key fk_feedback_message ai_feedback(message_id) -> agent_messages(id) points from ai "
            "into core"
        ), problem
        # Declared (columns in any order of their pairs), nothing is left to decide.
        plan.soft_references = [
            SoftReference(
                "declared",
                TableName.parse("ai_feedback"),
                ("message_id",),
                TableName.parse("agent_messages"),
                ("id",),
            )
        ]
        assert split_hazards(conn, plan) == []


def test_a_partitioned_tables_key_into_ai_is_named_once_on_the_parent(databases: Databases) -> None:
    """The plan lists the leaves (as discover does today); the key is declared once, on the parent."""
    from dual_db.split_hazards import split_hazards

    with connection(databases.source, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE ai_kb_documents (id int PRIMARY KEY);"
            "CREATE TABLE events (id int, at date, doc_id int CONSTRAINT fk_events_doc "
            "REFERENCES ai_kb_documents(id)) PARTITION BY RANGE (at);"
            "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
            "CREATE TABLE events_rest PARTITION OF events DEFAULT;"
        )
    plan = RoutingPlan(
        core=[TableName.parse("events_2025"), TableName.parse("events_rest")],
        ai=[TableName.parse("ai_kb_documents")],
    )
    with connection(databases.source, read_only=True) as conn:
        (problem,) = split_hazards(conn, plan)
        assert problem.startswith("foreign key fk_events_doc events(doc_id) -> ai_kb_documents(id)"), problem
        _, references = propose(conn, plan)
        assert [(r.name, r.describe()) for r in references] == [
            ("fk_events_doc", "events(doc_id) -> ai_kb_documents(id)")
        ]
        plan.soft_references = references
        assert split_hazards(conn, plan) == []
