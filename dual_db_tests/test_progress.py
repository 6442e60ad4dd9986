"""Progress of long steps reaches the caller while they run: the HNSW build's phase and tuples."""

from __future__ import annotations

from dual_db.db.connect import connection
from dual_db.schema.post_data import build_post_data, index_progress_line
from dual_db_tests.conftest import Databases

VECTORS_SQL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE docs (id int PRIMARY KEY, embedding vector(64));
INSERT INTO docs SELECT i, (SELECT array_agg(sin(i * g + g))::vector FROM generate_series(1, 64) g)
FROM generate_series(1, 15000) i;
"""

HNSW_SQL = "CREATE INDEX ix_docs_embedding_hnsw ON public.docs USING hnsw (embedding vector_l2_ops);\n"


def test_hnsw_build_reports_its_phase_and_tuples_while_it_runs(databases: Databases) -> None:
    with connection(databases.ai, autocommit=True) as conn:
        conn.execute(VECTORS_SQL)  # type: ignore[arg-type]
    lines: list[str] = []
    report = build_post_data(
        databases.ai, {"vector_indexes": HNSW_SQL}, workers=1, log=lines.append, progress_every=0.2
    )
    assert [v.name for v in report.vector_indexes] == ["ix_docs_embedding_hnsw"]
    progress = [line for line in lines if line.startswith("building ix_docs_embedding_hnsw: ")]
    # Read from pg_stat_progress_create_index while CREATE INDEX ran: a phase and how far it is.
    assert progress, lines
    assert any("building index" in line and " blocks" in line and "% (" in line for line in progress), (
        progress
    )
    finished = [line for line in lines if line.startswith("vector index ix_docs_embedding_hnsw: ")]
    assert len(finished) == 1 and lines.index(finished[0]) > lines.index(progress[-1])


def test_index_progress_line_reads_tuples_then_blocks() -> None:
    assert (
        index_progress_line("ix", ("building index: loading tuples", 0, 0, 20500, 50000), 35.2)
        == "building ix: building index: loading tuples, 41% (20,500 of 50,000 tuples), 35s"
    )
    assert index_progress_line("ix", ("scanning table", 10, 40, 0, 0), 5) == (
        "building ix: scanning table, 25% (10 of 40 blocks), 5s"
    )
    assert index_progress_line("ix", ("building index: loading tuples", 123, 1112, 3300, 0), 2) == (
        "building ix: building index: loading tuples, 11% (123 of 1,112 blocks, 3,300 tuples), 2s"
    )
    assert index_progress_line("ix", None, 7) == "building ix: 7s"
