"""The code location loads while every database is down, and exposes the interface's names."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg

from dual_db.definitions import build_definitions
from dual_db.routing import DEFAULT_PLAN_FILE, RoutingPlan


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
    assert out.stdout.split()[0] == "50"  # 43 tables + 2 schemas + 2 post-data + 2 source + report
    assert "'migrate'" in out.stdout and "'verify'" in out.stdout


def test_asset_and_check_keys_are_the_documented_ones() -> None:
    defs = build_definitions(RoutingPlan.load(DEFAULT_PLAN_FILE))
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "source/full_backup",
        "source/schema_dump",
        "core/schema",
        "ai/schema",
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
