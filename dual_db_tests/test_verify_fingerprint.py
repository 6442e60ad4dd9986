"""The content fingerprint: changes with any single value, ignores row order and session settings,
and is the same on PostgreSQL 16 and 18 for the same rows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from dual_db.db.catalog import table_columns
from dual_db.db.connect import connect
from dual_db.db.fingerprint import Fingerprint, table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedCluster, EmbeddedServer
from dual_db_tests.conftest import DatabaseFactory
from dual_db_tests.verify_support import LazyDatabases, run, source_session

# Every type the brief names, with values whose text form depends on session settings (timestamps,
# intervals, floats, bytea) and NULLs.
TYPES_SCRIPT = """
CREATE EXTENSION vector;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE sample (
    id int PRIMARY KEY,
    amount numeric(18,6),
    ratio float8,
    at timestamptz,
    day date,
    doc jsonb,
    labels text[],
    ref uuid,
    feeling mood,
    raw bytea,
    span interval,
    note text,
    other text,
    embedding vector(3)
);
INSERT INTO sample
SELECT g,
       g * 1.000001,
       g / 7.0,
       timestamptz '2024-03-10 01:30:00+00' + g * interval '37 minutes 12.5 seconds',
       date '2024-01-01' + g,
       jsonb_build_object('g', g, 'name', 'n' || g, 'nested', jsonb_build_array(g, g / 3.0, null)),
       ARRAY['a b', 'c"d', 'e''f', NULL, g::text],
       md5('r' || g)::uuid,
       (ARRAY['sad', 'ok', 'happy']::mood[])[1 + g % 3],
       decode(md5('b' || g), 'hex'),
       make_interval(days => g, hours => g % 24, secs => g / 10.0),
       CASE WHEN g % 4 = 0 THEN NULL ELSE 'note ' || g END,
       CASE WHEN g % 3 = 0 THEN '' ELSE 'other ' || g END,
       ARRAY[g, g / 7.0, -g / 3.0]::real[]::vector
FROM generate_series(1, 200) AS g;
"""

SAMPLE = TableName("public", "sample")


@pytest.fixture
def dbs(servers: EmbeddedCluster, new_database: DatabaseFactory) -> LazyDatabases:
    return LazyDatabases(servers, new_database)


def _fingerprint(
    url: DatabaseUrl, table: TableName = SAMPLE, *, columns_from: DatabaseUrl | None = None
) -> Fingerprint:
    """Fingerprint as verification does: a pinned, read-only session as the SELECT-only role."""
    with source_session(columns_from or url) as conn:
        columns = table_columns(conn, SAMPLE)
    with source_session(url) as conn:
        return table_fingerprint(conn, table, columns)


@pytest.fixture(scope="module")
def sample_db(servers: EmbeddedCluster) -> Iterator[DatabaseUrl]:
    """One database for the single-value cases: each works on its own copy of the table."""
    server = servers["source"]
    name = "verify_fingerprint_cases"
    server.drop_database(name)
    server.ensure_database(name)
    url = server.url(name)
    run(url, TYPES_SCRIPT)
    yield url
    server.drop_database(name)


@pytest.fixture
def sample(dbs: LazyDatabases) -> DatabaseUrl:
    run(dbs.source, TYPES_SCRIPT)
    return dbs.source


CHANGES = [
    pytest.param("UPDATE {t} SET amount = amount + 0.000001 WHERE id = 17", id="one-numeric-digit"),
    pytest.param("UPDATE {t} SET ratio = 'NaN' WHERE id = 5", id="float"),
    pytest.param("UPDATE {t} SET embedding = '[42,6.0001,-14]' WHERE id = 42", id="one-embedding-component"),
    # id 4: note is NULL; id 3: other is ''
    pytest.param("UPDATE {t} SET note = '' WHERE id = 4", id="null-to-empty-string"),
    pytest.param("UPDATE {t} SET other = NULL WHERE id = 3", id="empty-string-to-null"),
    pytest.param(
        "UPDATE {t} SET note = other, other = note WHERE id = 5", id="swapped-values-in-two-columns"
    ),
    pytest.param("UPDATE {t} SET labels[4] = 'NULL' WHERE id = 8", id="array-null-vs-text-NULL"),
    pytest.param("UPDATE {t} SET at = at + interval '1 microsecond' WHERE id = 9", id="timestamp"),
    pytest.param("UPDATE {t} SET doc = doc || '{{\"g\": 10.0}}' WHERE id = 10", id="jsonb-number-scale"),
    pytest.param("UPDATE {t} SET raw = raw || '\\x00' WHERE id = 11", id="bytea"),
    pytest.param("UPDATE {t} SET feeling = 'happy' WHERE id = 12", id="enum"),
    pytest.param("UPDATE {t} SET span = span + interval '1 microsecond' WHERE id = 15", id="interval"),
    pytest.param("DELETE FROM {t} WHERE id = 13", id="deleted-row"),
    pytest.param("INSERT INTO {t} SELECT * FROM {t} WHERE id = 14", id="duplicated-row"),
]


@pytest.mark.parametrize("change", CHANGES)
def test_fingerprint_changes_when_any_single_value_changes(sample_db: DatabaseUrl, change: str) -> None:
    copy = TableName("public", "case_" + hashlib.sha1(change.encode()).hexdigest()[:10])
    with connect(sample_db, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(copy.ident))
        # A copy without the primary key, so a duplicated row can exist.
        conn.execute(sql.SQL("CREATE TABLE {} AS TABLE {}").format(copy.ident, SAMPLE.ident))
    before = _fingerprint(sample_db, copy)
    assert before == _fingerprint(sample_db)  # the copy starts identical to the original
    with connect(sample_db, autocommit=True) as conn:
        conn.execute(sql.SQL(change).format(t=copy.ident))
    assert _fingerprint(sample_db, copy) != before


def test_two_identical_rows_do_not_cancel_out(sample: DatabaseUrl) -> None:
    run(sample, "ALTER TABLE sample DROP CONSTRAINT sample_pkey")
    run(sample, "INSERT INTO sample SELECT * FROM sample WHERE id <= 2")
    with source_session(sample) as conn:
        doubled = table_fingerprint(conn, SAMPLE)
    run(sample, "DELETE FROM sample WHERE id <= 2")
    with source_session(sample) as conn:
        none = table_fingerprint(conn, SAMPLE)
    assert doubled.rows == none.rows + 4 and doubled.checksum != none.checksum


def test_same_rows_in_a_different_physical_order_give_the_same_fingerprint(sample: DatabaseUrl) -> None:
    run(
        sample,
        """
        CREATE TABLE shuffled (LIKE sample INCLUDING ALL);
        INSERT INTO shuffled SELECT * FROM sample ORDER BY md5(id::text);
        CREATE TABLE reversed (LIKE sample INCLUDING ALL);
        INSERT INTO reversed SELECT * FROM sample ORDER BY id DESC;
        -- an update moves a row to the end of the heap and back to its old content
        UPDATE reversed SET note = 'x' WHERE id = 101;
        UPDATE reversed SET note = 'note 101' WHERE id = 101;
        """,
    )
    original = _fingerprint(sample)
    assert _fingerprint(sample, TableName("public", "shuffled")) == original
    assert _fingerprint(sample, TableName("public", "reversed")) == original
    assert original.rows == 200


def test_session_defaults_of_the_target_do_not_change_the_fingerprint(dbs: LazyDatabases) -> None:
    """A target whose database defaults print values differently fingerprints the same, because
    `connect()` pins the output settings for every session."""
    run(dbs.source, TYPES_SCRIPT)
    run(dbs.core, TYPES_SCRIPT)
    dbname = sql.Identifier(dbs.core.dbname or "")
    with connect(dbs.core, autocommit=True) as conn:
        for setting, value in [
            ("TimeZone", "Asia/Tokyo"),
            ("DateStyle", "SQL, DMY"),
            ("extra_float_digits", "0"),
            ("IntervalStyle", "sql_standard"),
            ("bytea_output", "escape"),
        ]:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    dbname, sql.Identifier(setting), sql.Literal(value)
                )
            )
    source = _fingerprint(dbs.source)
    target = _fingerprint(dbs.core, columns_from=dbs.source)
    assert source == target

    # The settings really are different there: an unpinned session prints, and so hashes, otherwise.
    with psycopg.connect(**dbs.core.connect_kwargs()) as raw:  # type: ignore[arg-type]
        assert raw.execute("SHOW TimeZone").fetchone() == ("Asia/Tokyo",)
        with connect(dbs.source, read_only=True) as pinned:
            columns = table_columns(pinned, SAMPLE)
        assert table_fingerprint(raw, SAMPLE, columns) != source


def test_same_rows_on_postgresql_16_and_18_give_the_same_fingerprint(
    servers: object, pg16_server: EmbeddedServer, new_database: DatabaseFactory, dbs: LazyDatabases
) -> None:
    pg16 = new_database(pg16_server)
    run(pg16, TYPES_SCRIPT)
    run(dbs.source, TYPES_SCRIPT)
    with connect(pg16) as c16, connect(dbs.source) as c18:
        assert c16.info.server_version // 10000 == 16 and c18.info.server_version // 10000 == 18
    on_18 = _fingerprint(dbs.source)
    on_16 = _fingerprint(pg16, columns_from=dbs.source)
    assert on_16 == on_18
    assert on_18.rows == 200
