"""The Dagster code location: `defs`. Loading it never connects to a database.

Assets are built from the routing plan file (no catalog access), resources read their URLs from the
environment when a run starts, and runs execute in-process so that every step of a run shares the
one exported source snapshot held by the `snapshot` resource.
"""

from __future__ import annotations

import dagster as dg

from dual_db.defs.alerts import check_failure_alerts
from dual_db.defs.baseline.assets import baseline_metrics
from dual_db.defs.cutover.assets import build_cutover
from dual_db.defs.executor import guarded_in_process_executor
from dual_db.defs.jobs import migrate_job, rollback_job, verify_job
from dual_db.defs.resources import (
    AiDatabase,
    CoreDatabase,
    MigrationSettings,
    RollbackDatabase,
    SourceDatabase,
    SourceSnapshot,
)
from dual_db.defs.rollback.assets import build_rollback
from dual_db.defs.soak.assets import SoakSettings, build_soak, decommission_readiness
from dual_db.defs.source.assets import full_backup, schema_dump
from dual_db.defs.source.checks import build_routing_complete
from dual_db.defs.targets.assets import target_assets
from dual_db.defs.tuning.assets import tuning_assets
from dual_db.defs.verification.assets import build_verification_report
from dual_db.defs.verification.checks import verification_checks
from dual_db.routing import RoutingPlan


def build_definitions(plan: RoutingPlan | None = None) -> dg.Definitions:
    plan = plan or RoutingPlan.load()
    source = SourceDatabase()
    soak_health, soak_job, soak_schedule = build_soak(plan)
    return dg.Definitions(
        assets=[
            full_backup,
            schema_dump,
            *target_assets("core", plan),
            *target_assets("ai", plan),
            build_verification_report(plan),
            build_cutover(plan),
            baseline_metrics,
            soak_health,
            decommission_readiness,
            *tuning_assets,
            build_rollback(plan),
        ],
        asset_checks=[build_routing_complete(plan), *verification_checks(plan)],
        jobs=[migrate_job, verify_job, soak_job, rollback_job],
        sensors=[soak_schedule, check_failure_alerts],
        resources={
            "source": source,
            "core": CoreDatabase(),
            "ai": AiDatabase(),
            "rollback": RollbackDatabase(),
            "snapshot": SourceSnapshot(source=source),
            "settings": MigrationSettings(),
            "soak": SoakSettings(),
        },
        # In-process: resources live for the whole run, so the snapshot is exported once per run.
        # Guarded: runs whose process died are failed and their pool slots freed (defs/executor.py).
        executor=guarded_in_process_executor,
    )


defs = build_definitions()
