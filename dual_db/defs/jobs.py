"""Jobs: `migrate` (everything), `verify` (the checks and the report alone) and `rollback` (the latest
backup restored into a new database)."""

import dagster as dg

from dual_db.defs.constants import (
    AI_TUNING,
    BASELINE,
    CORE_TUNING,
    CUTOVER,
    DECOMMISSION_READINESS,
    MIGRATE_JOB,
    ROLLBACK_JOB,
    ROLLBACK_RESTORED_SOURCE,
    SOAK_HEALTH,
    VERIFICATION_REPORT,
    VERIFY_JOB,
)

migrate_job = dg.define_asset_job(
    MIGRATE_JOB,
    # Never the cutover (switching the application is a decision someone makes, on purpose), the
    # baseline (a measurement taken when the source is under its usual load), the tuning (it changes
    # whole servers, some settings only at their next restart: once the pair is stable), the soak
    # week, nor the rollback restore.
    selection=dg.AssetSelection.all()
    - dg.AssetSelection.assets(
        CUTOVER,
        BASELINE,
        CORE_TUNING,
        AI_TUNING,
        SOAK_HEALTH,
        DECOMMISSION_READINESS,
        ROLLBACK_RESTORED_SOURCE,
    ),
    description="Back up the source, split its schema, copy every table from one snapshot, build "
    "indexes, and verify.",
)

verify_job = dg.define_asset_job(
    VERIFY_JOB,
    # Checks alone (the table multi-assets run in check-only mode, copying nothing), then the report.
    selection=(dg.AssetSelection.all_asset_checks() - dg.AssetSelection.checks_for_assets(SOAK_HEALTH))
    | dg.AssetSelection.assets(VERIFICATION_REPORT),
    description="Re-run every asset check against the targets as they are now, and the report.",
)

rollback_job = dg.define_asset_job(
    ROLLBACK_JOB,
    # The restore alone: the backup it restores is the latest one migrate made, never a new one.
    selection=dg.AssetSelection.assets(ROLLBACK_RESTORED_SOURCE),
    description="Restore the latest source/full_backup into the empty database ROLLBACK_DATABASE_URL "
    "names, prove it equal to the source at the backup's snapshot, and write the settings to switch back.",
)
