"""`verification_report`: every table and every database check of the migration, in one place.

Built from the latest check evaluations (this run's, when the checks ran in it) and the tables'
materialization metadata. Its metadata puts first what a person reads first: the summary line, the
verdict and the totals, the failing tables and checks by name, then every table as an inline table
(failing ones first; size, rows/s, COPY and fingerprint seconds), every check likewise, and the same
as Markdown and as a JSON file beside the dumps. The report is materialized even when something does
not match, so the asset page shows the failing report, and then the step fails: a green report means
zero rows lost.

The report also computes `source_drift` itself (and emits it as its WARN check): which source tables
changed since their copy's snapshot. A check that ran after the report could not change what the
report says; computed here, the summary line says "identical to the snapshot ... the source has moved
since: ..." instead of a plain "0 rows missing" while the application is still writing.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from dual_db.defs.constants import (
    AI_EXTENSION_RULES,
    CHECKSUM_PARITY,
    CORE_EXTENSION_RULES,
    COUNT_PARITY,
    FOREIGN_KEYS_VALID,
    POST_DATA_ASSETS,
    SCHEMA_ASSETS,
    SCHEMA_PARITY,
    SEQUENCES_ALIGNED,
    SOURCE_DRIFT,
    VERIFICATION_REPORT,
    table_key,
)
from dual_db.defs.executor import RUNS_LAST_TAG
from dual_db.defs.resources import MigrationSettings, SourceDatabase
from dual_db.defs.state import TableCopyRecord, latest_metadata
from dual_db.defs.targets.schema import ACCEPTED_METADATA
from dual_db.defs.verification.checks import to_check_result
from dual_db.routing import TARGETS, RoutingPlan
from dual_db.verify.drift import source_drift_now
from dual_db.verify.outcome import CheckOutcome, plural
from dual_db.verify.report import VerificationReport

# The report's own outcome naming the steps of its run that failed.
FAILED_STEPS = "run: failed steps"

DATABASE_CHECKS = {
    "core": (CORE_EXTENSION_RULES, SCHEMA_PARITY, FOREIGN_KEYS_VALID, SEQUENCES_ALIGNED),
    "ai": (AI_EXTENSION_RULES, SCHEMA_PARITY, FOREIGN_KEYS_VALID, SEQUENCES_ALIGNED),
}


def latest_evaluations(
    instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey], run_id: str | None = None
) -> dict[dg.AssetCheckKey, Any]:
    """The latest evaluation of each check (None where it never ran).

    With `run_id`, a check that run planned is judged by that run alone (None if it did not complete
    there): a run created later, even one refused before its first step, plans the same checks, and
    its unevaluated plans, being the latest, used to read as "never ran" (a report of a good copy
    said 0/9 tables identical).
    """
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    result: dict[dg.AssetCheckKey, Any] = {}
    for key in keys:
        record = records.get(key)
        event = record.event if record is not None else None
        data = event.dagster_event.event_specific_data if event and event.dagster_event else None
        result[key] = data if hasattr(data, "passed") else None
    if run_id is not None:
        planned = {
            record.event_log_entry.dagster_event.asset_check_planned_data.asset_check_key
            for record in instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED, limit=None
            ).records
            if record.event_log_entry.dagster_event
        }
        evaluated = {
            data.asset_check_key: data
            for record in instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=None
            ).records
            if record.event_log_entry.dagster_event
            for data in [record.event_log_entry.dagster_event.event_specific_data]
        }
        for key in keys:
            if key in planned:
                result[key] = evaluated.get(key)
    return result


def failed_steps(instance: dg.DagsterInstance, run_id: str) -> CheckOutcome | None:
    """The steps of this run that failed, each with the first line of what it told the user; None if
    none did. A guard or schema step that failed leaves every check unrun: the report says why."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    reasons: list[str] = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        data = event.step_failure_data
        if data.error is not None and data.error.cls_name == "DagsterAssetCheckFailedError":
            continue  # a blocking check that failed in its asset's step: the report names the check
        user = data.user_failure_data
        text = user.description if user is not None and user.description else None
        if not text and data.error is not None:
            text = data.error.message
        reasons.append(f"{event.step_key}: {(text or 'failed').strip().splitlines()[0]}")
    if not reasons:
        return None
    steps = [reason.partition(":")[0] for reason in reasons]
    return CheckOutcome(
        False,
        f"{plural(len(reasons), 'step')} failed ({', '.join(steps)}): {reasons[0]}",
        reasons,
        {"failed_steps": steps},
    )


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


_TABLE_COLUMNS = (
    ("status", "string", "identical, or FAILED with what differs"),
    ("table", "string", ""),
    ("target", "string", "core or ai"),
    ("source_rows", "int", "rows on the source at the copy's snapshot"),
    ("target_rows", "int", "rows on the target, as last checked"),
    ("size", "string", "the target table after the load, without indexes"),
    ("rows_per_s", "int", "rows per second of the COPY stream"),
    ("copy_s", "float", "seconds of the COPY stream (empty, load, commit)"),
    ("fingerprint_s", "float", "seconds hashing the source at the snapshot and the target after the load"),
    ("total_s", "float", "the whole table step"),
)


def report_metadata(report: VerificationReport, json_path: Path, drift_seconds: float) -> dict[str, Any]:
    """The report as Dagster metadata, in the order a person reads it. Numbers are numeric metadata
    (plotted across runs); the tables are `MetadataValue.table`, which the UI renders inline (Markdown
    longer than 1000 characters hides behind a "[Show Markdown]" link)."""
    tables = dg.MetadataValue.table(
        records=[dg.TableRecord(row) for row in report.display_rows()],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn(name, kind, description=text or None) for name, kind, text in _TABLE_COLUMNS
            ]
        ),
    )
    checks = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "check": name,
                    "result": "pass" if o.passed else ("FAIL" if o.blocking else "warn"),
                    "summary": o.summary,
                }
            )
            for name, o in report.ordered_outcomes()
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("check", "string"),
                dg.TableColumn("result", "string"),
                dg.TableColumn("summary", "string"),
            ]
        ),
    )
    return {
        "summary": report.summary_line(),
        "passed": report.passed,
        "tables_identical": dg.MetadataValue.int(report.identical_tables),
        "tables": dg.MetadataValue.int(len(report.tables)),
        "rows_missing": dg.MetadataValue.int(report.rows_missing),
        "rows_extra": dg.MetadataValue.int(report.rows_extra),
        "failing_tables": ", ".join(t.table.display for t in report.failing_tables) or "none",
        "failing_checks": ", ".join(report.failing_checks) or "none",
        "table_results": tables,
        "check_results": checks,
        "source_tables_moved": dg.MetadataValue.json(report.source_moved),
        "report": dg.MetadataValue.md(report.to_markdown()),
        "json_path": dg.MetadataValue.path(str(json_path)),
        "source_drift_seconds": dg.MetadataValue.float(drift_seconds),
    }


def _accepted_across_split(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    """What the schema steps' latest materializations say the plan accepted across the split."""
    found: list[tuple[str, str]] = []
    for key in SCHEMA_ASSETS.values():
        metadata = latest_metadata(instance, key) or {}
        for item in metadata.get(ACCEPTED_METADATA) or []:
            if isinstance(item, dict):
                found.append((f"{item.get('kind')} {item.get('name')}", str(item.get("detail") or "")))
    return found


def build_verification_report(plan: RoutingPlan) -> dg.AssetsDefinition:
    tables = {target: plan.tables(target) for target in TARGETS}
    table_checks, database_checks = verification_check_keys(plan)
    table_keys = {table: table_key(target, table) for target in TARGETS for table in tables[target]}

    @dg.asset(
        key=VERIFICATION_REPORT,
        # The report reads the checks' results from the event log, so it runs after every other step
        # of its run, the failed ones too (steps of a run run at once: defs/executor.py). No `deps`:
        # Dagster does not execute a step whose upstream failed or was skipped, and a dependency on
        # the post-data assets (or the tables) left the report "not executed" when a guard, the schema
        # or a blocking check failed, which is when it matters. The lowest step priority orders it after
        # every ready step where RUNS_LAST_TAG is not read (`execute_in_process` runs its own executor).
        op_tags={RUNS_LAST_TAG: "true", "dagster/priority": "-1000"},
        group_name="verification",
        kinds={"postgres"},
        description="The summary line first, then the failing tables and checks by name, then every "
        "table inline (failing ones first: rows, size, rows/s, COPY and fingerprint seconds) and every "
        "database check; which source tables moved since the snapshot. Materialized either way; the step "
        "fails unless every table is identical and every check passed (a moving source is a warning).",
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
        evaluations = latest_evaluations(
            context.instance, [*table_checks, *database_checks], context.run.run_id
        )
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
                    size_bytes=record.size_bytes if record else 0,
                    copy_seconds=record.copy_seconds if record else 0.0,
                    fingerprint_seconds=record.fingerprint_seconds if record else 0.0,
                )
        for key in database_checks:
            name = f"{key.asset_key.path[0]}: {key.name}"
            report.add_outcome(name, _outcome(evaluations[key], key.name))
        copied = [record for record in records.values() if record is not None]
        drift, moved = source_drift_now(
            source.database_url(),
            {record.table: record.source for record in copied},
            workers=settings.copy_workers,
            horizons={r.table: r.snapshot.horizon if r.snapshot else None for r in copied},
        )
        report.add_outcome(f"source: {SOURCE_DRIFT}", drift)
        failed = failed_steps(context.instance, context.run.run_id)
        if failed is not None:
            report.add_outcome(FAILED_STEPS, failed)
            report.failed_steps = [str(step) for step in failed.metadata["failed_steps"]]  # type: ignore[union-attr]
        report.set_source_moved(moved)
        report.set_accepted(_accepted_across_split(context.instance))
        drift_result = to_check_result(drift)

        out_dir = settings.dumps_path() / context.run.run_id
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / "verification_report.json"
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
        summary = report.summary_line()
        metadata = report_metadata(report, json_path, float(drift.metadata.get("seconds") or 0.0))  # type: ignore[arg-type]
        context.log.info(summary)
        # Materialized whatever it says: the asset page shows the failing report, failing tables first.
        yield dg.MaterializeResult(metadata=metadata)
        yield drift_result
        if not report.passed:
            failing = [t.table.display for t in report.failing_tables] + report.failing_checks
            raise dg.Failure(
                description=f"verification failed: {summary}",
                metadata={"failing": dg.MetadataValue.json(failing)},
            )

    return verification_report
