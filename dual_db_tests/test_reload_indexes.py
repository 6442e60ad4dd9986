"""A re-run or one-table redo loads into the table without its secondary indexes, then rebuilds them.

A COPY into a table whose HNSW index is still built inserts every row into the graph one by one: for
40k x vector(256) that took 254 s against 1.1 s into a fresh table (issue 18, defect 5). The replacing
transaction drops the table's secondary indexes, loads, and rebuilds them before it commits, so a failure
still leaves the previous table whole.
"""

from __future__ import annotations

import threading
import time

import dagster as dg

from dual_db.copy.engine import CopyRun, copy_tables
from dual_db.db.cancel import Cancellation, Interrupted
from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db_tests.conftest import Databases
from dual_db_tests.job_support import run_job
from dual_db_tests.test_migrate_job import environment  # noqa: F401  (fixture)

INDEXES_SQL = """
SELECT c.relname, c.oid::int, i.indisvalid AND i.indisready
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = %s::regclass ORDER BY c.relname
"""

VECTOR_TABLE_SQL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE items (id int PRIMARY KEY, label text, embedding vector(32));
CREATE INDEX items_label ON items (label);
CREATE INDEX items_embedding ON items USING hnsw (embedding vector_l2_ops);
COMMENT ON INDEX items_embedding IS 'the RAG index';
CREATE TABLE notes (id int PRIMARY KEY, item_id int REFERENCES items(id), note text);
INSERT INTO items SELECT g, 'l' || g % 7, (SELECT array_agg(sin(g * k))::vector FROM generate_series(1, 32) k)
FROM generate_series(1, 2000) g;
INSERT INTO notes SELECT g, g, 'n' FROM generate_series(1, 50) g;
"""


def _indexes(url: DatabaseUrl, table: str) -> dict[str, tuple[int, bool]]:
    with connection(url) as conn:
        return {name: (oid, valid) for name, oid, valid in conn.execute(INDEXES_SQL, (table,)).fetchall()}


def _comment(url: DatabaseUrl, index: str) -> str | None:
    with connection(url) as conn:
        row = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')", (index,)).fetchone()
        return row[0] if row else None


def test_a_reload_drops_and_rebuilds_secondary_indexes(databases: Databases) -> None:
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(VECTOR_TABLE_SQL)  # type: ignore[arg-type]
    with connection(databases.ai, autocommit=True) as conn:
        conn.execute(VECTOR_TABLE_SQL)  # type: ignore[arg-type]  # as a first migrate left it
    before = _indexes(databases.ai, "items")
    assert set(before) == {"items_pkey", "items_label", "items_embedding"}

    tables = [TableName("public", "items"), TableName("public", "notes")]
    run = copy_tables(databases.source, databases.ai, tables, snapshot_id=None, workers=2)
    assert run.ok, run.errors
    (items,) = [r for r in run.results if r.table.name == "items"]
    after = _indexes(databases.ai, "items")
    assert set(after) == set(before)
    assert all(valid for _, valid in after.values()), after
    # Rebuilt (a new index), not filled row by row; the primary key's index is the same one.
    assert after["items_embedding"][0] != before["items_embedding"][0]
    assert after["items_label"][0] != before["items_label"][0]
    assert after["items_pkey"][0] == before["items_pkey"][0]
    # The COPY ran with neither secondary index in place; the primary key stayed.
    assert sorted(items.rebuilt_indexes) == ["items_embedding", "items_label"]
    # Referenced by notes' foreign key: emptied by DELETE, the indexes still dropped and rebuilt.
    assert items.empty_method == "delete" and items.replaced_rows == 2000
    assert _comment(databases.ai, "items_embedding") == "the RAG index"
    assert items.target_fingerprint == items.source_fingerprint
    with connection(databases.ai) as conn:
        # The rebuilt HNSW index answers a nearest-neighbour query.
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT id FROM items ORDER BY embedding <-> (SELECT embedding FROM items WHERE id = 1) "
            "LIMIT 5"
        ).fetchall()
        assert any("items_embedding" in line for (line,) in plan), plan


def test_a_one_table_redo_rebuilds_the_hnsw_index(environment: Databases) -> None:  # noqa: F811
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        before = _indexes(dbs.ai, "ai_kb_documents")
        redo = run_job("migrate", instance, ["ai/ai_kb_documents"])
        assert redo.success, [e.message for e in redo.all_events if e.is_failure]
        evaluations = redo.get_asset_check_evaluations()
        assert evaluations and all(e.passed for e in evaluations)
        after = _indexes(dbs.ai, "ai_kb_documents")
        # Every index the source has, valid; the HNSW index is a new one, built after the load.
        assert set(after) == set(_indexes(dbs.source, "ai_kb_documents")) == set(before)
        assert all(valid for _, valid in after.values()), after
        assert after["ix_ai_kb_documents_embedding_hnsw"][0] != before["ix_ai_kb_documents_embedding_hnsw"][0]
        record = instance.get_latest_materialization_event(dg.AssetKey(["ai", "ai_kb_documents"]))
        assert record is not None and record.asset_materialization is not None
        metadata = record.asset_materialization.metadata
        assert metadata["rebuilt_indexes"].value == ["ix_ai_kb_documents_embedding_hnsw"]
    with connection(dbs.source) as src, connection(dbs.ai) as ai:
        query = "SELECT count(*), count(embedding) FROM ai_kb_documents"
        assert ai.execute(query).fetchone() == src.execute(query).fetchone()


# A rebuild that takes the AI server several seconds (ef_construction drives the cost).
SLOW_GRAPH_SQL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE vectors (id int PRIMARY KEY, embedding vector(256));
INSERT INTO vectors
SELECT g, (SELECT array_agg(random())::vector FROM generate_series(1, 256) k WHERE g > 0)
FROM generate_series(1, %s) g;
"""
SLOW_INDEX_SQL = (
    "CREATE INDEX vectors_hnsw ON vectors USING hnsw (embedding vector_l2_ops) "
    "WITH (m = 16, ef_construction = 256)"
)
BUILDING_SQL = "SELECT count(*) FROM pg_stat_progress_create_index WHERE datname = %s"


def test_an_interrupted_reload_is_cancelled_and_keeps_the_previous_table(databases: Databases) -> None:
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(SLOW_GRAPH_SQL.replace("%s", "8000"))  # type: ignore[arg-type]
    with connection(databases.ai, autocommit=True) as conn:
        # The previous copy: 100 rows, its HNSW index built.
        conn.execute(SLOW_GRAPH_SQL.replace("%s", "100"))  # type: ignore[arg-type]
        conn.execute(SLOW_INDEX_SQL)  # type: ignore[arg-type]
    before = _indexes(databases.ai, "vectors")
    cancellation = Cancellation()
    outcome: list[CopyRun] = []
    copying = threading.Thread(
        target=lambda: outcome.append(
            copy_tables(
                databases.source,
                databases.ai,
                [TableName("public", "vectors")],
                snapshot_id=None,
                workers=1,
                cancellation=cancellation,
            )
        )
    )
    copying.start()
    try:
        with connection(databases.ai, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while conn.execute(BUILDING_SQL, (databases.ai.dbname,)).fetchone() == (0,):
                assert copying.is_alive() and time.monotonic() < deadline, "the rebuild never started"
                time.sleep(0.05)
            time.sleep(0.5)
            # What the executor does on SIGTERM: the rebuild is cancelled on the server at once.
            assert cancellation.cancel("the run was interrupted") == 2
            cancelled = time.monotonic()
            while conn.execute(BUILDING_SQL, (databases.ai.dbname,)).fetchone() != (0,):
                assert time.monotonic() - cancelled < 2, "the HNSW rebuild still runs 2 s after the cancel"
                time.sleep(0.05)
    finally:
        copying.join(timeout=60)
    (run,) = outcome
    (error,) = run.errors.values()
    assert isinstance(error, Interrupted) and "was cancelled on the server" in str(error)
    # Rolled back whole: the previous rows, the previous index, valid.
    assert _indexes(databases.ai, "vectors") == before
    with connection(databases.ai) as conn:
        assert conn.execute("SELECT count(*) FROM vectors").fetchone() == (100,)
