"""Objects whose definitions reach across the split (issue 18, defects 1 and 8): functions whose bodies
read or write a table on the other side, the triggers, views, rules and policies using them, views over
both sides, sequences drawn by a core and an AI table. Each is refused by name, or left out (or, for a
sequence, copied) only where the routing plan accepts it by name. Materialized views arrive populated.

Sources are built on a real server and dumped with pg_dump 18; the split's scripts are applied to real
core and AI databases, and the `migrate` job runs end to end through Dagster."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.definitions import build_definitions
from dual_db.demo.source import build_demo_source
from dual_db.embedded import EmbeddedCluster, pg_bin_dir
from dual_db.routing import RoutingPlan, RoutingPlanError
from dual_db.schema import SchemaSplit, SchemaSplitError, apply_sql, dump_schema_sections, split_schema
from dual_db.verify.write_probe import broken_summary, write_probe
from dual_db_tests.conftest import DatabaseFactory, Databases
from dual_db_tests.job_support import migration_environment

# The example: a core table whose trigger writes an AI table.
TRIGGER_SOURCE = """
CREATE EXTENSION vector;
CREATE TABLE orders (id int PRIMARY KEY, amount numeric, customer text);
CREATE TABLE ai_events (id bigserial PRIMARY KEY, order_id int, embedding vector(3), note text);
CREATE INDEX ON ai_events USING hnsw (embedding vector_l2_ops);
CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO ai_events(order_id, note) VALUES (new.id, 't'); RETURN new; END$$;
CREATE TRIGGER orders_to_ai AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION log_order();
"""
AI = frozenset({TableName("public", "ai_events")})


def _dump(servers: EmbeddedCluster, new_database: DatabaseFactory, script: str) -> tuple[str, str]:
    url = new_database(servers["source"])
    with connection(url, autocommit=True) as conn:
        conn.execute(script)  # type: ignore[arg-type]
    sections = dump_schema_sections(url, bin_dir=pg_bin_dir(18))
    return sections.pre_data, sections.post_data


def _apply(split: SchemaSplit, core: DatabaseUrl, ai: DatabaseUrl) -> None:
    apply_sql(core, split.core_pre)
    for _part, text in split.core_post_parts.in_order():
        apply_sql(core, text)
    apply_sql(ai, split.ai_pre)
    for _part, text in split.ai_post_parts.in_order():
        apply_sql(ai, text)


def test_trigger_writing_across_the_split_is_refused_by_name(
    servers: EmbeddedCluster, new_database: DatabaseFactory
) -> None:
    pre, post = _dump(servers, new_database, TRIGGER_SOURCE)
    with pytest.raises(SchemaSplitError) as refused:
        split_schema(pre, post, AI)
    message = str(refused.value)
    assert "\n" not in message
    assert "TRIGGER public.orders.orders_to_ai (core)" in message
    assert "public.ai_events" in message and "public.log_order" in message
    assert "accept_across_split" in message


def test_accepted_trigger_is_left_out_and_core_inserts_work(
    servers: EmbeddedCluster, new_database: DatabaseFactory
) -> None:
    pre, post = _dump(servers, new_database, TRIGGER_SOURCE)
    split = split_schema(pre, post, AI, accept=["public.orders.orders_to_ai"])
    removed = {(r.kind, r.name): r for r in split.removed}
    trigger = removed[("TRIGGER", "public.orders.orders_to_ai")]
    assert trigger.accepted and not trigger.moved_to_ai
    assert "accept_across_split" in trigger.reason and "public.ai_events" in trigger.reason
    # The function only touches AI tables: it moves with them (no trigger uses it there).
    assert removed[("FUNCTION", "public.log_order")].moved_to_ai
    core, ai = new_database(servers["core"]), new_database(servers["ai"])
    _apply(split, core, ai)
    with connection(core, autocommit=True) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 10, 'x')")  # failed after the switch before
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'log_order'").fetchone() == (0,)


BODIES_SOURCE = """
CREATE EXTENSION vector;
CREATE TABLE orders (id int PRIMARY KEY, amount numeric, customer text);
CREATE TABLE ai_events (id bigserial PRIMARY KEY, order_id int, embedding vector(3), note text);
-- Reads only its own side, in each of the three body forms: stays in core.
CREATE FUNCTION order_total() RETURNS numeric LANGUAGE sql BEGIN ATOMIC SELECT sum(amount) FROM orders; END;
CREATE FUNCTION order_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM orders $$;
CREATE FUNCTION order_max() RETURNS int LANGUAGE plpgsql AS
  $$DECLARE n int; BEGIN SELECT max(id) INTO n FROM orders; RETURN n; END$$;
-- An SQL body ($$ form) reading an AI table, used by a core view: the view is refused.
CREATE FUNCTION ai_event_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM ai_events $$;
CREATE VIEW order_stats AS SELECT count(*) AS n, ai_event_count() AS events FROM orders;
-- BEGIN ATOMIC reading both sides: the function itself is refused.
CREATE FUNCTION both_sides() RETURNS bigint LANGUAGE sql
  BEGIN ATOMIC SELECT count(*) FROM orders JOIN ai_events ON ai_events.order_id = orders.id; END;
-- PL/pgSQL reaching both sides through an assignment and a %ROWTYPE declaration.
CREATE FUNCTION assign_both() RETURNS bigint LANGUAGE plpgsql AS
  $$DECLARE n bigint;
    BEGIN n := (SELECT count(*) FROM ai_events); RETURN n + (SELECT count(*) FROM orders); END$$;
CREATE FUNCTION rowtype_both() RETURNS int LANGUAGE plpgsql AS
  $$DECLARE r ai_events%ROWTYPE; BEGIN RETURN (SELECT count(*) FROM orders); END$$;
-- A view over tables on both sides.
CREATE VIEW order_events AS SELECT o.id, e.note FROM orders o JOIN ai_events e ON e.order_id = o.id;
-- A rule and a policy on core tables reaching an AI table.
CREATE TABLE audit (id int);
CREATE RULE audit_to_ai AS ON INSERT TO audit DO ALSO INSERT INTO ai_events(order_id) VALUES (new.id);
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY orders_seen ON orders USING (id IN (SELECT order_id FROM ai_events));
-- A sequence drawn by a core table and an AI table.
CREATE SEQUENCE shared_ids;
CREATE TABLE invoices (id bigint PRIMARY KEY DEFAULT nextval('shared_ids'));
CREATE TABLE ai_notes (id bigint PRIMARY KEY DEFAULT nextval('shared_ids'), e vector(3));
"""
AI_BODIES = frozenset({TableName("public", "ai_events"), TableName("public", "ai_notes")})
REFUSED_BODIES = {
    "VIEW public.order_stats (core)": "public.ai_events",
    "FUNCTION public.both_sides (core)": "public.ai_events",
    "VIEW public.order_events (core)": "public.ai_events",
    "FUNCTION public.assign_both (core)": "public.ai_events",
    "FUNCTION public.rowtype_both (core)": "public.ai_events",
    "RULE public.audit.audit_to_ai (core)": "public.ai_events",
    "POLICY public.orders.orders_seen (core)": "public.ai_events",
    "SEQUENCE public.shared_ids (core and AI)": "public.ai_notes",
}


def test_function_bodies_views_rules_policies_and_shared_sequences(
    servers: EmbeddedCluster, new_database: DatabaseFactory
) -> None:
    pre, post = _dump(servers, new_database, BODIES_SOURCE)
    with pytest.raises(SchemaSplitError) as refused:
        split_schema(pre, post, AI_BODIES)
    message = str(refused.value)
    print(message)
    assert "\n" not in message
    for obj, other in REFUSED_BODIES.items():
        assert obj in message, obj
        assert other in message.split(obj, 1)[1].split(";", 1)[0], (obj, message)
    for fine in ("order_total", "order_count", "order_max", "ai_event_count"):
        assert f"public.{fine} (" not in message

    names = [o.split(" (")[0].split(" ", 1)[1] for o in REFUSED_BODIES]
    split = split_schema(pre, post, AI_BODIES, accept=names)
    removed = {r.name: r for r in split.removed}
    for name in names[:-1]:
        assert removed[name].accepted and not removed[name].moved_to_ai, name
    assert "public.order_total" not in removed and "public.order_count" not in removed
    assert "public.order_max" not in removed
    assert removed["public.ai_event_count"].moved_to_ai
    assert any(n.name == "public.shared_ids" and "copied into both" in n.detail for n in split.accepted)
    assert len(split.accepted) == len(names)
    core, ai = new_database(servers["core"]), new_database(servers["ai"])
    _apply(split, core, ai)
    with connection(core, autocommit=True) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 10, 'x')")
        conn.execute("INSERT INTO audit VALUES (1)")
        assert conn.execute("SELECT order_total(), order_count(), order_max()").fetchone() == (10, 1, 1)
        views = {r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'")}
        assert views == set()


def test_unknown_plan_key_and_accept_list_shape(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("core: [orders]\nai: [ai_events]\naccept_across_split: [public.orders.orders_to_ai]\n")
    loaded = RoutingPlan.load(plan)
    assert loaded.accept_across_split == ["public.orders.orders_to_ai"]
    loaded.save(plan)
    assert "accept_across_split" in plan.read_text().split("\nai:")[0]  # explained in the header
    assert RoutingPlan.load(plan).accept_across_split == ["public.orders.orders_to_ai"]
    plan.write_text("core: [orders]\nai: [ai_events]\naccept_across_split: orders_to_ai\n")
    with pytest.raises(RoutingPlanError, match="accept_across_split"):
        RoutingPlan.load(plan)


# ---- migrate, end to end ---------------------------------------------------------------------------
# The trigger's source, plus a core and an AI materialized view (each populated on the source).
MIGRATE_SOURCE = """
CREATE EXTENSION vector;
CREATE TABLE orders (id int PRIMARY KEY, amount numeric, customer text);
CREATE TABLE ai_events (id bigserial PRIMARY KEY, order_id int, embedding vector(3), note text);
CREATE INDEX ON ai_events USING hnsw (embedding vector_l2_ops);
CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO ai_events(order_id, note) VALUES (new.id, 't'); RETURN new; END$$;
CREATE TRIGGER orders_to_ai AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION log_order();
CREATE MATERIALIZED VIEW order_totals AS SELECT customer, sum(amount) AS total FROM orders GROUP BY customer;
CREATE UNIQUE INDEX ON order_totals (customer);
CREATE MATERIALIZED VIEW ai_notes_per_order AS SELECT order_id, count(*) AS n FROM ai_events GROUP BY 1;
INSERT INTO orders SELECT g, g * 1.5, 'c' || (g % 3) FROM generate_series(1, 30) g;
REFRESH MATERIALIZED VIEW order_totals;
REFRESH MATERIALIZED VIEW ai_notes_per_order;
"""


@pytest.fixture
def environment(databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Databases]:
    """Source, core and AI for `migrate` (the source is filled by the test)."""
    migration_environment(monkeypatch, tmp_path, databases.source, databases.core, databases.ai)
    yield databases


def _migrate(tmp_path: Path, plan_text: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    (tmp_path / "plan.yaml").write_text(plan_text)
    defs = build_definitions(RoutingPlan.load())
    return defs.resolve_job_def("migrate").execute_in_process(instance=instance, raise_on_error=False)


def _user_tables(url: DatabaseUrl) -> int:
    with connection(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'm', 'v') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    return int(row[0]) if row else 0


def test_migrate_refuses_before_writing_then_runs_with_the_trigger_accepted(
    environment: Databases, tmp_path: Path
) -> None:
    dbs = environment
    with connection(dbs.source, autocommit=True) as conn:
        conn.execute(MIGRATE_SOURCE)  # type: ignore[arg-type]
    plan = "core: [orders]\nai: [ai_events]\n"
    with dg.DagsterInstance.ephemeral() as instance:
        result = _migrate(tmp_path, plan, instance)
    assert not result.success
    failures = [str(e.event_specific_data) for e in result.all_events if e.is_step_failure]
    failures += [
        str(e.event_specific_data)
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION and not e.event_specific_data.passed  # type: ignore[union-attr]
    ]
    assert any("TRIGGER public.orders.orders_to_ai (core)" in f for f in failures), failures
    assert _user_tables(dbs.core) == 0 and _user_tables(dbs.ai) == 0  # refused before any write

    with dg.DagsterInstance.ephemeral() as instance:
        result = _migrate(tmp_path, plan + "accept_across_split: [public.orders.orders_to_ai]\n", instance)
        assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_step_failure]
        report = instance.get_latest_materialization_event(dg.AssetKey(["verification_report"]))
        assert report is not None and report.asset_materialization is not None
        summary = str(report.asset_materialization.metadata["summary"].value)
        warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert "accepted in the plan" in summary and "public.orders.orders_to_ai" in summary, summary
    assert any("public.orders.orders_to_ai" in w and "left out" in w for w in warnings), warnings
    with connection(dbs.core, autocommit=True) as conn:
        conn.execute("INSERT INTO orders VALUES (1000, 1, 'new')")
        # The materialized view arrives populated, with the source's rows.
        assert conn.execute("SELECT count(*), sum(total) FROM order_totals").fetchone() == (3, 697.5)
    with connection(dbs.ai, autocommit=True) as conn:
        # The source's 30 orders wrote 30 events through the trigger; the AI matview counts them.
        assert conn.execute("SELECT count(*), sum(n) FROM ai_notes_per_order").fetchone() == (30, 30)
        try:
            conn.execute("SELECT count(*) FROM order_totals")
        except psycopg.errors.UndefinedTable:
            pass
        else:
            raise AssertionError("a core materialized view reached the AI database")


def test_demo_source_splits_with_nothing_refused_or_accepted(
    servers: EmbeddedCluster, new_database: DatabaseFactory
) -> None:
    """What is fine today stays fine: the demo's trigger function, views and sequences each stay on
    their own side, and nothing needs accepting."""
    url = new_database(servers["source"])
    build_demo_source(url, scale=0.01, seed=7)
    sections = dump_schema_sections(url, bin_dir=pg_bin_dir(18))
    plan = RoutingPlan.load(Path(__file__).resolve().parents[1] / "routing_plan.yaml")
    split = split_schema(sections.pre_data, sections.post_data, set(plan.ai))
    assert split.accepted == []
    assert not any(r.accepted for r in split.removed)
    assert "set_updated_at" in split.core_pre


def test_plan_discover_shows_the_refusal_and_keeps_the_acceptance(
    servers: EmbeddedCluster, new_database: DatabaseFactory, tmp_path: Path
) -> None:
    url = new_database(servers["source"])
    with connection(url, autocommit=True) as conn:
        conn.execute(TRIGGER_SOURCE)  # type: ignore[arg-type]
    command = [str(Path(sys.executable).parent / "dual-db"), "plan", "--discover", "--file", "plan.yaml"]
    env = {"PATH": "/usr/bin:/bin", "SOURCE_DATABASE_URL": url.uri()}
    refused = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert refused.returncode == 1, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("the schema split refuses this plan: ")
    assert "TRIGGER public.orders.orders_to_ai (core) uses FUNCTION public.log_order" in line
    plan_file = tmp_path / "plan.yaml"
    assert RoutingPlan.load(plan_file).ai == [TableName("public", "ai_events")]  # written all the same

    plan_file.write_text(plan_file.read_text() + "accept_across_split: [orders.orders_to_ai]\n")
    accepted = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stderr
    assert "accepted in the plan: TRIGGER public.orders.orders_to_ai (core)" in accepted.stdout
    assert RoutingPlan.load(plan_file).accept_across_split == ["orders.orders_to_ai"]


# What the static reading cannot see: the function builds its statement at run time.
DYNAMIC_SOURCE = """
CREATE EXTENSION vector;
CREATE TABLE orders (id int PRIMARY KEY, amount numeric, customer text);
CREATE TABLE order_lines (order_id int REFERENCES orders(id) ON DELETE CASCADE, n int);
CREATE TABLE ai_events (id bigserial PRIMARY KEY, order_id int, embedding vector(3), note text);
CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN EXECUTE 'INSERT INTO ai' || '_events(order_id) VALUES ($1)' USING new.id; RETURN new; END$$;
CREATE TRIGGER orders_to_ai AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION log_order();
CREATE TABLE audit (id int GENERATED ALWAYS AS IDENTITY, at timestamptz DEFAULT now(),
                    twice int GENERATED ALWAYS AS (id * 2) STORED);
CREATE TABLE empty_one (id int);
"""


def test_write_probe_catches_what_the_static_reading_misses(
    servers: EmbeddedCluster, new_database: DatabaseFactory
) -> None:
    pre, post = _dump(servers, new_database, DYNAMIC_SOURCE)
    split = split_schema(pre, post, AI)  # nothing to refuse: the table's name is built at run time
    core, ai = new_database(servers["core"]), new_database(servers["ai"])
    _apply(split, core, ai)
    with connection(core, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # as the copy loads: no triggers
        conn.execute("INSERT INTO orders SELECT g, g, 'c' FROM generate_series(1, 5) g")
        conn.execute("INSERT INTO order_lines SELECT g, 1 FROM generate_series(1, 5) g")
        conn.execute("INSERT INTO audit DEFAULT VALUES")
    tables = [TableName("public", t) for t in ("orders", "order_lines", "audit", "empty_one")]
    started = time.monotonic()
    report = write_probe(core, tables)
    seconds = time.monotonic() - started
    assert list(report.broken) == [TableName("public", "orders")]
    assert 'relation "ai_events" does not exist' in report.broken[TableName("public", "orders")]
    assert report.empty == [TableName("public", "empty_one")]
    assert report.inconclusive == {}  # identity ALWAYS, generated and cascading rows write back fine
    assert "public.orders" in broken_summary("core", report) and "\n" not in broken_summary("core", report)
    print(f"write probe: {len(report.probed)} tables in {seconds:.3f}s")
    with connection(core) as conn:  # nothing stays written
        assert conn.execute(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_lines), "
            "(SELECT array_agg(id) FROM audit)"
        ).fetchone() == (5, 5, [1])


def test_migrate_fails_on_the_write_probe_naming_the_table(environment: Databases, tmp_path: Path) -> None:
    dbs = environment
    with connection(dbs.source, autocommit=True) as conn:
        conn.execute(DYNAMIC_SOURCE)  # type: ignore[arg-type]
        conn.execute("INSERT INTO orders SELECT g, g, 'c' FROM generate_series(1, 5) g")
    plan = "core: [orders, order_lines, audit, empty_one]\nai: [ai_events]\n"
    with dg.DagsterInstance.ephemeral() as instance:
        result = _migrate(tmp_path, plan, instance)
    assert not result.success
    failed = {
        e.step_key: str(e.event_specific_data) for e in result.all_events if e.is_step_failure and e.step_key
    }
    assert "core__post_data" in failed, failed
    assert "the write probe on core failed for 1 table(s)" in failed["core__post_data"]
    assert 'public.orders: relation "ai_events" does not exist' in failed["core__post_data"]
    with connection(dbs.core) as conn:  # the probe's writes were rolled back
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (5,)
