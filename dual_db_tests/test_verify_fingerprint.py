"""The content fingerprint: changes with any single value, ignores row order and session settings,
and is the same on PostgreSQL 16 and 18, and on servers whose user types have other OIDs, for the same
rows. Both row hashes are held to it: `typed-v2` (what copies record now) and `text-v1` (what older
records hold, re-checked with it)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from dual_db.db.catalog import table_columns
from dual_db.db.connect import connect
from dual_db.db.fingerprint import ALGORITHMS, CURRENT_ALGORITHM, TEXT_V1, Fingerprint, table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.defs.state import TableCopyRecord
from dual_db.embedded import EmbeddedCluster, EmbeddedServer
from dual_db.verify.drift import source_drift
from dual_db.verify.parity import checksum_parity
from dual_db_tests.conftest import DatabaseFactory
from dual_db_tests.verify_support import LazyDatabases, run, source_session

# Every type the brief and the demo source use, with values whose text form depends on session settings
# (timestamps, intervals, floats, bytea) and NULLs; a domain, an array of an enum and of int8.
TYPES_SCRIPT = """
CREATE EXTENSION vector;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN money_amount AS numeric(12, 2) CHECK (VALUE > -1000000);
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
    embedding vector(3),
    big bigint,
    small smallint,
    flag boolean,
    code varchar(20),
    currency char(3),
    addr inet,
    plain numeric,
    price money_amount,
    moods mood[],
    ts timestamp,
    counts bigint[],
    tree jsonb
);
INSERT INTO sample
SELECT g,
       g * 1.000001,
       CASE WHEN g = 26 THEN 0 ELSE g / 7.0 END,
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
       ARRAY[g, g / 7.0, -g / 3.0]::real[]::vector,
       g * 1000003,
       g % 300,
       g % 2 = 0,
       'code ' || g,
       'USD',
       ('10.0.' || g / 256 || '.' || g % 256)::inet,
       CASE WHEN g = 23 THEN 'NaN' ELSE g * 1.5 END,
       g * 2.25,
       ARRAY['ok', 'happy']::mood[],
       timestamp '2024-03-10 01:30:00' + g * interval '1 hour 1 second',
       ARRAY[g, g * 4294967296, NULL],
       jsonb_build_array(jsonb_build_array(g), g + 1)
FROM generate_series(1, 200) AS g;
"""

SAMPLE = TableName("public", "sample")


@pytest.fixture
def dbs(servers: EmbeddedCluster, new_database: DatabaseFactory) -> LazyDatabases:
    return LazyDatabases(servers, new_database)


def _fingerprint(
    url: DatabaseUrl,
    table: TableName = SAMPLE,
    *,
    columns_from: DatabaseUrl | None = None,
    algorithm: str = CURRENT_ALGORITHM,
) -> Fingerprint:
    """Fingerprint as verification does: a pinned, read-only session as the SELECT-only role."""
    with source_session(columns_from or url) as conn:
        columns = table_columns(conn, SAMPLE)
    with source_session(url) as conn:
        return table_fingerprint(conn, table, columns, algorithm=algorithm)


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
    # One value of every other column type.
    pytest.param("UPDATE {t} SET id = id + 1000 WHERE id = 30", id="int4"),
    pytest.param("UPDATE {t} SET small = small + 1 WHERE id = 31", id="int2"),
    pytest.param("UPDATE {t} SET big = big + 1 WHERE id = 32", id="int8"),
    pytest.param("UPDATE {t} SET flag = NOT flag WHERE id = 28", id="bool"),
    pytest.param("UPDATE {t} SET day = day + 1 WHERE id = 29", id="date"),
    pytest.param("UPDATE {t} SET ref = md5('other')::uuid WHERE id = 27", id="uuid"),
    pytest.param("UPDATE {t} SET code = code || 'x' WHERE id = 33", id="varchar"),
    pytest.param("UPDATE {t} SET code = code || ' ' WHERE id = 34", id="varchar-trailing-space"),
    pytest.param("UPDATE {t} SET currency = 'EUR' WHERE id = 35", id="char-n"),
    pytest.param("UPDATE {t} SET addr = set_masklen(addr, 24) WHERE id = 36", id="inet-netmask"),
    pytest.param("UPDATE {t} SET price = price + 0.01 WHERE id = 37", id="domain-over-numeric"),
    pytest.param("UPDATE {t} SET moods[2] = 'sad' WHERE id = 38", id="array-of-enum"),
    pytest.param("UPDATE {t} SET ts = ts + interval '1 microsecond' WHERE id = 39", id="timestamp"),
    pytest.param("UPDATE {t} SET counts[2] = counts[2] + 1 WHERE id = 40", id="int8-array"),
    pytest.param("UPDATE {t} SET doc = jsonb_set(doc, '{{name}}', '\"m\"') WHERE id = 41", id="jsonb-string"),
    # Changes the types' own hash functions miss (test_the_types_own_hashes_miss...): the row hash
    # uses exact binary forms instead.
    pytest.param(
        "UPDATE {t} SET big = (big # 1) | (1::bigint << 32) WHERE id = 20", id="int8-same-32-bit-fold"
    ),
    pytest.param(
        """UPDATE {t} SET at = timestamptz '2000-01-01 00:00:00+00' + x.n * interval '1 microsecond'
        FROM (SELECT id, ((v >> 32) + 1) << 32 | ((v & 4294967295) # (v >> 32) # ((v >> 32) + 1)) AS n
              FROM (SELECT id, (extract(epoch FROM at - timestamptz '2000-01-01 00:00:00+00')
                                * 1000000)::bigint AS v FROM {t}) AS a) AS x
        WHERE {t}.id = x.id AND x.id = 19""",
        id="timestamptz-same-32-bit-fold",
    ),
    pytest.param("UPDATE {t} SET amount = -amount WHERE id = 21", id="numeric-sign"),
    pytest.param("UPDATE {t} SET plain = plain::numeric(20, 8) WHERE id = 22", id="numeric-scale"),
    pytest.param("UPDATE {t} SET plain = 'Infinity' WHERE id = 23", id="numeric-nan-to-infinity"),
    pytest.param(
        "UPDATE {t} SET tree = jsonb_build_array(jsonb_build_array(tree->0->0, tree->1)) WHERE id = 24",
        id="jsonb-nesting",
    ),
    pytest.param(
        "UPDATE {t} SET span = span - interval '1 day' + interval '24 hours' WHERE id = 25",
        id="interval-1-day-vs-24-hours",
    ),
    pytest.param("UPDATE {t} SET ratio = '-0' WHERE id = 26", id="float-minus-zero"),
    # NULL for a value, and a value for NULL.
    pytest.param("UPDATE {t} SET embedding = NULL WHERE id = 43", id="embedding-to-null"),
    pytest.param("UPDATE {t} SET amount = NULL WHERE id = 44", id="numeric-to-null"),
    pytest.param("UPDATE {t} SET at = NULL WHERE id = 45", id="timestamptz-to-null"),
    pytest.param("UPDATE {t} SET doc = NULL WHERE id = 46", id="jsonb-to-null"),
    pytest.param("UPDATE {t} SET big = NULL WHERE id = 47", id="int8-to-null"),
    pytest.param("UPDATE {t} SET ref = NULL WHERE id = 48", id="uuid-to-null"),
    pytest.param("UPDATE {t} SET flag = NULL WHERE id = 49", id="bool-to-null"),
    pytest.param("UPDATE {t} SET note = 'x' WHERE id = 52", id="null-to-text"),
    # Values swapped: between two columns of one row (text and varchar hash alike by value, so only
    # the position tells them apart), and between two rows of one column.
    pytest.param("UPDATE {t} SET note = code, code = note WHERE id = 50", id="swapped-text-and-varchar"),
    pytest.param(
        """UPDATE {t} SET note = CASE id WHEN 53 THEN (SELECT note FROM {t} WHERE id = 54)
                                     ELSE (SELECT note FROM {t} WHERE id = 53) END
        WHERE id IN (53, 54)""",
        id="swapped-between-two-rows",
    ),
    pytest.param(
        """UPDATE {t} SET embedding = CASE id WHEN 55 THEN (SELECT embedding FROM {t} WHERE id = 57)
                                          ELSE (SELECT embedding FROM {t} WHERE id = 55) END
        WHERE id IN (55, 57)""",
        id="embeddings-swapped-between-two-rows",
    ),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("change", CHANGES)
def test_fingerprint_changes_when_any_single_value_changes(
    sample_db: DatabaseUrl, change: str, algorithm: str
) -> None:
    copy = TableName("public", "case_" + hashlib.sha1((change + algorithm).encode()).hexdigest()[:10])
    with connect(sample_db, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(copy.ident))
        # A copy without the primary key, so a duplicated row can exist.
        conn.execute(sql.SQL("CREATE TABLE {} AS TABLE {}").format(copy.ident, SAMPLE.ident))
    before = _fingerprint(sample_db, copy, algorithm=algorithm)
    # the copy starts identical to the original
    assert before == _fingerprint(sample_db, algorithm=algorithm)
    with connect(sample_db, autocommit=True) as conn:
        changed = conn.execute(sql.SQL(change).format(t=copy.ident)).rowcount
    assert changed >= 1
    after = _fingerprint(sample_db, copy, algorithm=algorithm)
    assert after != before
    if "DELETE" not in change and "INSERT" not in change:
        assert after.rows == before.rows  # the checksum alone tells


def test_the_types_own_hashes_miss_what_the_fingerprint_catches(sample_db: DatabaseUrl) -> None:
    """Why the row hash takes int8, timestamps, numeric, jsonb and interval by their send form: their
    own 64-bit hash functions are equal for these different values (the cases above change them)."""
    with connect(sample_db) as conn:
        same = conn.execute(
            """
            SELECT hashint8extended(1, 0) = hashint8extended((1::bigint << 32) | 0, 0),
                   timestamptz_hash_extended(timestamptz '2000-01-01 00:00:00.000001+00', 0)
                     = timestamptz_hash_extended(
                         timestamptz '2000-01-01 00:00:00+00' + interval '4294967296 microseconds', 0),
                   hash_numeric_extended(5, 0) = hash_numeric_extended(-5, 0),
                   hash_numeric_extended(1.0, 0) = hash_numeric_extended(1.00, 0),
                   hash_numeric_extended('NaN', 0) = hash_numeric_extended('Infinity', 0),
                   jsonb_hash_extended('[[1], 2]', 0) = jsonb_hash_extended('[[1, 2]]', 0),
                   jsonb_hash_extended('[10]', 0) = jsonb_hash_extended('[10.0]', 0),
                   interval_hash_extended('1 day', 0) = interval_hash_extended('24 hours', 0),
                   hashfloat8extended('0', 0) = hashfloat8extended('-0', 0)
            """
        ).fetchone()
    assert same == (True,) * 9


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


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_session_defaults_of_the_target_do_not_change_the_fingerprint(
    dbs: LazyDatabases, algorithm: str
) -> None:
    """A target whose database defaults print values differently fingerprints the same, because
    `connect()` pins the output settings for every session (text-v1 hashes printed rows), and because
    typed-v2 prints nothing that a setting changes."""
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
    source = _fingerprint(dbs.source, algorithm=algorithm)
    target = _fingerprint(dbs.core, columns_from=dbs.source, algorithm=algorithm)
    assert source == target

    # The settings really are different there: an unpinned session prints, and so text-v1 hashes,
    # otherwise; typed-v2 does not depend on them at all.
    with psycopg.connect(**dbs.core.connect_kwargs()) as raw:  # type: ignore[arg-type]
        assert raw.execute("SHOW TimeZone").fetchone() == ("Asia/Tokyo",)
        with connect(dbs.source, read_only=True) as pinned:
            columns = table_columns(pinned, SAMPLE)
        unpinned = table_fingerprint(raw, SAMPLE, columns, algorithm=algorithm)
        if algorithm == TEXT_V1:
            assert unpinned != source
        else:
            assert unpinned == source


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_same_rows_on_postgresql_16_and_18_give_the_same_fingerprint(
    servers: object,
    pg16_server: EmbeddedServer,
    new_database: DatabaseFactory,
    dbs: LazyDatabases,
    algorithm: str,
) -> None:
    pg16 = new_database(pg16_server)
    run(pg16, TYPES_SCRIPT)
    run(dbs.source, TYPES_SCRIPT)
    with connect(pg16) as c16, connect(dbs.source) as c18:
        assert c16.info.server_version // 10000 == 16 and c18.info.server_version // 10000 == 18
    on_18 = _fingerprint(dbs.source, algorithm=algorithm)
    on_16 = _fingerprint(pg16, columns_from=dbs.source, algorithm=algorithm)
    assert on_16 == on_18
    assert on_18.rows == 200


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_same_rows_on_servers_whose_user_types_have_other_oids_give_the_same_fingerprint(
    dbs: LazyDatabases, algorithm: str
) -> None:
    """The AI server creates the vector extension, the enum and the domain after other objects, so
    their type OIDs differ from the source's: the row hash must not depend on them."""
    run(dbs.source, TYPES_SCRIPT)
    run(
        dbs.ai,
        "CREATE TYPE filler_a AS ENUM ('x'); CREATE TYPE filler_b AS (a int); CREATE TABLE filler (a int);"
        + TYPES_SCRIPT,
    )
    oids = "SELECT 'vector'::regtype::oid, 'mood'::regtype::oid, 'money_amount'::regtype::oid"
    with connect(dbs.source) as src, connect(dbs.ai) as ai:
        source_oids, ai_oids = src.execute(oids).fetchone(), ai.execute(oids).fetchone()
    assert source_oids is not None and ai_oids is not None
    assert all(s != a for s, a in zip(source_oids, ai_oids, strict=True)), (source_oids, ai_oids)
    on_source = _fingerprint(dbs.source, algorithm=algorithm)
    assert _fingerprint(dbs.ai, columns_from=dbs.source, algorithm=algorithm) == on_source
    assert on_source.rows == 200 and on_source.algorithm == algorithm


def test_a_fingerprint_recorded_by_an_older_run_is_rechecked_with_its_own_row_hash(
    dbs: LazyDatabases,
) -> None:
    """Copy records written before the row hash changed hold text-v1 checksums and name no algorithm.
    Read back, they say text-v1, and checksum_parity and source_drift recompute with it: no false
    mismatch. The current row hash gives another checksum for the same rows."""
    run(dbs.source, TYPES_SCRIPT)
    run(dbs.core, TYPES_SCRIPT)
    old = _fingerprint(dbs.source, algorithm=TEXT_V1)
    assert _fingerprint(dbs.source) != old  # what a re-check with today's hash would wrongly report

    metadata = {"rows": old.rows, "source_rows": old.rows, "source_checksum": old.checksum}
    record = TableCopyRecord.from_metadata(SAMPLE, metadata)
    assert record is not None and record.source == old and record.source.algorithm == TEXT_V1
    # A new record says which row hash it holds, and reads back the same.
    new = TableCopyRecord(SAMPLE, 200, 0, 0.0, None, _fingerprint(dbs.source), "")
    written = {k: getattr(v, "value", v) for k, v in new.to_metadata().items()}
    assert written["fingerprint_algorithm"] == CURRENT_ALGORITHM
    assert TableCopyRecord.from_metadata(SAMPLE, written) == new

    with source_session(dbs.source) as src:
        columns = table_columns(src, SAMPLE)
    with source_session(dbs.source) as src, connect(dbs.core, autocommit=True) as tgt:
        outcome = checksum_parity(record.source, tgt, SAMPLE, columns, source_conn=src)
        assert outcome.passed, outcome.summary
        assert outcome.metadata["fingerprint_algorithm"] == TEXT_V1
        drift = source_drift(src, {SAMPLE: record.source}, include_new_tables=False)
        assert drift.passed, drift.summary

        # And a real difference is still found, and located, with the old row hash.
        tgt.execute("UPDATE sample SET note = 'changed' WHERE id = 77")
        outcome = checksum_parity(record.source, tgt, SAMPLE, columns, source_conn=src)
        assert not outcome.passed
        assert outcome.metadata["differences"] == [{"kind": "changed", "key": ["77"]}]
        assert outcome.metadata["source_read_matches_snapshot"] is True
