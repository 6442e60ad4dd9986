"""Running dual-db's jobs in a test: the environment a run reads, and an in-process run of one job."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dual_db.db.urls import DatabaseUrl
from dual_db.definitions import build_definitions
from dual_db.routing import RoutingPlan


def point_at(
    monkeypatch: pytest.MonkeyPatch, source: DatabaseUrl, core: DatabaseUrl, ai: DatabaseUrl
) -> None:
    """The three URLs a run reads, as a user's environment holds them."""
    monkeypatch.setenv("SOURCE_DATABASE_URL", source.uri())
    monkeypatch.setenv("CORE_DATABASE_URL", core.uri())
    monkeypatch.setenv("AI_DATABASE_URL", ai.uri())


def migration_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: DatabaseUrl, core: DatabaseUrl, ai: DatabaseUrl
) -> None:
    """The URLs, a plan file under `tmp_path` (written by the test or by discover), and `tmp_path` as the
    working directory, so that the run's dumps land under tmp_path/.dual_db."""
    monkeypatch.setenv("DUAL_DB_PLAN_FILE", str(tmp_path / "plan.yaml"))
    point_at(monkeypatch, source, core, ai)
    monkeypatch.chdir(tmp_path)


def run_job(
    job: str, instance: dg.DagsterInstance, selection: list[str] | None = None
) -> dg.ExecuteInProcessResult:
    """One run of `job` with the plan file as it is now, optionally of some of its assets only."""
    defs = build_definitions(RoutingPlan.load())
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        raise_on_error=False,
        asset_selection=[dg.AssetKey.from_user_string(s) for s in selection] if selection else None,
    )
