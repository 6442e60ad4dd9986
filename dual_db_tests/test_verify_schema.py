"""schema_parity, core_extension_rules and ai_extension_rules against real servers."""

from __future__ import annotations

import json

import pytest

from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedCluster, EmbeddedServer
from dual_db.verify.checks import ai_extension_rules, core_extension_rules, schema_parity
from dual_db.verify.outcome import CheckOutcome
from dual_db.verify.schema import index_definition_without_name
from dual_db_tests.conftest import DatabaseFactory
from dual_db_tests.verify_support import LazyDatabases, run, run_all, session, source_session

CORE_SCRIPT = """
CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL UNIQUE,
    "Display Name" varchar(80) COLLATE "C",
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE portfolios (
    id bigserial PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name text NOT NULL,
    value numeric(18,4) NOT NULL DEFAULT 0 CHECK (value >= 0),
    code int GENERATED ALWAYS AS IDENTITY,
    UNIQUE (user_id, name)
);
CREATE INDEX ix_portfolios_name ON portfolios (lower(name)) WHERE value > 0;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER portfolios_touch BEFORE UPDATE ON portfolios FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TABLE agent_messages (id uuid PRIMARY KEY, conversation text NOT NULL);
"""
CORE_TABLES = [TableName("public", n) for n in ("users", "portfolios", "agent_messages")]

AI_SCRIPT = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE ai_kb_documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    scope varchar(100) NOT NULL,
    embedding vector(3),
    summary_embedding halfvec(3)
);
CREATE INDEX ix_ai_kb_documents_scope ON ai_kb_documents (scope);
CREATE INDEX ix_ai_kb_documents_embedding_hnsw ON ai_kb_documents
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX ix_ai_kb_documents_summary_ivf ON ai_kb_documents
    USING ivfflat (summary_embedding halfvec_l2_ops) WITH (lists = 10);
CREATE TABLE ai_memories (id uuid PRIMARY KEY, user_id uuid, content text NOT NULL);
"""
AI_TABLES = [TableName("public", "ai_kb_documents"), TableName("public", "ai_memories")]


@pytest.fixture
def dbs(servers: EmbeddedCluster, new_database: DatabaseFactory) -> LazyDatabases:
    return LazyDatabases(servers, new_database)


def _parity(
    source: DatabaseUrl, target: DatabaseUrl, tables: list[TableName], **kwargs: object
) -> CheckOutcome:
    with source_session(source) as src, session(target) as tgt:
        outcome = schema_parity(src, tgt, tables, **kwargs)  # type: ignore[arg-type]
    json.dumps(outcome.to_dict())
    return outcome


@pytest.fixture
def core_pair(dbs: LazyDatabases) -> LazyDatabases:
    run_all([dbs.source, dbs.core], CORE_SCRIPT)
    return dbs


def test_schema_parity_passes_on_identical_schemas(core_pair: LazyDatabases) -> None:
    outcome = _parity(core_pair.source, core_pair.core, CORE_TABLES)
    assert outcome.passed, outcome.failures
    assert outcome.metadata["tables_compared"] == 3


@pytest.mark.parametrize(
    ("corruption", "expected"),
    [
        pytest.param(
            "DROP INDEX ix_portfolios_name",
            "portfolios: index ix_portfolios_name missing on target",
            id="dropped-index",
        ),
        pytest.param(
            "ALTER TABLE portfolios ALTER COLUMN value TYPE numeric(18,2)",
            "portfolios: column value differs (source numeric(18,4) NOT NULL DEFAULT 0, "
            "target numeric(18,2) NOT NULL DEFAULT 0)",
            id="changed-column-type",
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN email DROP NOT NULL",
            "users: column email differs (source text NOT NULL, target text)",
            id="dropped-not-null",
        ),
        pytest.param(
            "ALTER TABLE portfolios ALTER COLUMN value SET DEFAULT 1",
            "portfolios: column value differs",
            id="changed-default",
        ),
        pytest.param(
            'ALTER TABLE users ALTER COLUMN "Display Name" TYPE varchar(80) COLLATE "POSIX"',
            'users: column Display Name differs (source character varying(80) COLLATE "C"',
            id="changed-collation",
        ),
        pytest.param(
            "ALTER TABLE portfolios DROP CONSTRAINT portfolios_value_check",
            "portfolios: constraint portfolios_value_check missing on target (source check constraint "
            "CHECK ((value >= (0)::numeric))",
            id="dropped-check",
        ),
        pytest.param(
            "ALTER TABLE portfolios DROP CONSTRAINT portfolios_user_id_fkey",
            "portfolios: constraint portfolios_user_id_fkey missing on target "
            "(source foreign key FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE",
            id="dropped-foreign-key",
        ),
        pytest.param(
            "ALTER INDEX ix_portfolios_name RENAME TO ix_other",
            "portfolios: index named differently (source ix_portfolios_name, target ix_other)",
            id="renamed-index",
        ),
        pytest.param(
            "ALTER TABLE portfolios DISABLE TRIGGER portfolios_touch",
            "portfolios: trigger portfolios_touch differs",
            id="disabled-trigger",
        ),
        pytest.param(
            "ALTER TABLE agent_messages SET UNLOGGED",
            "agent_messages: persistence differs (source logged, target UNLOGGED)",
            id="unlogged",
        ),
        pytest.param(
            "ALTER TABLE users ADD COLUMN extra int", "users: column extra only on target", id="extra-column"
        ),
        pytest.param(
            "DROP TABLE agent_messages", "agent_messages: table missing on target", id="missing-table"
        ),
        pytest.param(
            "ALTER TABLE portfolios ALTER COLUMN code SET GENERATED BY DEFAULT",
            "portfolios: column code differs (source integer NOT NULL GENERATED ALWAYS AS IDENTITY, "
            "target integer NOT NULL GENERATED BY DEFAULT AS IDENTITY)",
            id="identity",
        ),
    ],
)
def test_schema_parity_fails_naming_the_table_and_the_difference(
    core_pair: LazyDatabases, corruption: str, expected: str
) -> None:
    run(core_pair.core, corruption)
    outcome = _parity(core_pair.source, core_pair.core, CORE_TABLES)
    assert not outcome.passed
    assert any(f.startswith(expected) for f in outcome.failures), outcome.failures


def test_schema_parity_ignores_only_foreign_keys_to_tables_on_the_other_database(
    dbs: LazyDatabases,
) -> None:
    # source: ai_feedback -> agent_messages; the AI target cannot have that FK (agent_messages is in core)
    run(dbs.source, CORE_SCRIPT)
    feedback = """
    CREATE TABLE ai_feedback (
        id uuid PRIMARY KEY,
        message_id uuid NOT NULL {fk},
        parent uuid REFERENCES ai_feedback(id)
    );
    """
    run(dbs.source, feedback.format(fk="REFERENCES agent_messages(id)"))
    run(dbs.ai, feedback.format(fk=""))
    tables = [TableName("public", "ai_feedback")]

    strict = _parity(dbs.source, dbs.ai, tables)
    assert not strict.passed
    assert any("ai_feedback_message_id_fkey missing on target" in f for f in strict.failures)

    routed = _parity(
        dbs.source, dbs.ai, tables, ignore_foreign_keys_to={TableName("public", "agent_messages")}
    )
    assert routed.passed, routed.failures

    # the self-reference stays compared
    run(dbs.ai, "ALTER TABLE ai_feedback DROP CONSTRAINT ai_feedback_parent_fkey")
    broken = _parity(
        dbs.source, dbs.ai, tables, ignore_foreign_keys_to={TableName("public", "agent_messages")}
    )
    assert any("ai_feedback_parent_fkey missing on target" in f for f in broken.failures)


def test_index_name_is_cut_out_of_definitions_even_when_quoted() -> None:
    odd = index_definition_without_name('CREATE UNIQUE INDEX "my ""odd"" ix" ON public.t USING btree (a)')
    plain = index_definition_without_name("CREATE UNIQUE INDEX other ON public.t USING btree (a)")
    assert odd == plain and "odd" not in odd and "other" not in plain
    assert index_definition_without_name("CREATE INDEX ix ON public.t USING hnsw (e vector_cosine_ops)") == (
        "CREATE INDEX ON public.t USING hnsw (e vector_cosine_ops)"
    )
    assert odd != index_definition_without_name("CREATE UNIQUE INDEX x ON public.t USING btree (b)")


# ---- core_extension_rules -----------------------------------------------------------------------


def test_core_extension_rules_pass_on_a_clean_core_and_fail_once_vector_is_installed(
    core_pair: LazyDatabases,
) -> None:
    with session(core_pair.core) as core:
        clean = core_extension_rules(core)
        assert clean.passed, clean.failures
        assert clean.metadata["vector_extension"] is None

        core.execute("CREATE EXTENSION vector")
        installed = core_extension_rules(core)
        assert not installed.passed
        assert any(f.startswith("core: extension vector 0.8") for f in installed.failures)
        assert installed.metadata["vector_extension"]

        core.execute("CREATE SCHEMA extra")
        core.execute(
            "CREATE TABLE extra.notes (id int PRIMARY KEY, e vector(3), h halfvec(2)[], s sparsevec(5))"
        )
        core.execute("CREATE DOMAIN embedding AS vector(3)")
        core.execute("CREATE TABLE users_emb (id int, e embedding)")
        core.execute("CREATE INDEX notes_hnsw ON extra.notes USING hnsw (e vector_l2_ops)")
        core.execute("CREATE INDEX notes_ivf ON extra.notes USING ivfflat (e vector_l2_ops) WITH (lists = 1)")
        everything = core_extension_rules(core)
    assert not everything.passed
    failures = everything.failures
    assert "extra.notes: column e has pgvector type vector(3)" in failures
    assert "extra.notes: column h has pgvector type halfvec(2)[]" in failures  # arrays too
    assert "extra.notes: column s has pgvector type sparsevec(5)" in failures
    assert "users_emb: column e has pgvector type embedding" in failures  # domains too
    assert "extra.notes: index notes_hnsw uses access method hnsw" in failures
    assert "extra.notes: index notes_ivf uses access method ivfflat" in failures


def test_core_extension_rules_find_vector_columns_without_the_extension(core_pair: LazyDatabases) -> None:
    """Types named like pgvector's, created by hand (e.g. a restored dump without the extension)."""
    with session(core_pair.core) as core:
        core.execute("CREATE TYPE vector AS (x float8)")
        core.execute("CREATE TABLE leftovers (id int, v vector, vs vector[])")
        outcome = core_extension_rules(core)
    assert not outcome.passed
    assert outcome.metadata["vector_extension"] is None
    assert outcome.metadata["vector_columns"] == ["leftovers.v", "leftovers.vs"]


# ---- ai_extension_rules -------------------------------------------------------------------------


@pytest.fixture
def ai_pair(dbs: LazyDatabases) -> LazyDatabases:
    run_all([dbs.source, dbs.ai], AI_SCRIPT)
    return dbs


def _ai_rules(dbs: LazyDatabases) -> CheckOutcome:
    with source_session(dbs.source) as src, session(dbs.ai) as ai:
        outcome = ai_extension_rules(src, ai, AI_TABLES)
    json.dumps(outcome.to_dict())
    return outcome


def test_ai_extension_rules_pass_when_every_vector_index_matches(ai_pair: LazyDatabases) -> None:
    outcome = _ai_rules(ai_pair)
    assert outcome.passed, outcome.failures
    assert str(outcome.metadata["vector_version"]).startswith("0.8")
    indexes = outcome.metadata["indexes"]
    assert isinstance(indexes, list) and len(indexes) == 2
    hnsw = next(i for i in indexes if i["source"]["access_method"] == "hnsw")  # type: ignore[index]
    assert hnsw["ai"]["options"] == {"m": "16", "ef_construction": "64"}  # type: ignore[index]
    assert hnsw["ai"]["opclasses"] == ["vector_cosine_ops"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("corruption", "expected"),
    [
        pytest.param(
            "DROP INDEX ix_ai_kb_documents_embedding_hnsw",
            "ai_kb_documents: index ix_ai_kb_documents_embedding_hnsw "
            "(USING hnsw (embedding vector_cosine_ops) WITH (ef_construction=64, m=16)) missing on AI; "
            "AI has no such index",
            id="dropped-index",
        ),
        pytest.param(
            "DROP INDEX ix_ai_kb_documents_embedding_hnsw; "
            "CREATE INDEX ix_ai_kb_documents_embedding_hnsw ON ai_kb_documents "
            "USING hnsw (embedding vector_l2_ops)",
            "ai_kb_documents: index ix_ai_kb_documents_embedding_hnsw "
            "(USING hnsw (embedding vector_cosine_ops)",
            id="other-operator-class",
        ),
        pytest.param(
            "DROP INDEX ix_ai_kb_documents_embedding_hnsw; "
            "CREATE INDEX ix_ai_kb_documents_embedding_hnsw ON ai_kb_documents "
            "USING hnsw (embedding vector_cosine_ops) WITH (m = 8)",
            "ai_kb_documents: index ix_ai_kb_documents_embedding_hnsw",
            id="other-m",
        ),
        pytest.param(
            "DROP INDEX ix_ai_kb_documents_summary_ivf; CREATE INDEX ix_ai_kb_documents_summary_ivf "
            "ON ai_kb_documents USING hnsw (summary_embedding halfvec_l2_ops)",
            "ai_kb_documents: index ix_ai_kb_documents_summary_ivf (USING ivfflat",
            id="other-access-method",
        ),
        pytest.param(
            "UPDATE pg_index SET indisvalid = false "
            "WHERE indexrelid = 'ix_ai_kb_documents_embedding_hnsw'::regclass",
            "ai_kb_documents: index ix_ai_kb_documents_embedding_hnsw is invalid on AI",
            id="invalid-index",
        ),
        pytest.param(
            "DROP TABLE ai_kb_documents; DROP EXTENSION vector",
            "ai: extension vector is not installed",
            id="no-extension",
        ),
    ],
)
def test_ai_extension_rules_fail_naming_table_and_index(
    ai_pair: LazyDatabases, corruption: str, expected: str
) -> None:
    run(ai_pair.ai, corruption)
    outcome = _ai_rules(ai_pair)
    assert not outcome.passed
    assert any(f.startswith(expected) for f in outcome.failures), outcome.failures


def test_ai_extension_rules_default_options_are_the_same_index(ai_pair: LazyDatabases) -> None:
    # WITH (m = 16, ef_construction = 64) on the source; pgvector's defaults (no WITH) on AI
    run(
        ai_pair.ai,
        "DROP INDEX ix_ai_kb_documents_embedding_hnsw; CREATE INDEX ix_ai_kb_documents_embedding_hnsw "
        "ON ai_kb_documents USING hnsw (embedding vector_cosine_ops)",
    )
    assert _ai_rules(ai_pair).passed


def test_ai_extension_rules_pass_vector_columns_the_source_left_unindexed(ai_pair: LazyDatabases) -> None:
    """The rule is "every vector index the source has exists and is valid on AI": an unindexed
    `sparsevec` column, or a `halfvec(16)[]` column (which no hnsw/ivfflat index can carry), is a
    correct copy when the source has no index on it either (issue 18, defect 6)."""
    run_all(
        [ai_pair.source, ai_pair.ai],
        "ALTER TABLE ai_memories ADD COLUMN sv sparsevec(5), ADD COLUMN hv halfvec(16)[], "
        "ADD COLUMN embedding vector(3)",
    )
    outcome = _ai_rules(ai_pair)
    assert outcome.passed, outcome.failures
    assert outcome.metadata["unindexed_vector_columns"] == [
        "ai_memories.embedding",
        "ai_memories.hv",
        "ai_memories.sv",
    ]
    # an index AI has beyond the source's is no failure either
    run(ai_pair.ai, "CREATE INDEX ON ai_memories USING hnsw (embedding vector_ip_ops)")
    assert _ai_rules(ai_pair).passed
    # but an index the source has on such a column must be on AI, and valid
    run(ai_pair.source, "CREATE INDEX ix_mem_sv ON ai_memories USING hnsw (sv sparsevec_l2_ops)")
    outcome = _ai_rules(ai_pair)
    assert not outcome.passed
    assert outcome.failures[0].startswith("ai_memories: index ix_mem_sv (USING hnsw (sv sparsevec_l2_ops)")


def test_schema_parity_between_a_postgresql_16_source_and_an_18_target(
    dbs: LazyDatabases, pg16_server: EmbeddedServer, new_database: DatabaseFactory
) -> None:
    """The source may run an older major version: its catalog text must still compare equal."""
    pg16 = new_database(pg16_server)
    run_all([pg16, dbs.core], CORE_SCRIPT)
    run_all([pg16, dbs.ai], AI_SCRIPT)
    core = _parity(pg16, dbs.core, CORE_TABLES)
    assert core.passed, core.failures
    ai = _parity(pg16, dbs.ai, AI_TABLES)
    assert ai.passed, ai.failures
    with source_session(pg16) as src, session(dbs.ai) as tgt:
        assert ai_extension_rules(src, tgt, AI_TABLES).passed
    run(dbs.core, "ALTER TABLE portfolios DROP CONSTRAINT portfolios_value_check")
    assert not _parity(pg16, dbs.core, CORE_TABLES).passed
