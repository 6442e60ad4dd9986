"""The bench harness's own pieces (bench/): its independent verifier, the pg_restore list filter of the
pg_dump contender, and the process-tree memory sampler. Real servers, nothing mocked; the timings
themselves belong to `make bench`, never to a test."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
import pytest

from bench.procs import run_measured
from bench.toc_filter import keep
from bench.verifier import expected_from_source, same_definition, verify
from dual_db.db.urls import DatabaseUrl
from dual_db_tests.conftest import Databases

ROUTING = {"t_core": "core", "t_child": "core", "t_ai": "ai"}

CORE_DDL = """
CREATE TABLE t_core (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE t_child (
    id int PRIMARY KEY,
    core_id bigint NOT NULL REFERENCES t_core (id),
    kind varchar(5) NOT NULL CHECK (kind IN ('a', 'b'))
);
CREATE INDEX ix_t_child_core ON t_child (core_id);
INSERT INTO t_core (name) SELECT 'name ' || g FROM generate_series(1, 50) g;
INSERT INTO t_child
SELECT g, 1 + g % 50, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 80) g;
"""
AI_DDL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE t_ai (id int PRIMARY KEY, embedding vector(3));
CREATE INDEX ix_t_ai_hnsw ON t_ai USING hnsw (embedding vector_cosine_ops);
INSERT INTO t_ai SELECT g, ARRAY[g, g + 1, g + 2]::real[]::vector FROM generate_series(1, 40) g;
"""


def _run(url: DatabaseUrl, statements: str) -> None:
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        conn.execute(statements)  # type: ignore[arg-type]


@pytest.fixture
def copied(databases: Databases) -> Databases:
    """A source, and core and AI holding an exact split of it (made by hand, as a contender would)."""
    _run(databases.source, CORE_DDL + AI_DDL)
    _run(databases.core, CORE_DDL)
    _run(databases.ai, AI_DDL)
    return databases


def _failures(dbs: Databases) -> list[str]:
    expected = expected_from_source(dbs.source, ROUTING)
    return [f"{v.target}: {f}" for v in verify(dbs.core, dbs.ai, expected) for f in v.failures]


def test_an_exact_split_passes(copied: Databases) -> None:
    assert _failures(copied) == []


def test_a_missing_row_a_changed_value_and_a_missing_index_are_caught(copied: Databases) -> None:
    _run(copied.core, "DELETE FROM t_child WHERE id = 7; DROP INDEX ix_t_child_core;")
    _run(copied.ai, "UPDATE t_ai SET embedding = '[9,9,9]' WHERE id = 3;")
    failures = _failures(copied)
    assert "core: t_child: 79 rows, source has 80" in failures
    assert "ai: t_ai: content checksum differs from the source" in failures
    assert "core: index missing: t_child.ix_t_child_core" in failures


def test_a_wrong_sequence_a_missing_foreign_key_and_vector_in_core_are_caught(copied: Databases) -> None:
    _run(
        copied.core,
        "SELECT setval('t_core_id_seq', 1, false); ALTER TABLE t_child DROP CONSTRAINT t_child_core_id_fkey;"
        " CREATE EXTENSION vector;",
    )
    failures = _failures(copied)
    assert (
        "core: sequence t_core_id_seq: last_value=1 is_called=False, source last_value=50 is_called=True"
        in (failures)
    )
    assert "core: constraint missing: t_child.t_child_core_id_fkey" in failures
    assert "core has the vector extension" in " ".join(failures)


def test_an_ai_table_in_core_and_no_vector_in_ai_are_caught(databases: Databases) -> None:
    _run(databases.source, CORE_DDL + AI_DDL)
    _run(databases.core, CORE_DDL + "CREATE TABLE t_ai (id int PRIMARY KEY);")
    _run(databases.ai, "CREATE TABLE t_ai (id int PRIMARY KEY, embedding real[]);")
    failures = _failures(databases)
    assert "core: tables that belong elsewhere: t_ai" in failures
    assert "ai: AI has no vector extension" in failures


def test_check_constraints_compare_without_casts_but_not_without_values() -> None:
    restored = (
        "CHECK (((kind)::text = ANY (ARRAY[('a'::character varying)::text, ('b'::character varying)::text])))"
    )
    source = "CHECK (((kind)::text = ANY ((ARRAY['a'::character varying, 'b'::character varying])::text[])))"
    other = "CHECK (((kind)::text = ANY ((ARRAY['a'::character varying, 'c'::character varying])::text[])))"
    assert same_definition(restored, source)
    assert not same_definition(restored, other)


def test_the_restore_list_filter_keeps_each_target_to_its_own_objects() -> None:
    objects = {
        "core": {"tables": {"users"}, "indexes": {"users_pkey"}, "sequences": {"users_id_seq"}},
        "ai": {"tables": {"ai_docs"}, "indexes": {"ix_ai_docs_hnsw"}, "sequences": set()},
    }
    lines = {
        "2; 3079 16385 EXTENSION - vector ": {"core": False, "ai": True},
        "3368; 0 0 COMMENT - EXTENSION vector ": {"core": False, "ai": True},
        "3369; 0 0 COMMENT public COLUMN ai_docs.note postgres": {"core": False, "ai": True},
        "250; 1259 17289 SEQUENCE public users_id_seq postgres": {"core": True, "ai": False},
        "251; 1259 17290 TABLE public users postgres": {"core": True, "ai": False},
        "3500; 0 17300 TABLE DATA public ai_docs postgres": {"core": False, "ai": True},
        "3145; 2606 17468 CONSTRAINT public users users_pkey postgres": {"core": True, "ai": False},
        "3200; 1259 17600 INDEX public ix_ai_docs_hnsw postgres": {"core": False, "ai": True},
        "3300; 2606 17700 FK CONSTRAINT public users fk_x postgres": {"core": True, "ai": False},
        "10; 1247 16400 TYPE public position_type postgres": {"core": True, "ai": True},
    }
    for line, want in lines.items():
        for target in ("core", "ai"):
            other = objects["ai" if target == "core" else "core"]
            assert keep(line, target, other) is want[target], (line, target)


def test_peak_memory_counts_the_whole_process_tree(tmp_path: Path) -> None:
    # Two children of a shell, each holding about 60 MB: the peak is their sum, not the shell's.
    code = "import time; b = bytearray(60_000_000); b[::4096] = b'x' * len(b[::4096]); time.sleep(1)"
    hold = f'{sys.executable} -c "{code}"'
    measured = run_measured(["bash", "-c", f"{hold} & {hold} & wait"], log=tmp_path / "log")
    assert measured.returncode == 0
    assert measured.peak_rss_bytes > 110_000_000
