"""foreign_keys_valid, soft_references, sequences_aligned and source_drift against real servers."""

from __future__ import annotations

import json

import pytest

from dual_db.db.catalog import list_sequences, list_tables, table_columns
from dual_db.db.fingerprint import table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.references import SoftReference
from dual_db.embedded import EmbeddedCluster
from dual_db.verify.checks import (
    foreign_keys_valid,
    sequences_aligned,
    soft_references,
    source_drift,
)
from dual_db.verify.outcome import CheckOutcome
from dual_db_tests.conftest import DatabaseFactory
from dual_db_tests.verify_support import LazyDatabases, run, run_all, session, source_session


@pytest.fixture
def dbs(servers: EmbeddedCluster, new_database: DatabaseFactory) -> LazyDatabases:
    return LazyDatabases(servers, new_database)


def _json(outcome: CheckOutcome) -> CheckOutcome:
    json.dumps(outcome.to_dict())
    return outcome


# ---- foreign_keys_valid -------------------------------------------------------------------------

FK_SCRIPT = """
CREATE TABLE users (id int PRIMARY KEY);
CREATE TABLE portfolios (id int PRIMARY KEY, user_id int NOT NULL REFERENCES users(id));
CREATE TABLE positions (
    portfolio_id int,
    seq int,
    PRIMARY KEY (portfolio_id, seq)
);
-- multi-column, MATCH SIMPLE (the default): a NULL in either column references nothing
CREATE TABLE position_tags (
    id int PRIMARY KEY,
    portfolio_id int,
    seq int,
    FOREIGN KEY (portfolio_id, seq) REFERENCES positions (portfolio_id, seq)
);
-- multi-column, MATCH FULL: all NULL or none
CREATE TABLE position_notes (
    id int PRIMARY KEY,
    portfolio_id int,
    seq int,
    FOREIGN KEY (portfolio_id, seq) REFERENCES positions (portfolio_id, seq) MATCH FULL
);
CREATE TABLE "Odd Name" (id int PRIMARY KEY, "parent id" int REFERENCES "Odd Name"(id));
INSERT INTO users SELECT g FROM generate_series(1, 50) g;
INSERT INTO portfolios SELECT g, 1 + g % 50 FROM generate_series(1, 200) g;
INSERT INTO positions SELECT g % 20, g FROM generate_series(1, 400) g;
INSERT INTO position_tags VALUES (1, 1, 1), (2, NULL, 999), (3, 999, NULL), (4, NULL, NULL);
INSERT INTO position_notes VALUES (1, 1, 1), (2, NULL, NULL);
INSERT INTO "Odd Name" VALUES (1, NULL), (2, 1);
"""
FK_TABLES = [
    TableName("public", n) for n in ("users", "portfolios", "positions", "position_tags", "position_notes")
]
FK_TABLES.append(TableName("public", "Odd Name"))


def _fks(url: object) -> CheckOutcome:
    with session(url) as conn:  # type: ignore[arg-type]
        return _json(foreign_keys_valid(conn, FK_TABLES))


def test_foreign_keys_valid_passes_with_nulls_per_match_simple_and_match_full(dbs: LazyDatabases) -> None:
    run(dbs.core, FK_SCRIPT)
    outcome = _fks(dbs.core)
    assert outcome.passed, outcome.failures
    assert len(outcome.metadata["foreign_keys"]) == 4  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("corruption", "expected"),
    [
        pytest.param(
            "INSERT INTO portfolios VALUES (1000, 4242)",
            "portfolios: foreign key portfolios_user_id_fkey (user_id) -> users(id) has 1 orphan row, "
            "e.g. (4242)",
            id="orphan",
        ),
        pytest.param(
            "INSERT INTO position_tags VALUES (10, 1, 2)",  # (1, 2) is no position: 2 % 20 = 2
            "position_tags: foreign key position_tags_portfolio_id_seq_fkey (portfolio_id, seq) -> "
            "positions(portfolio_id, seq) has 1 orphan row, e.g. (1, 2)",
            id="orphan-multi-column",
        ),
        pytest.param(
            "INSERT INTO position_notes VALUES (10, NULL, 1)",  # MATCH FULL: partly NULL breaks the key
            "position_notes: foreign key position_notes_portfolio_id_seq_fkey (portfolio_id, seq) -> "
            "positions(portfolio_id, seq) has 1 orphan row, e.g. (NULL, 1)",
            id="orphan-match-full-partly-null",
        ),
        pytest.param(
            'INSERT INTO "Odd Name" VALUES (3, 77)',
            '"Odd Name": foreign key "Odd Name_parent id_fkey" ("parent id") -> "Odd Name"(id) '
            "has 1 orphan row",
            id="orphan-self-reference-odd-names",
        ),
    ],
)
def test_foreign_keys_valid_fails_on_an_orphan_inserted_behind_the_constraints_back(
    dbs: LazyDatabases, corruption: str, expected: str
) -> None:
    run(dbs.core, FK_SCRIPT)
    with session(dbs.core, autocommit=False) as conn:
        # what a bulk load with triggers off (session_replication_role = replica) lets through
        conn.execute("SET session_replication_role = replica")
        conn.execute(corruption)
        conn.commit()
    outcome = _fks(dbs.core)
    assert not outcome.passed
    assert any(f.startswith(expected) for f in outcome.failures), outcome.failures


def test_foreign_keys_valid_fails_on_a_not_valid_or_disabled_key(dbs: LazyDatabases) -> None:
    run(dbs.core, FK_SCRIPT)
    run(
        dbs.core,
        "ALTER TABLE portfolios DROP CONSTRAINT portfolios_user_id_fkey; "
        "ALTER TABLE portfolios ADD CONSTRAINT portfolios_user_id_fkey FOREIGN KEY (user_id) "
        "REFERENCES users(id) NOT VALID",
    )
    not_valid = _fks(dbs.core)
    assert not not_valid.passed
    assert any("portfolios_user_id_fkey" in f and "NOT VALID" in f for f in not_valid.failures)

    run(dbs.core, "ALTER TABLE portfolios VALIDATE CONSTRAINT portfolios_user_id_fkey")
    assert _fks(dbs.core).passed
    run(dbs.core, "ALTER TABLE portfolios DISABLE TRIGGER ALL")
    disabled = _fks(dbs.core)
    assert any("portfolios_user_id_fkey" in f and "not enforced" in f for f in disabled.failures)


# ---- soft_references ----------------------------------------------------------------------------

CORE_REFS = """
CREATE TABLE users (id uuid PRIMARY KEY);
CREATE TABLE agent_messages (
    id uuid PRIMARY KEY, tenant text NOT NULL, seq int NOT NULL, UNIQUE (tenant, seq)
);
INSERT INTO users SELECT md5('u' || g)::uuid FROM generate_series(1, 300) g;
INSERT INTO agent_messages SELECT md5('m' || g)::uuid, 't ''' || g % 3, g FROM generate_series(1, 5000) g;
"""
AI_REFS = """
CREATE TABLE ai_feedback (id int PRIMARY KEY, message_id uuid NOT NULL, tenant text, seq int);
CREATE TABLE ai_memories (id int PRIMARY KEY, user_id uuid);
INSERT INTO ai_feedback SELECT g, md5('m' || g)::uuid, 't ''' || g % 3, g FROM generate_series(1, 4000) g;
INSERT INTO ai_memories SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE md5('u' || (g % 300 + 1))::uuid END
FROM generate_series(1, 900) g;
"""
REFERENCES = [
    SoftReference("feedback_message", TableName.parse("ai_feedback"), ("message_id",),
                  TableName.parse("agent_messages"), ("id",)),
    SoftReference("memory_user", TableName.parse("ai_memories"), ("user_id",),
                  TableName.parse("users"), ("id",)),
    SoftReference("feedback_tenant_seq", TableName.parse("ai_feedback"), ("tenant", "seq"),
                  TableName.parse("agent_messages"), ("tenant", "seq")),
]  # fmt: skip


def _soft(dbs: LazyDatabases, *, strict: bool = False) -> CheckOutcome:
    with session(dbs.ai) as ai, session(dbs.core) as core:
        return _json(soft_references(ai, core, REFERENCES, strict=strict))


def test_soft_references_count_orphans_as_warnings_unless_strict(dbs: LazyDatabases) -> None:
    run(dbs.core, CORE_REFS)
    run(dbs.ai, AI_REFS)
    clean = _soft(dbs)
    assert clean.passed and clean.warnings == [] and clean.metadata["orphan_rows"] == 0
    details = {d["name"]: d for d in clean.metadata["references"]}  # type: ignore[union-attr,index]
    # 270 users are referenced (g % 300 + 1 over g not a multiple of 10); NULL references nothing
    assert details["memory_user"]["distinct_keys"] == 270
    assert details["feedback_message"]["distinct_keys"] == 4000

    run(dbs.core, "DELETE FROM agent_messages WHERE id IN (md5('m7')::uuid, md5('m8')::uuid)")
    run(dbs.ai, "INSERT INTO ai_memories VALUES (5000, gen_random_uuid()), (5001, md5('u1')::uuid)")
    run(dbs.ai, "INSERT INTO ai_feedback VALUES (5000, md5('m1')::uuid, 'nobody', 1)")
    warned = _soft(dbs)
    assert warned.passed and warned.severity == "WARN"
    assert warned.metadata["orphan_rows"] == 2 + 1 + (2 + 1)
    details = {d["name"]: d for d in warned.metadata["references"]}  # type: ignore[union-attr,index]
    assert (details["feedback_message"]["orphan_rows"], details["feedback_message"]["orphan_keys"]) == (2, 2)
    assert details["memory_user"]["orphan_rows"] == 1
    assert details["feedback_tenant_seq"]["orphan_keys"] == 3
    assert any(w.startswith("feedback_message: ai_feedback(message_id) -> agent_messages(id): 2 orphan rows")
               for w in warned.warnings)  # fmt: skip
    assert "orphan" in warned.summary

    strict = _soft(dbs, strict=True)
    assert not strict.passed
    assert any("memory_user" in f for f in strict.failures)


def test_soft_references_report_a_table_on_neither_database(dbs: LazyDatabases) -> None:
    run(dbs.core, CORE_REFS)
    run(dbs.ai, AI_REFS)
    run(dbs.ai, "DROP TABLE ai_memories")
    outcome = _soft(dbs)
    assert not outcome.passed
    assert any(
        "memory_user" in f and "ai_memories is not on the expected database" in f for f in outcome.failures
    )


# ---- sequences_aligned --------------------------------------------------------------------------

SEQ_SCRIPT = """
CREATE TABLE portfolios (id bigserial PRIMARY KEY, name text);
CREATE TABLE batch_jobs (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY);
CREATE SEQUENCE countdown INCREMENT BY -1 MINVALUE -1000 MAXVALUE 1000 START 1000;
CREATE SEQUENCE unused;
INSERT INTO portfolios (name) SELECT 'p' || g FROM generate_series(1, 120) g;
INSERT INTO batch_jobs DEFAULT VALUES;
SELECT nextval('countdown'), nextval('countdown');
"""


def test_sequences_aligned_passes_when_copied_and_fails_when_a_sequence_is_lowered(
    dbs: LazyDatabases,
) -> None:
    run_all([dbs.source, dbs.core], SEQ_SCRIPT)
    with source_session(dbs.source) as src:
        expected = {s.sequence: s for s in list_sequences(src)}
    assert {s.name for s in expected} == {"portfolios_id_seq", "batch_jobs_id_seq", "countdown", "unused"}
    with session(dbs.core) as core:
        ok = _json(sequences_aligned(expected, core))
        assert ok.passed, ok.failures
        assert len(ok.metadata["sequences"]) == 4  # type: ignore[arg-type]

        core.execute("SELECT setval('portfolios_id_seq', 100)")
        lowered = _json(sequences_aligned(expected, core))
        assert not lowered.passed
        assert lowered.failures == [
            "portfolios_id_seq: target would hand out 101 next, but the source had already reached 120: "
            "new rows would collide with copied ones"
        ]
        # setval(120, false): 120 would be handed out again
        core.execute("SELECT setval('portfolios_id_seq', 120, false)")
        assert not sequences_aligned(expected, core).passed
        core.execute("SELECT setval('portfolios_id_seq', 120, true)")
        assert sequences_aligned(expected, core).passed

        core.execute("SELECT setval('countdown', 999)")  # descending: 998 next, the source is at 999
        assert sequences_aligned(expected, core).passed
        core.execute("SELECT setval('countdown', 1000)")
        assert any(f.startswith("countdown:") for f in sequences_aligned(expected, core).failures)
        core.execute("SELECT setval('countdown', 999)")

        # plain ints (the last value handed out) and (last_value, is_called) pairs are accepted too
        assert sequences_aligned({TableName.parse("portfolios_id_seq"): 120}, core).passed
        assert not sequences_aligned({TableName.parse("portfolios_id_seq"): 121}, core).passed
        assert sequences_aligned({TableName.parse("unused"): (1, False)}, core).passed

        core.execute("DROP TABLE batch_jobs")
        missing = sequences_aligned(expected, core)
    assert not missing.passed
    assert any(f.startswith("batch_jobs_id_seq: sequence missing on target") for f in missing.failures)


# ---- source_drift -------------------------------------------------------------------------------


def test_source_drift_lists_tables_written_since_the_snapshot(dbs: LazyDatabases) -> None:
    run(dbs.source, FK_SCRIPT)
    with source_session(dbs.source) as src:
        tables = [t.table for t in list_tables(src)]
        columns = {t: table_columns(src, t) for t in tables}
        snapshot = {t: table_fingerprint(src, t, columns[t]) for t in tables}
    with source_session(dbs.source) as src:
        unchanged = _json(source_drift(src, snapshot, columns=columns))
    assert unchanged.passed and unchanged.severity == "WARN"

    run(dbs.source, "INSERT INTO users VALUES (51); UPDATE positions SET seq = seq WHERE seq = 5;")
    run(dbs.source, "UPDATE portfolios SET user_id = 3 WHERE id = 1; CREATE TABLE late (id int)")
    with source_session(dbs.source) as src:
        drift = _json(source_drift(src, snapshot, columns=columns))
    assert not drift.passed and drift.severity == "WARN" and not drift.blocking
    assert "users: 50 -> 51 rows (+1 rows) since the snapshot" in drift.failures
    assert "portfolios: 200 -> 200 rows (content changed) since the snapshot" in drift.failures
    assert "late: created since the snapshot" in drift.failures
    assert not any(f.startswith("positions") for f in drift.failures)  # same content rewritten
    assert drift.metadata["new_tables"] == ["public.late"]


def test_soft_references_accept_the_schema_splits_reference_objects(dbs: LazyDatabases) -> None:
    """The split's references (a removed foreign key, with its database and statement) are checked
    as they are."""
    run(dbs.core, CORE_REFS)
    run(dbs.ai, AI_REFS)
    run(dbs.ai, "INSERT INTO ai_memories VALUES (5000, gen_random_uuid())")
    ref = SoftReference(
        "ai_memories_user_id_fkey", TableName.parse("ai_memories"), ("user_id",), TableName.parse("users"),
        ("id",), from_database="ai", definition="FOREIGN KEY (user_id) REFERENCES users(id)",
    )  # fmt: skip
    with session(dbs.ai) as ai, session(dbs.core) as core:
        outcome = _json(soft_references(ai, core, [ref]))
    assert outcome.passed and outcome.metadata["orphan_rows"] == 1
    assert outcome.warnings[0].startswith(
        "ai_memories_user_id_fkey: ai_memories(user_id) -> users(id): 1 orphan row"
    )
