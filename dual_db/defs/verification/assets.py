"""`verification_report`: every table and every database check of the migration, in one place.

Built from the latest check evaluations (this run's, when the checks ran in it) and the tables'
materialization metadata; a Markdown table in the UI, a JSON file beside the dumps, and one summary
line. It fails when anything does not match, so a green report means zero rows lost.

The report also computes `source_drift` itself (and emits it as its WARN check): which source tables
changed since their copy's snapshot. A check that ran after the report could not change what the
report says; computed here, the summary line says "identical to the snapshot ... the source has moved
since: ..." instead of a plain "0 rows missing" while the application is still writing.
"""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from dual_db.db.fingerprint import Fingerprint
from dual_db.db.names import TableName
from dual_db.defs.constants import (
    AI_EXTENSION_RULES,
    CHECKSUM_PARITY,
    CORE_EXTENSION_RULES,
    COUNT_PARITY,
    FOREIGN_KEYS_VALID,
    POST_DATA_ASSETS,
    SCHEMA_PARITY,
    SEQUENCES_ALIGNED,
    SOURCE_DRIFT,
    VERIFICATION_REPORT,
    table_key,
)
from dual_db.defs.executor import RUNS_LAST_TAG
from dual_db.defs.resources import MigrationSettings, SourceDatabase
from dual_db.defs.state import TableCopyRecord
from dual_db.defs.verification.checks import to_check_result
from dual_db.routing import TARGETS, RoutingPlan
from dual_db.verify.drift import source_drift_now
from dual_db.verify.outcome import CheckOutcome
from dual_db.verify.report import VerificationReport

DATABASE_CHECKS = {
    "core": (CORE_EXTENSION_RULES, SCHEMA_PARITY, FOREIGN_KEYS_VALID, SEQUENCES_ALIGNED),
    "ai": (AI_EXTENSION_RULES, SCHEMA_PARITY, FOREIGN_KEYS_VALID, SEQUENCES_ALIGNED),
}


def latest_evaluations(
    instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]
) -> dict[dg.AssetCheckKey, Any]:
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


def recorded_source_fingerprints(
    instance: dg.DagsterInstance, table_keys: Mapping[TableName, dg.AssetKey]
) -> dict[TableName, Fingerprint]:
    """Each copied table's source fingerprint at its copy's snapshot, from its latest materialization."""
    records = TableCopyRecord.latest_many(instance, {key: table for table, key in table_keys.items()})
    return {record.table: record.source for record in records.values() if record is not None}


def verification_check_keys(plan: RoutingPlan) -> tuple[list[dg.AssetCheckKey], list[dg.AssetCheckKey]]:
    """(per-table checks, per-database checks): every check a cutover needs to have passed."""
    table_checks = [
        dg.AssetCheckKey(table_key(target, t), name)
        for target in TARGETS
        for t in plan.tables(target)
        for name in (COUNT_PARITY, CHECKSUM_PARITY)
    ]
    database_checks = [
        dg.AssetCheckKey(POST_DATA_ASSETS[target], name)
        for target in TARGETS
        for name in DATABASE_CHECKS[target]
    ]
    return table_checks, database_checks


def build_verification_report(plan: RoutingPlan) -> dg.AssetsDefinition:
    tables = {target: plan.tables(target) for target in TARGETS}
    table_checks, database_checks = verification_check_keys(plan)
    table_keys = {table: table_key(target, table) for target in TARGETS for table in tables[target]}

    @dg.asset(
        key=VERIFICATION_REPORT,
        deps=list(POST_DATA_ASSETS.values()),
        # The report reads the checks' results from the event log, so it runs after every other step
        # of its run, the failed ones too (steps of a run run at once: defs/executor.py). A dependency
        # on the tables would skip it when a table's blocking check fails, which is when it matters.
        op_tags={RUNS_LAST_TAG: "true"},
        group_name="verification",
        kinds={"postgres"},
        description="Per table: source rows, target rows, checksum match; per database: every check; "
        "which source tables moved since the snapshot. Fails unless every table is identical and every "
        "check passed (a moving source is a warning).",
        check_specs=[
            dg.AssetCheckSpec(
                SOURCE_DRIFT,
                asset=VERIFICATION_REPORT,
                blocking=False,
                description="Which tables changed on the source since their copy's snapshot: writes a "
                "cutover now would lose. A warning, not a failure; computed by the report, which names "
                "them in its summary.",
            )
        ],
    )
    def verification_report(
        context: dg.AssetExecutionContext, settings: MigrationSettings, source: SourceDatabase
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        evaluations = latest_evaluations(context.instance, [*table_checks, *database_checks])
        report = VerificationReport()
        records = TableCopyRecord.latest_many(context.instance, {key: t for t, key in table_keys.items()})
        for target in TARGETS:
            for table in tables[target]:
                key = table_key(target, table)
                record = records[key]
                count = evaluations[dg.AssetCheckKey(key, COUNT_PARITY)]
                checksum = evaluations[dg.AssetCheckKey(key, CHECKSUM_PARITY)]
                # The latest count check is the newest word on the target's rows (verify runs them
                # without copying); the copy's record says what the source held.
                count_meta = {k: v.value for k, v in (count.metadata or {}).items()} if count else {}
                source_rows = record.source.rows if record else 0
                report.add_table(
                    table,
                    target,  # type: ignore[arg-type]
                    source_rows=int(count_meta.get("source_rows", source_rows) or 0),
                    target_rows=int(count_meta.get("target_rows", record.rows if record else 0) or 0),
                    checksum_match=bool(checksum and checksum.passed and count and count.passed),
                    seconds=record.seconds if record else 0.0,
                )
        for key in database_checks:
            name = f"{key.asset_key.path[0]}: {key.name}"
            report.add_outcome(name, _outcome(evaluations[key], key.name))
        expected = recorded_source_fingerprints(context.instance, table_keys)
        drift, moved = source_drift_now(source.database_url(), expected, workers=settings.copy_workers)
        report.add_outcome(f"source: {SOURCE_DRIFT}", drift)
        report.set_source_moved(moved)
        drift_result = to_check_result(drift)

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
            "source_tables_moved": dg.MetadataValue.json(report.source_moved),
            "source_drift_seconds": dg.MetadataValue.float(float(drift.metadata.get("seconds") or 0.0)),  # type: ignore[arg-type]
        }
        context.log.info(summary)
        if not report.passed:
            # The drift finding still reaches its check before the report fails.
            yield drift_result
            raise dg.Failure(description=f"verification failed: {summary}", metadata=metadata)
        yield dg.MaterializeResult(metadata=metadata)
        yield drift_result

    return verification_report
