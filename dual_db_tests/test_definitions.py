"""The code location loads while every database is down, and exposes the interface's names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from dual_db.definitions import build_definitions
from dual_db.defs.constants import table_key
from dual_db.routing import DEFAULT_PLAN_FILE, RoutingPlan, RoutingPlanError


def test_definitions_load_with_no_server_reachable() -> None:
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    # Nothing listens on port 1: any connection attempt at load time would fail the import.
    env.update(
        SOURCE_DATABASE_URL="postgresql://u:pw@127.0.0.1:1/src",
        CORE_DATABASE_URL="postgresql://u:pw@127.0.0.1:1/core",
        AI_DATABASE_URL="postgresql://u:pw@127.0.0.1:1/ai",
        DUAL_DB_PLAN_FILE=str(DEFAULT_PLAN_FILE),
    )
    code = (
        "from dual_db.definitions import defs;"
        "g = defs.resolve_asset_graph();"
        "print(len(g.get_all_asset_keys()), sorted(j.name for j in defs.resolve_all_job_defs()))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # 43 tables, 2 schemas, 2 post-data, 2 source assets, the report, cutover, baseline, 2 soak, 2 tuning,
    # rollback
    assert out.stdout.split()[0] == "57"
    assert "'migrate'" in out.stdout and "'verify'" in out.stdout and "'rollback'" in out.stdout


def test_asset_and_check_keys_are_the_documented_ones() -> None:
    defs = build_definitions(RoutingPlan.load(DEFAULT_PLAN_FILE))
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "source/full_backup",
        "source/schema_dump",
        "core/core_schema",
        "ai/ai_schema",
        "core/positions",
        "core/alembic_version",
        "ai/ai_kb_documents",
        "core/post_data",
        "ai/vector_indexes",
        "verification_report",
    } <= keys
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("core/positions", "count_parity") in checks
    assert ("ai/ai_kb_documents", "checksum_parity") in checks
    assert ("source/schema_dump", "routing_complete") in checks
    assert ("core/post_data", "core_extension_rules") in checks
    assert ("ai/vector_indexes", "ai_extension_rules") in checks
    assert ("verification_report", "source_drift") in checks
    # The table assets are one subsettable multi-asset per target, so one table can be re-materialized.
    core_tables = graph.get(dg.AssetKey(["core", "positions"])).assets_def
    assert core_tables.can_subset and len(core_tables.keys) == 40


def test_table_assets_carry_filterable_tags_owners_and_their_table_name(tmp_path: Path) -> None:
    """Tags from the plan alone (no database at load): target, class, has_vectors, soft_reference; the
    plan's owners per database; Dagster's table name. The two schema assets have distinct names."""
    graph = build_definitions(RoutingPlan.load(DEFAULT_PLAN_FILE)).resolve_asset_graph()

    def tags(key: str) -> dict[str, str]:
        node = graph.get(dg.AssetKey.from_user_string(key))
        return {k: v for k, v in node.tags.items() if not k.startswith("dagster/kind/")}

    assert tags("ai/ai_kb_documents") == {"target": "ai", "class": "vector", "has_vectors": "true"}
    assert tags("ai/ai_feedback") == {
        "target": "ai",
        "class": "ai_companion",
        "has_vectors": "false",
        "soft_reference": "holder",
    }
    assert tags("core/agent_messages")["soft_reference"] == "referenced"
    assert tags("core/positions") == {"target": "core", "class": "core", "has_vectors": "false"}
    positions = graph.get(dg.AssetKey(["core", "positions"]))
    assert positions.metadata["dagster/table_name"] == "public.positions" and not positions.owners
    assert "pgvector" in graph.get(dg.AssetKey(["ai", "ai_kb_documents"])).kinds
    names = {k.path[-1] for k in graph.get(dg.AssetKey(["source", "schema_dump"])).child_keys}
    assert {"core_schema", "ai_schema"} <= names

    # Owners come from the plan, per database; a plan without vector_tables gets no has_vectors tag.
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        "core: [users]\nai: [ai_docs]\nowners: {core: [team:platform, dba@example.com], ai: [team:ml]}\n"
    )
    graph = build_definitions(RoutingPlan.load(plan_file)).resolve_asset_graph()
    users = graph.get(dg.AssetKey(["core", "users"]))
    assert list(users.owners) == ["team:platform", "dba@example.com"]
    assert list(graph.get(dg.AssetKey(["ai", "ai_docs"])).owners) == ["team:ml"]
    assert "has_vectors" not in users.tags and users.tags["class"] == "core"
    plan_file.write_text("core: [users]\nai: []\nowners: {core: [platform]}\n")
    with pytest.raises(RoutingPlanError, match="neither an email nor team:<name>"):
        RoutingPlan.load(plan_file)


SNAPSHOT_FILE = Path(__file__).parent / "snapshots" / "definitions.json"


def _describe(defs: dg.Definitions) -> dict[str, object]:
    """Every asset (group, deps, kinds), every check (blocking), every job and its selection, every
    sensor and whether it runs without being switched on."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(d.to_user_string() for d in node.parent_keys),
            "kinds": sorted(node.kinds),
            "skippable": node.assets_def.specs_by_key[key].skippable,
            "tags": {k: v for k, v in sorted(node.tags.items()) if not k.startswith("dagster/kind/")},
            "owners": list(node.owners),
        }
    checks = {}
    for check_key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        spec = graph.get_check_spec(check_key)
        checks[f"{check_key.asset_key.to_user_string()}:{check_key.name}"] = {"blocking": spec.blocking}
    jobs = {}
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        jobs[job.name] = sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
    sensors = {
        sensor.name: {"default_status": sensor.default_status.value}
        for sensor in sorted(defs.get_repository_def().sensor_defs, key=lambda s: s.name)
    }
    return {"assets": assets, "checks": checks, "jobs": jobs, "sensors": sensors}


def test_definitions_match_the_snapshot() -> None:
    """Any change to an asset, check, group, dependency or job shows up here as a reviewed diff.
    After an intended change: DUAL_DB_UPDATE_SNAPSHOTS=1 make test, and commit the file."""
    described = _describe(build_definitions(RoutingPlan.load(DEFAULT_PLAN_FILE)))
    if os.environ.get("DUAL_DB_UPDATE_SNAPSHOTS"):
        SNAPSHOT_FILE.write_text(json.dumps(described, indent=1, sort_keys=True) + "\n")
    assert described == json.loads(SNAPSHOT_FILE.read_text())


def test_definitions_run_with_the_plan_they_were_built_from() -> None:
    """A plan object, not the file on disk, decides the assets and the routing check."""
    plan = RoutingPlan.load(DEFAULT_PLAN_FILE)
    smaller = RoutingPlan(core=plan.core[:2], ai=plan.ai[:1], exclude=[], soft_references=[])
    graph = build_definitions(smaller).resolve_asset_graph()
    tables = {k.to_user_string() for k in graph.get_all_asset_keys()} - {
        "source/full_backup",
        "source/schema_dump",
        "core/core_schema",
        "ai/ai_schema",
        "core/post_data",
        "ai/vector_indexes",
        "verification_report",
        "cutover",
        "baseline/metrics",
        "soak/health",
        "soak/decommission_readiness",
        "core/tuning",
        "ai/tuning",
        "rollback/restored_source",
    }
    assert tables == {table_key("core", t).to_user_string() for t in plan.core[:2]} | {
        table_key("ai", plan.ai[0]).to_user_string()
    }


def test_engines_never_import_dagster_or_a_layer_above_them() -> None:
    """db/ is the bottom; schema/, copy/ and verify/ use only db/ (and their own modules); none of
    them imports Dagster. Checked on the import statements of every module."""
    import ast

    package = Path(__file__).resolve().parents[1] / "dual_db"
    allowed = {
        "db": {"db"},
        "schema": {"db", "schema"},
        "copy": {"db", "copy"},
        "verify": {"db", "verify"},
        "replication": {"db", "replication"},
        "measure": {"db", "schema", "app", "measure"},
        "tune": {"db", "schema", "tune"},
        # The application module: URLs and table names from db, the routing plan for Alembic.
        "app": {"db", "routing", "app"},
    }
    problems = []
    for layer, may_use in allowed.items():
        for module in sorted((package / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(module.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    top = name.split(".")
                    if top[0] in ("dagster", "dagster_postgres", "dagster_webserver"):
                        problems.append(f"{module.relative_to(package)} imports {name}")
                    elif top[0] == "dual_db" and (len(top) < 2 or top[1] not in may_use):
                        problems.append(f"{module.relative_to(package)} imports {name}")
    assert not problems, problems


def test_loading_the_definitions_leaves_the_application_stack_unloaded() -> None:
    """Every run (a one-table redo too) imports the definitions first: the application-side stack that
    only the baseline and the soak use (SQLAlchemy's asyncio extension, asyncpg) is not loaded then."""
    probe = (
        "import sys, dual_db.definitions; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'asyncpg' or m.startswith('dual_db.app') "
        "or m.startswith('dual_db.measure') or m == 'sqlalchemy.ext.asyncio'))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
