"""The demo continued past the migration, as `make demo-soak` runs it: baseline, migrate, cutover,
traffic through the application module, soak runs, alerts' raw material and readiness."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dual_db.app.settings import AppSettings
from dual_db.definitions import build_definitions
from dual_db.demo import build_demo_source
from dual_db.demo.traffic import run_traffic
from dual_db.embedded import EmbeddedCluster
from dual_db.routing import DEFAULT_PLAN_FILE, RoutingPlan
from dual_db_tests.conftest import DatabaseFactory

# The slow suite (make test-slow, which .ci/run also runs): keeps make test under 15 minutes.
pytestmark = pytest.mark.slow


def test_demo_through_cutover_traffic_and_soak(
    servers: EmbeddedCluster, new_database: DatabaseFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, core, ai = (new_database(servers[r]) for r in ("source", "core", "ai"))
    build_demo_source(source, scale=0.05, seed=11)
    for name, url in (("SOURCE_DATABASE_URL", source), ("CORE_DATABASE_URL", core), ("AI_DATABASE_URL", ai)):
        monkeypatch.setenv(name, url.uri())
    monkeypatch.setenv("DUAL_DB_PLAN_FILE", str(DEFAULT_PLAN_FILE))
    monkeypatch.chdir(tmp_path)
    defs = build_definitions(RoutingPlan.load(DEFAULT_PLAN_FILE))
    assets = defs.resolve_implicit_global_asset_job_def()
    soak_config = {"resources": {"soak": {"config": {"workload_runs": 1, "rag_queries": 5}}}}

    def materialize(instance: dg.DagsterInstance, *keys: str, **kwargs: object) -> dg.ExecuteInProcessResult:
        return assets.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey.from_user_string(k) for k in keys], **kwargs
        )  # type: ignore[arg-type]

    with dg.DagsterInstance.ephemeral() as instance:
        run_config = {"ops": {"baseline__metrics": {"config": {"runs": 1, "rag_queries": 5}}}}
        assert materialize(instance, "baseline/metrics", run_config=run_config).success
        assert defs.resolve_job_def("migrate").execute_in_process(instance=instance).success
        assert materialize(instance, "cutover").success

        app = AppSettings(DATABASE_URL=core, AI_DATABASE_URL=ai)
        clean = run_traffic(app, rounds=3, seconds=60)
        assert (clean.rounds, clean.messages_written, clean.feedback_written, clean.rag_queries) == (
            3,
            3,
            3,
            3,
        )
        soak = defs.resolve_job_def("soak")
        first = soak.execute_in_process(instance=instance, run_config=soak_config, raise_on_error=False)
        checks = {e.check_name: e for e in first.get_asset_check_evaluations()}
        assert checks["no_writes_to_old_database"].passed  # the traffic went to the new pair only
        assert checks["soft_reference_orphans"].passed and checks["core_has_no_pgvector"].passed
        assert "at the baseline" in (checks["performance_vs_baseline"].description or "")

        run_traffic(app, rounds=2, seconds=60, orphans=1)  # the application writes a dangling reference
        second = soak.execute_in_process(instance=instance, run_config=soak_config, raise_on_error=False)
        checks = {e.check_name: e for e in second.get_asset_check_evaluations()}
        assert not checks["soft_reference_orphans"].passed
        assert checks["no_writes_to_old_database"].passed
