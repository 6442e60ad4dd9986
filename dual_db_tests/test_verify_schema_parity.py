"""schema_parity after a real pg_dump -> restore: PostgreSQL's deparse/re-parse drift is not a difference.

`x IN ('a', 'b')` over a varchar column is stored and printed as
`(x)::text = ANY ((ARRAY['a'::character varying, ...])::text[])`; restoring that text gives a tree
that prints as `(x)::text = ANY (ARRAY[('a'::character varying)::text, ...])`. schema_parity puts the
source's print through the target's parser before it reports a difference; real differences stay.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from dual_db.db.connect import connect
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedServer, pg_bin_dir
from dual_db.schema.apply import apply_sql
from dual_db.schema.dump import dump_schema_sections
from dual_db.verify.checks import schema_parity
from dual_db.verify.outcome import CheckOutcome
from dual_db.verify.reparse import reconcile_reparse_drift
from dual_db.verify.schema import compare_tables, describe_table
from dual_db_tests.conftest import DatabaseFactory, Databases
from dual_db_tests.verify_support import run, session, source_session

SOURCE_SCRIPT = """
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TABLE portfolios (
    id int PRIMARY KEY,
    account_type varchar(20) NOT NULL
        CONSTRAINT ck_portfolios_account_type CHECK (account_type IN ('taxable', 'ira', 'roth_ira')),
    kind varchar(10) DEFAULT 'a'::varchar,
    tier varchar(10)
        DEFAULT CASE WHEN current_user::varchar IN ('admin', 'root') THEN 'gold' ELSE 'basic' END,
    name varchar(40),
    retirement boolean GENERATED ALWAYS AS (account_type IN ('ira', 'roth_ira')) STORED,
    CONSTRAINT ex_portfolios_one_ira
        EXCLUDE USING btree (name WITH =) WHERE (account_type IN ('ira', 'roth_ira'))
);
CREATE INDEX ix_portfolios_label ON portfolios ((name || '-'::varchar || account_type))
    WHERE account_type IN ('ira', 'roth_ira');
CREATE INDEX ix_portfolios_retirement ON portfolios ((account_type IN ('ira', 'roth_ira')));
CREATE TRIGGER portfolios_touch BEFORE UPDATE ON portfolios
    FOR EACH ROW WHEN (new.account_type IN ('ira', 'roth_ira')) EXECUTE FUNCTION touch();
INSERT INTO portfolios (id, account_type, name) VALUES (1, 'ira', 'a'), (2, 'taxable', 'b');
"""
TABLES = [TableName("public", "portfolios")]

# What PostgreSQL 18 re-parses into other text after pg_dump: each is compared through the target's parser.
DRIFTING = {
    "constraint ck_portfolios_account_type",
    "constraint ex_portfolios_one_ira",
    "column tier default",
    "column retirement generation expression",
    "index ix_portfolios_label",
    "index ix_portfolios_retirement",
    "index ex_portfolios_one_ira",  # the exclusion constraint's index
    "trigger portfolios_touch",
}


def _restore_schema(source: DatabaseUrl, target: DatabaseUrl) -> None:
    """The source's schema on the target the way the migration does it: pg_dump 18, applied as printed."""
    sections = dump_schema_sections(source, bin_dir=pg_bin_dir(18))
    apply_sql(target, sections.pre_data)
    apply_sql(target, sections.post_data)


def _parity(source: DatabaseUrl, target: DatabaseUrl, *, read_only_target: bool = False) -> CheckOutcome:
    with source_session(source) as src, connect(target, autocommit=True, read_only=read_only_target) as tgt:
        outcome = schema_parity(src, tgt, TABLES)
        assert tgt.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        leftover = tgt.execute("SELECT to_regclass('pg_temp.dual_db_reparse')").fetchone()
        assert leftover == (None,)
    json.dumps(outcome.to_dict())
    return outcome


def _raw_differences(source: DatabaseUrl, target: DatabaseUrl) -> list[str]:
    """The comparison without re-parsing: proves the test data really drifts."""
    with source_session(source) as src, session(target) as tgt:
        return compare_tables(
            describe_table(src, TABLES[0]), describe_table(tgt, TABLES[0]), ignore_foreign_keys_to=set()
        )


@pytest.fixture
def restored(databases: Databases) -> Databases:
    run(databases.source, SOURCE_SCRIPT)
    _restore_schema(databases.source, databases.core)
    return databases


def test_definitions_that_drift_through_pg_dump_are_equal_once_reparsed(restored: Databases) -> None:
    raw = _raw_differences(restored.source, restored.core)
    # the premise: compared as text, the faithful restore differs in every drifting definition
    assert any(d.startswith("portfolios: constraint ck_portfolios_account_type differs") for d in raw), raw
    assert any(d.startswith("portfolios: column tier differs") for d in raw), raw
    assert any(d.startswith("portfolios: column retirement differs") for d in raw), raw
    assert any(d.startswith("portfolios: index ix_portfolios_label differs") for d in raw), raw
    assert any(d.startswith("portfolios: trigger portfolios_touch differs") for d in raw), raw
    assert not any("column kind" in d for d in raw), raw  # a plain varchar default prints back the same

    outcome = _parity(restored.source, restored.core)
    assert outcome.passed, outcome.failures
    assert outcome.summary == "1 table: schema identical to the source"
    reparsed = outcome.metadata["equal_after_reparse"]
    assert isinstance(reparsed, list)
    assert {
        str(n).removeprefix("portfolios: ").removesuffix(" equal once re-parsed by the target's server")
        for n in reparsed
    } == DRIFTING


def test_the_brief_reproduction_with_the_printed_constraint_text(databases: Databases) -> None:
    """Target created from `pg_get_constraintdef`'s text, no pg_dump involved."""
    run(
        databases.source,
        "CREATE TABLE portfolios (id int PRIMARY KEY, account_type varchar(20) CONSTRAINT "
        "ck_portfolios_account_type CHECK (account_type IN ('taxable','ira','roth_ira')), "
        "kind varchar(10) DEFAULT 'a'::varchar)",
    )
    with session(databases.source) as src:
        row = src.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'ck_portfolios_account_type'"
        ).fetchone()
    assert row is not None
    run(
        databases.core,
        "CREATE TABLE portfolios (id int PRIMARY KEY, account_type varchar(20) CONSTRAINT "
        f"ck_portfolios_account_type {row[0]}, kind varchar(10) DEFAULT 'a'::varchar)",
    )
    assert _raw_differences(databases.source, databases.core)
    outcome = _parity(databases.source, databases.core)
    assert outcome.passed, outcome.failures


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            "ALTER TABLE portfolios DROP CONSTRAINT ck_portfolios_account_type, ADD CONSTRAINT "
            "ck_portfolios_account_type CHECK (account_type IN ('taxable', 'ira'))",
            "portfolios: constraint ck_portfolios_account_type differs (source check constraint "
            "CHECK (((account_type)::text = ANY ((ARRAY['taxable'::character varying, 'ira'::character "
            "varying, 'roth_ira'::character varying])::text[]))), target check constraint "
            "CHECK (((account_type)::text = ANY ((ARRAY['taxable'::character varying, 'ira'::character "
            "varying])::text[])))",
            id="other-in-list",
        ),
        pytest.param(
            "ALTER TABLE portfolios DROP CONSTRAINT ck_portfolios_account_type, ADD CONSTRAINT "
            "ck_portfolios_account_type CHECK (account_type IN ('taxable', 'ira', 'roth_ira')) NOT VALID",
            "portfolios: constraint ck_portfolios_account_type differs",
            id="not-valid-on-target",
        ),
        pytest.param(
            "ALTER TABLE portfolios ALTER COLUMN tier SET DEFAULT "
            "CASE WHEN current_user::varchar IN ('admin') THEN 'gold' ELSE 'basic' END",
            "portfolios: column tier differs",
            id="other-drifting-default",
        ),
        pytest.param(
            "ALTER TABLE portfolios ALTER COLUMN kind SET DEFAULT 'b'::varchar",
            "portfolios: column kind differs (source character varying(10) DEFAULT 'a'::character varying, "
            "target character varying(10) DEFAULT 'b'::character varying)",
            id="other-varchar-default",
        ),
        pytest.param(
            "ALTER TABLE portfolios ALTER COLUMN retirement SET EXPRESSION AS (account_type IN ('ira'))",
            "portfolios: column retirement differs",
            id="other-generation-expression",
        ),
        pytest.param(
            "DROP INDEX ix_portfolios_label; CREATE INDEX ix_portfolios_label ON portfolios "
            "((kind || '-'::varchar || account_type)) WHERE account_type IN ('ira', 'roth_ira')",
            "portfolios: index ix_portfolios_label differs",
            id="other-index-column",
        ),
        pytest.param(
            "DROP INDEX ix_portfolios_label; CREATE INDEX ix_portfolios_label ON portfolios "
            "((name || '-'::varchar || account_type)) WHERE account_type IN ('ira')",
            "portfolios: index ix_portfolios_label differs",
            id="other-index-predicate",
        ),
        pytest.param(
            "DROP INDEX ix_portfolios_retirement; CREATE UNIQUE INDEX ix_portfolios_retirement "
            "ON portfolios ((account_type IN ('ira', 'roth_ira')), id)",
            "portfolios: index ix_portfolios_retirement differs",
            id="other-index-uniqueness",
        ),
        pytest.param(
            "DROP TRIGGER portfolios_touch ON portfolios; CREATE TRIGGER portfolios_touch BEFORE UPDATE "
            "ON portfolios FOR EACH ROW WHEN (new.account_type IN ('ira')) EXECUTE FUNCTION touch()",
            "portfolios: trigger portfolios_touch differs",
            id="other-trigger-when",
        ),
        pytest.param(
            "ALTER TABLE portfolios DROP CONSTRAINT ex_portfolios_one_ira, ADD CONSTRAINT "
            "ex_portfolios_one_ira EXCLUDE USING btree (name WITH =) WHERE (account_type IN ('ira'))",
            "portfolios: constraint ex_portfolios_one_ira differs",
            id="other-exclusion-predicate",
        ),
        pytest.param(
            "ALTER TABLE portfolios RENAME CONSTRAINT ck_portfolios_account_type TO ck_account_type",
            "portfolios: constraint named differently (source ck_portfolios_account_type, "
            "target ck_account_type): check constraint CHECK (((account_type)::text = ANY "
            "(ARRAY[('taxable'::character varying)::text",
            id="renamed-check",
        ),
        pytest.param(
            "ALTER INDEX ix_portfolios_label RENAME TO ix_label",
            "portfolios: index named differently (source ix_portfolios_label, target ix_label)",
            id="renamed-index",
        ),
        pytest.param(
            "ALTER TABLE portfolios DROP CONSTRAINT ck_portfolios_account_type",
            "portfolios: constraint ck_portfolios_account_type missing on target",
            id="dropped-check",
        ),
    ],
)
def test_real_differences_still_fail_after_the_round_trip(
    restored: Databases, change: str, expected: str
) -> None:
    run(restored.core, change)
    outcome = _parity(restored.source, restored.core)
    assert not outcome.passed
    assert any(f.startswith(expected) for f in outcome.failures), outcome.failures


def test_a_target_session_that_cannot_create_temporary_tables_keeps_the_difference(
    restored: Databases,
) -> None:
    # read-only: CREATE TEMPORARY TABLE fails, so nothing is re-parsed; the check still answers
    outcome = _parity(restored.source, restored.core, read_only_target=True)
    assert not outcome.passed
    assert any(
        f.startswith("portfolios: constraint ck_portfolios_account_type differs") for f in outcome.failures
    )
    assert outcome.metadata["equal_after_reparse"] == []


def test_the_callers_transaction_on_the_target_survives(restored: Databases) -> None:
    with source_session(restored.source) as src, session(restored.core, autocommit=False) as tgt:
        tgt.execute("CREATE TEMPORARY TABLE callers_own (x int)")
        outcome = schema_parity(src, tgt, TABLES)
        assert outcome.passed, outcome.failures
        assert tgt.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert tgt.execute("SELECT to_regclass('pg_temp.callers_own') IS NOT NULL").fetchone() == (True,)
        assert tgt.execute("SELECT to_regclass('pg_temp.dual_db_reparse')").fetchone() == (None,)
        tgt.rollback()


def test_matching_definitions_cost_no_round_trip(databases: Databases) -> None:
    run(databases.source, SOURCE_SCRIPT)
    run(databases.core, SOURCE_SCRIPT)  # the same statements, not a print of them: no drift
    with source_session(databases.source) as src, session(databases.core) as tgt:
        source, target = describe_table(src, TABLES[0]), describe_table(tgt, TABLES[0])
        tgt.close()
        # a closed connection: any statement would raise
        reconciled, notes = reconcile_reparse_drift(tgt, source, target)
    assert reconciled is source
    assert notes == []


def test_postgresql_16_source_restored_on_18(
    databases: Databases, pg16_server: EmbeddedServer, new_database: DatabaseFactory
) -> None:
    pg16 = new_database(pg16_server)
    run(pg16, SOURCE_SCRIPT)
    _restore_schema(pg16, databases.core)
    outcome = _parity(pg16, databases.core)
    assert outcome.passed, outcome.failures
    run(databases.core, "ALTER TABLE portfolios ALTER COLUMN kind SET DEFAULT 'b'::varchar")
    assert not _parity(pg16, databases.core).passed
