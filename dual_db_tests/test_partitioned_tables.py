"""Partitioned tables end to end (issue 18, defect 4): routed by their parent, copied leaf by leaf,
verified per leaf and for the whole table, re-materialized as one table, against real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dual_db.copy.engine import CopyError
from dual_db.copy.partitions import copy_units
from dual_db.db.catalog import list_tables, partitions_of
from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.defs.resources import SourceDatabase
from dual_db.defs.source.checks import _routing_complete
from dual_db.routing import RoutingPlan, discover
from dual_db.schema.ownership import (
    OwnedObject,
    OwnershipError,
    TargetMarker,
    catalog_objects,
    owned_tables_guard,
    read_marker,
    write_marker,
)
from dual_db_tests.conftest import Databases
from dual_db_tests.job_support import migration_environment, run_job

# The shape: `events` by range, three partitions and a default, a plain table with a foreign
# key to the parent; a sub-partitioned `metrics` (range, then list); a partitioned AI table.
SOURCE_SQL = """
CREATE EXTENSION vector;
CREATE TABLE events (id bigint NOT NULL, ts timestamptz NOT NULL, kind text, payload jsonb,
    PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts);
CREATE TABLE events_2024_q1 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-04-01');
CREATE TABLE events_2024_q2 PARTITION OF events FOR VALUES FROM ('2024-04-01') TO ('2024-07-01');
CREATE TABLE events_2024_q3 PARTITION OF events FOR VALUES FROM ('2024-07-01') TO ('2024-10-01');
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE INDEX ix_events_kind ON events (kind);
CREATE TABLE event_notes (id serial PRIMARY KEY, event_id bigint NOT NULL, event_ts timestamptz NOT NULL,
    note text, FOREIGN KEY (event_id, event_ts) REFERENCES events (id, ts));
CREATE TABLE metrics (id bigserial, day date NOT NULL, region text NOT NULL, value numeric)
    PARTITION BY RANGE (day);
CREATE TABLE metrics_2024 PARTITION OF metrics FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')
    PARTITION BY LIST (region);
CREATE TABLE metrics_2024_eu PARTITION OF metrics_2024 FOR VALUES IN ('eu');
CREATE TABLE metrics_2024_us PARTITION OF metrics_2024 FOR VALUES IN ('us');
-- created on its own, its columns in another order, then attached: its row hashes differ in order
CREATE TABLE metrics_old (value numeric, region text NOT NULL, id bigint NOT NULL, day date NOT NULL);
ALTER TABLE metrics ATTACH PARTITION metrics_old FOR VALUES FROM ('2000-01-01') TO ('2024-01-01');
CREATE TABLE ai_chunks (id int NOT NULL, day date NOT NULL, embedding vector(3), PRIMARY KEY (id, day))
    PARTITION BY RANGE (day);
CREATE TABLE ai_chunks_2024 PARTITION OF ai_chunks FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE ai_chunks_rest PARTITION OF ai_chunks DEFAULT;
CREATE INDEX ix_ai_chunks_embedding ON ai_chunks USING hnsw (embedding vector_l2_ops);

INSERT INTO events SELECT i, '2024-01-01'::timestamptz + i * interval '1 hour', 'k' || (i % 5),
    jsonb_build_object('i', i) FROM generate_series(1, 9000) i;
INSERT INTO event_notes (event_id, event_ts, note)
SELECT id, ts, 'note ' || id FROM events WHERE id % 10 = 0;
INSERT INTO metrics (day, region, value)
SELECT '2023-06-01'::date + (i % 400), CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, i
FROM generate_series(1, 3000) i;
INSERT INTO ai_chunks SELECT i, '2023-10-01'::date + (i % 200), ARRAY[i, i + 1, i + 2]::vector
FROM generate_series(1, 500) i;
"""

EVENT_LEAVES = {f"public.events_2024_q{q}" for q in (1, 2, 3)} | {"public.events_default"}


@pytest.fixture
def environment(databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Databases]:
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(SOURCE_SQL)  # type: ignore[arg-type]
    migration_environment(monkeypatch, tmp_path, databases.source, databases.core, databases.ai)
    yield databases


def _failures(result: dg.ExecuteInProcessResult) -> list[str]:
    failed = [e.message or "" for e in result.all_events if e.is_failure]
    failed += [
        f"{e.asset_key.to_user_string()} {e.check_name}: {e.description}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]
    return failed


def test_partitioned_tables_are_routed_copied_and_verified_by_parent(environment: Databases) -> None:
    from dual_db.defs.targets.schema import _split_once

    dbs = environment
    _split_once.cache_clear()
    # Discovery lists the parents, never their partitions; the partitioned table with a vector column
    # goes to AI.
    with connection(dbs.source) as conn:
        plan, _ = discover(conn)
        listed = {i.table.qualified: i for i in list_tables(conn)}
        leaves = {
            r[0]
            for r in conn.execute(
                "SELECT relid::regclass::text FROM pg_partition_tree('events') WHERE isleaf"
            )
        }
        default_rows = conn.execute("SELECT count(*) FROM events_default").fetchone()
    assert sorted(t.qualified for t in plan.core) == ["public.event_notes", "public.events", "public.metrics"]
    assert [t.qualified for t in plan.ai] == ["public.ai_chunks"]
    assert {f"public.{t}" for t in leaves} == EVENT_LEAVES
    # The parent's size and row estimate are its leaves' (a partitioned parent stores nothing).
    assert listed["public.events"].bytes > 0
    plan.save()

    with dg.DagsterInstance.ephemeral() as instance:
        result = run_job("migrate", instance)
        assert result.success and not _failures(result), _failures(result)
        report = instance.get_latest_materialization_event(dg.AssetKey("verification_report"))
        assert report is not None and report.asset_materialization is not None
        assert (
            report.asset_materialization.metadata["summary"].value == "4/4 tables identical, 0 rows missing"
        )

        event = instance.get_latest_materialization_event(dg.AssetKey(["core", "events"]))
        assert event is not None and event.asset_materialization is not None
        metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        assert metadata["rows"] == 9000 and metadata["source_rows"] == 9000
        assert metadata["source_checksum"] == metadata["target_checksum"]
        # One COPY per leaf, each counted and fingerprinted on both sides.
        per_leaf = {r.data["partition"]: r.data for r in metadata["partitions"].records}
        assert set(per_leaf) == EVENT_LEAVES
        assert sum(r["rows"] for r in per_leaf.values()) == 9000
        assert all(r["source_checksum"] == r["target_checksum"] and r["rows"] > 0 for r in per_leaf.values())
        metrics = instance.get_latest_materialization_event(dg.AssetKey(["core", "metrics"]))
        assert metrics is not None and metrics.asset_materialization is not None
        metrics_leaves = {
            r.data["partition"] for r in metrics.asset_materialization.metadata["partitions"].value.records
        }
        assert metrics_leaves == {"public.metrics_2024_eu", "public.metrics_2024_us", "public.metrics_old"}

        with connection(dbs.core) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (9000,)
            assert conn.execute("SELECT count(*) FROM ONLY events_default").fetchone() == default_rows
            assert conn.execute("SELECT count(*) FROM metrics").fetchone() == (3000,)
            # The plain table's foreign key to the partitioned parent is in place (and enforced).
            fk = conn.execute(
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conparentid = 0 "
                "AND conrelid = 'event_notes'::regclass AND confrelid = 'events'::regclass AND convalidated"
            ).fetchone()
            assert fk == (1,)
            assert conn.execute("SELECT to_regclass('ix_events_kind') IS NOT NULL").fetchone() == (True,)
            marker = read_marker(conn)
            assert marker is not None
            owned = {t.qualified for t in marker.tables}
            assert {"public.events", "public.metrics", "public.metrics_2024", *EVENT_LEAVES} <= owned
        with connection(dbs.ai) as conn:
            assert conn.execute("SELECT count(*) FROM ai_chunks").fetchone() == (500,)
            assert conn.execute("SELECT to_regclass('events') IS NULL").fetchone() == (True,)

        # A one-table redo of the parent replaces every leaf, and nothing else.
        with connection(dbs.core, autocommit=True) as conn:
            conn.execute("DELETE FROM events_2024_q2 WHERE id % 3 = 0 AND id % 10 <> 0")
            notes_before = conn.execute("SELECT array_agg(xmin::text ORDER BY 1) FROM event_notes").fetchone()
        single = run_job("migrate", instance, ["core/events"])
        assert single.success and not _failures(single), _failures(single)
        assert {e.asset_key.to_user_string() for e in single.get_asset_materialization_events()} == {
            "core/events"
        }
        with connection(dbs.core) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (9000,)
            notes_after = conn.execute("SELECT array_agg(xmin::text ORDER BY 1) FROM event_notes").fetchone()
            assert notes_after == notes_before

        # The verify job re-checks the parent as a whole and each leaf: a changed row in one leaf fails it.
        with connection(dbs.core, autocommit=True) as conn:
            conn.execute("UPDATE events_2024_q3 SET kind = 'changed' WHERE id = 5000")
        verify = run_job("verify", instance)
        assert not verify.success
        failing = [e for e in verify.get_asset_check_evaluations() if not e.passed]
        assert {(e.asset_key.to_user_string(), e.check_name) for e in failing} == {
            ("core/events", "checksum_parity")
        }
        assert "events_2024_q3" in (failing[0].description or ""), failing[0].description

        # The sequence a partitioned table owns (a serial on the parent) is set by its one-table redo.
        with connection(dbs.core, autocommit=True) as conn:
            conn.execute("SELECT setval(pg_get_serial_sequence('metrics', 'id'), 1)")
        redo = run_job("migrate", instance, ["core/metrics"])
        assert redo.success and not _failures(redo), _failures(redo)
        with connection(dbs.core) as conn:
            assert conn.execute("SELECT nextval(pg_get_serial_sequence('metrics', 'id'))").fetchone() == (
                3001,
            )

        # With the source's schema changed, a full migrate drops the previous copy's objects, the
        # parent and its partitions among them (they are in the ownership record), and applies the new.
        with connection(dbs.source, autocommit=True) as conn:
            conn.execute("ALTER TABLE events ADD COLUMN source text DEFAULT 'app'")
        again = run_job("migrate", instance)
        assert again.success and not _failures(again), _failures(again)
        with connection(dbs.core) as conn:
            assert conn.execute("SELECT count(*) FROM events WHERE source = 'app'").fetchone() == (9000,)
            assert conn.execute("SELECT count(*) FROM pg_partition_tree('events')").fetchone() == (5,)


PARTITIONED_SQL = """
CREATE TABLE events (id bigint NOT NULL, ts timestamptz NOT NULL, PRIMARY KEY (id, ts))
    PARTITION BY RANGE (ts);
CREATE TABLE events_2024_q1 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-04-01');
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE TABLE notes (id int PRIMARY KEY);
"""


def test_a_plan_routing_a_partition_is_told_to_route_its_parent(databases: Databases) -> None:
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(PARTITIONED_SQL)  # type: ignore[arg-type]
        source_tables = [info.table for info in list_tables(conn)]
        partitions = partitions_of(conn)
    # A plan written before partitioned tables were listed by their parent.
    plan = RoutingPlan(
        core=[TableName.parse("events_2024_q1"), TableName.parse("events_default"), TableName.parse("notes")]
    )
    assert plan.problems(source_tables, partitions) == [
        "events is in the source but not in the routing plan",
        *(
            f"{leaf} is a partition of events: route events (with all its partitions) instead"
            for leaf in ("events_2024_q1", "events_default")
        ),
    ]


def test_the_ownership_record_holds_a_partitioned_table_and_its_partitions(databases: Databases) -> None:
    url = databases.core
    with connection(url, autocommit=True) as conn:
        conn.execute(PARTITIONED_SQL)  # type: ignore[arg-type]
        objects = {o.identity for o in catalog_objects(conn) if o.kind == "table"}
        assert objects == {"public.events", "public.events_2024_q1", "public.events_default", "public.notes"}
        # A record written before partitions were recorded holds the parent only: its partitions are
        # still dual-db's (re-materializing the schema would keep that record, and loop).
        write_marker(conn, TargetMarker(role="core", objects=(OwnedObject("table", "public.events"),)))
        owned_tables_guard(conn, "core", url, [TableName.parse("events"), TableName.parse("events_2024_q1")])
        # What is not dual-db's is refused, naming the asset that re-applies the schema.
        with pytest.raises(OwnershipError, match=r"notes .* re-materialize core/core_schema first$"):
            owned_tables_guard(conn, "core", url, [TableName.parse("notes")])
        write_marker(conn, TargetMarker(role="ai"))
        with pytest.raises(
            OwnershipError, match=r"materialize core/core_schema first \(the migrate job does\)"
        ):
            owned_tables_guard(conn, "core", url, [TableName.parse("events")])


def test_a_foreign_table_partition_is_refused_by_name(databases: Databases) -> None:
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(
            "CREATE FOREIGN DATA WRAPPER elsewhere; CREATE SERVER far FOREIGN DATA WRAPPER elsewhere;"
            "CREATE TABLE readings (day date NOT NULL, value int) PARTITION BY RANGE (day);"
            "CREATE TABLE readings_2024 PARTITION OF readings FOR VALUES FROM ('2024-01-01') TO "
            "('2025-01-01');"
            "CREATE FOREIGN TABLE readings_old PARTITION OF readings FOR VALUES FROM ('2000-01-01') TO "
            "('2024-01-01') SERVER far;"
        )
        assert [i.table.qualified for i in list_tables(conn)] == ["public.readings"]
        with pytest.raises(
            CopyError, match=r"table readings has foreign-table partition\(s\) readings_old: "
        ):
            copy_units(conn, [TableName.parse("readings")])
    # ... and `routing_complete` refuses it before anything is written.
    result = _routing_complete(
        RoutingPlan(core=[TableName.parse("readings")]), SourceDatabase(url=databases.source.uri())
    )
    assert not result.passed
    assert "readings has foreign-table partition(s) readings_old" in (result.description or "")
