"""`cutover`: the switch of the application to the new pair, materialized only on purpose.

It refuses, with every reason, unless the latest verification passed after the latest copy, the
targets still hold what was verified, and the source has not been written to since the copy. When it
goes ahead it records the old database's change counters, marks both targets as cut over, and writes the
settings to switch to (and back) into owner-only files; the metadata shows them masked.
"""

import datetime as dt
from typing import Any

import dagster as dg

from dual_db.cutover import change_counters, judge, mark_targets_cut_over, write_switch_files
from dual_db.db.fingerprint import Fingerprint
from dual_db.db.names import TableName
from dual_db.db.snapshot import TransactionHorizon
from dual_db.defs.constants import CUTOVER, POST_DATA_ASSETS, VERIFICATION_REPORT, table_asset_keys, table_key
from dual_db.defs.errors import clear_failure
from dual_db.defs.resources import AiDatabase, CoreDatabase, MigrationSettings, SourceDatabase
from dual_db.defs.state import TableCopyRecord
from dual_db.defs.verification.assets import latest_evaluations, verification_check_keys
from dual_db.routing import TARGETS, RoutingPlan


def verification_problems(instance: dg.DagsterInstance, plan: RoutingPlan) -> list[str]:
    """Why the latest verification does not cover the pair as it was last copied ([] if it does)."""
    problems: list[str] = []
    copied = [table_key(target, t) for target in TARGETS for t in plan.tables(target)]
    events = instance.get_latest_materialization_events(
        [VERIFICATION_REPORT, *copied, *POST_DATA_ASSETS.values()]
    )
    report = events.get(VERIFICATION_REPORT)
    if report is None:
        return ["no verification report yet: run migrate (or verify) first"]
    newer = [
        key.to_user_string()
        for key, event in events.items()
        if key != VERIFICATION_REPORT and event is not None and event.timestamp > report.timestamp
    ]
    if newer:
        problems.append(
            f"{', '.join(newer[:5])}{' and more' if len(newer) > 5 else ''} changed after the latest "
            "verification report: run verify"
        )
    table_checks, database_checks = verification_check_keys(plan)
    evaluations = latest_evaluations(instance, [*table_checks, *database_checks])
    failed = [
        f"{key.asset_key.to_user_string()}:{key.name}"
        for key, evaluation in evaluations.items()
        if evaluation is None or not evaluation.passed
    ]
    if failed:
        problems.append(
            f"{len(failed)} check(s) did not pass or never ran: {', '.join(failed[:5])}"
            f"{' and more' if len(failed) > 5 else ''}: fix them and run verify"
        )
    return problems


def build_cutover(plan: RoutingPlan) -> dg.AssetsDefinition:
    @dg.asset(
        key=CUTOVER,
        deps=[VERIFICATION_REPORT],
        group_name="cutover",
        kinds={"postgres"},
        description="Switch the application to core + AI: refuses unless the latest verification passed, "
        "the targets still hold what was verified and the source has not moved since the copy. Writes "
        "the new settings (and the rollback ones) to owner-only files and marks both targets as cut "
        "over. Never part of a job: materialize it on purpose.",
    )
    def cutover(
        context: dg.AssetExecutionContext,
        source: SourceDatabase,
        core: CoreDatabase,
        ai: AiDatabase,
        settings: MigrationSettings,
    ) -> dg.MaterializeResult:
        with clear_failure(context):
            reasons = verification_problems(context.instance, plan)
            recorded: dict[str, dict[TableName, Fingerprint]] = {}
            horizons: dict[TableName, TransactionHorizon | None] = {}
            records = TableCopyRecord.latest_many(context.instance, table_asset_keys(plan))
            for target in TARGETS:
                recorded[target] = {}
                for table in plan.tables(target):
                    record = records[table_key(target, table)]
                    if record is None:
                        reasons.append(f"{target}/{table} was never copied")
                    else:
                        recorded[target][table] = record.source
                        horizons[table] = record.snapshot.horizon if record.snapshot else None
            targets = {"core": core.database_url(), "ai": ai.database_url()}
            verdict = judge(
                source.database_url(), targets, recorded, workers=settings.copy_workers, horizons=horizons
            )
            reasons += verdict.reasons
            if reasons:
                raise dg.Failure(
                    description="cutover refused: " + "; ".join(reasons),
                    metadata={
                        "reasons": dg.MetadataValue.json(reasons),
                        "source_tables_moved": dg.MetadataValue.json([str(t) for t in verdict.source_moved]),
                    },
                    allow_retries=False,
                )

            when = dt.datetime.now(dt.UTC)
            with source.get_connection() as conn:
                counters = change_counters(conn)
            files = write_switch_files(
                settings.dumps_path() / "cutover" / context.run.run_id,
                source_url=source.database_url(),
                core_url=targets["core"],
                ai_url=targets["ai"],
                when=when.isoformat(),
            )
            mark_targets_cut_over(targets, when)
            context.log.info(
                f"cut over at {when.isoformat()}: the application's settings are in {files.switch} "
                f"(to switch back: {files.rollback})"
            )
            metadata: dict[str, Any] = {
                "cutover_at": when.isoformat(),
                "DATABASE_URL": core.masked_url,
                "AI_DATABASE_URL": ai.masked_url,
                "rollback_DATABASE_URL": source.masked_url,
                "switch_file": dg.MetadataValue.path(str(files.switch)),
                "rollback_file": dg.MetadataValue.path(str(files.rollback)),
                # What the soak week compares with: any write to the old database after this moment.
                "source_change_counters": dg.MetadataValue.json(counters.to_json()),
                "source_commits": dg.MetadataValue.int(counters.commits),
                # How the source was shown unchanged since the copy (proved, or read table by table).
                "source_unchanged": verdict.source_unchanged_by,
            }
            return dg.MaterializeResult(metadata=metadata)

    return cutover
