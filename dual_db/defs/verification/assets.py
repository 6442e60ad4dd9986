"""`verification_report`: every table and every database check of the migration, in one place.

Built from the latest check evaluations (this run's, when the checks ran in it) and the tables'
materialization metadata; a Markdown table in the UI, a JSON file beside the dumps, and one summary
line. It fails when anything does not match, so a green report means zero rows lost.
"""

import json
from typing import Any

import dagster as dg

from dual_db.defs.constants import (
    AI_EXTENSION_RULES,
    CHECKSUM_PARITY,
    CORE_EXTENSION_RULES,
    COUNT_PARITY,
    FOREIGN_KEYS_VALID,
    POST_DATA_ASSETS,
    SCHEMA_PARITY,
    SEQUENCES_ALIGNED,
    VERIFICATION_REPORT,
    table_key,
)
from dual_db.defs.resources import MigrationSettings
from dual_db.defs.state import latest_metadata
from dual_db.routing import TARGETS, RoutingPlan
from dual_db.verify.outcome import CheckOutcome
from dual_db.verify.report import VerificationReport

DATABASE_CHECKS = {
    "core": (CORE_EXTENSION_RULES, SCHEMA_PARITY, FOREIGN_KEYS_VALID, SEQUENCES_ALIGNED),
    "ai": (AI_EXTENSION_RULES, SCHEMA_PARITY, FOREIGN_KEYS_VALID, SEQUENCES_ALIGNED),
}


def _evaluations(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]) -> dict[dg.AssetCheckKey, Any]:
    """The latest evaluation of each check (None where it never ran)."""
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    result: dict[dg.AssetCheckKey, Any] = {}
    for key in keys:
        record = records.get(key)
        event = record.event if record is not None else None
        data = event.dagster_event.event_specific_data if event and event.dagster_event else None
        result[key] = data if hasattr(data, "passed") else None
    return result


def _outcome(evaluation: Any, name: str) -> CheckOutcome:
    if evaluation is None:
        return CheckOutcome(
            False, f"{name} has not run", [f"{name} has not run: run the migrate or verify job"]
        )
    metadata = {k: v.value for k, v in (evaluation.metadata or {}).items()}
    failures = [str(f) for f in metadata.get("failures") or []]
    severity = "WARN" if str(evaluation.severity).endswith("WARN") else "ERROR"
    summary = (evaluation.description or name).splitlines()[0]
    return CheckOutcome(bool(evaluation.passed), summary, failures, severity=severity)


def build_verification_report(plan: RoutingPlan) -> dg.AssetsDefinition:
    tables = {target: plan.tables(target) for target in TARGETS}
    table_checks = [
        dg.AssetCheckKey(table_key(target, t.asset_name), name)
        for target in TARGETS
        for t in tables[target]
        for name in (COUNT_PARITY, CHECKSUM_PARITY)
    ]
    database_checks = [
        dg.AssetCheckKey(POST_DATA_ASSETS[target], name)
        for target in TARGETS
        for name in DATABASE_CHECKS[target]
    ]

    @dg.asset(
        key=VERIFICATION_REPORT,
        deps=list(POST_DATA_ASSETS.values()),
        group_name="verification",
        kinds={"postgres"},
        description="Per table: source rows, target rows, checksum match; per database: every check. "
        "Fails unless every table is identical and every check passed.",
    )
    def verification_report(
        context: dg.AssetExecutionContext, settings: MigrationSettings
    ) -> dg.MaterializeResult:
        evaluations = _evaluations(context.instance, [*table_checks, *database_checks])
        report = VerificationReport()
        for target in TARGETS:
            for table in tables[target]:
                key = table_key(target, table.asset_name)
                metadata = latest_metadata(context.instance, key) or {}
                count = evaluations[dg.AssetCheckKey(key, COUNT_PARITY)]
                checksum = evaluations[dg.AssetCheckKey(key, CHECKSUM_PARITY)]
                count_meta = {k: v.value for k, v in (count.metadata or {}).items()} if count else {}
                report.add_table(
                    table,
                    target,  # type: ignore[arg-type]
                    source_rows=int(count_meta.get("source_rows", metadata.get("source_rows", 0)) or 0),
                    target_rows=int(count_meta.get("target_rows", metadata.get("rows", 0)) or 0),
                    checksum_match=bool(checksum and checksum.passed and count and count.passed),
                    seconds=float(metadata.get("seconds", 0.0) or 0.0),
                )
        for key in database_checks:
            name = f"{key.asset_key.path[0]}: {key.name}"
            report.add_outcome(name, _outcome(evaluations[key], key.name))

        out_dir = settings.dumps_path() / context.run.run_id
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / "verification_report.json"
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
        summary = report.summary_line()
        metadata: dict[str, Any] = {
            "summary": summary,
            "report": dg.MetadataValue.md(report.to_markdown()),
            "json_path": dg.MetadataValue.path(str(json_path)),
            "tables_identical": report.identical_tables,
            "tables": len(report.tables),
            "rows_missing": report.rows_missing,
            "rows_extra": report.rows_extra,
        }
        context.log.info(summary)
        if not report.passed:
            raise dg.Failure(description=f"verification failed: {summary}", metadata=metadata)
        return dg.MaterializeResult(metadata=metadata)

    return verification_report
