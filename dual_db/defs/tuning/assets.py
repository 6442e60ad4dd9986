"""`core/tuning`, `ai/tuning`: the plan's per-workload settings, materialized only on purpose.

Each applies `sql/tuning/<target>.sql` to its target (ALTER SYSTEM changes that whole server) and
records every setting's value before and after, read in a new session once the configuration was
reloaded, with its status: applied, pending restart (`shared_buffers`), not permitted (a managed
service that forbids ALTER SYSTEM: reported, not a failure), not in effect. Not part of `migrate`
nor `verify`: tune once the pair is stable, on purpose.
"""

from typing import Any

import dagster as dg

from dual_db.defs.constants import POST_DATA_ASSETS, TUNING_ASSETS
from dual_db.defs.errors import clear_failure
from dual_db.defs.resources import AiDatabase, CoreDatabase, target_database
from dual_db.tune.apply import Status, TuningReport, apply_tuning, load_tuning_file, rejected_error

_WORKLOAD = {"core": "OLTP", "ai": "vector search"}


def _metadata(report: TuningReport) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "database": report.database,
        "summary": report.summary(),
        "settings": dg.MetadataValue.md(report.markdown()),
    }
    for status, count in report.counts().items():
        metadata[f"settings {status.value}"] = dg.MetadataValue.int(count)
    for setting in report.settings:
        value = setting.numeric_after()
        if value is not None:
            unit = f" [{setting.after.unit}]" if setting.after.unit else ""
            metadata[f"{setting.name}{unit}"] = (
                dg.MetadataValue.int(int(value)) if value.is_integer() else dg.MetadataValue.float(value)
            )
    return metadata


def build_tuning(target: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=TUNING_ASSETS[target],
        group_name=target,
        deps=[POST_DATA_ASSETS[target]],
        kinds={"postgres"},
        description=f"The {target} server tuned for {_WORKLOAD[target]} (sql/tuning/{target}.sql): every "
        "setting before and after, and whether it is applied, pending a restart or not permitted.",
    )
    def _tuning(
        context: dg.AssetExecutionContext, core: CoreDatabase, ai: AiDatabase
    ) -> dg.MaterializeResult:
        with clear_failure(context):
            statements = load_tuning_file(target)
            report = apply_tuning(target_database(target, core, ai).database_url(), statements)
            for setting in report.settings:
                if setting.status is not Status.APPLIED:
                    context.log.warning(
                        f"{setting.name} = {setting.requested}: {setting.status.value}"
                        + (f" ({setting.detail})" if setting.detail else "")
                    )
            context.log.info(report.summary())
            error = rejected_error(report)
            if error is not None:
                raise error
        return dg.MaterializeResult(metadata=_metadata(report))

    return _tuning


tuning_assets = [build_tuning("core"), build_tuning("ai")]
