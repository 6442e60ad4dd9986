"""The soak week: `soak/health`, measured every hour after cutover by the `soak` job, which the
`soak_schedule` sensor requests (one run per time bucket, for the configured window).

Each run records every figure as numeric metadata (the UI plots the week) and evaluates checks whose
failures the alert sensor posts: no write reached the old database (ERROR), core still has no pgvector
(ERROR), cross-database orphans did not grow (ERROR), row counts, the vector index, performance against
the baseline and database health (WARN).
"""

import json
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from dual_db import soak as probes
from dual_db.cutover import ChangeCounters, change_counters
from dual_db.defs.check_results import to_check_result
from dual_db.defs.constants import (
    BASELINE,
    CUTOVER,
    DECOMMISSION_READINESS,
    SOAK_HEALTH,
    SOAK_JOB,
    table_asset_keys,
    table_key,
)
from dual_db.defs.errors import clear_failure
from dual_db.defs.resources import AiDatabase, CoreDatabase, SourceDatabase
from dual_db.defs.state import TableCopyRecord, latest_metadata, numeric_metadata
from dual_db.routing import RoutingPlan
from dual_db.verify import checks as verify
from dual_db.verify.outcome import CheckOutcome

NO_WRITES_TO_OLD_DATABASE = "no_writes_to_old_database"
ROW_COUNTS = "row_counts"
CORE_HAS_NO_PGVECTOR = "core_has_no_pgvector"
VECTOR_INDEX = "vector_index"
PERFORMANCE_VS_BASELINE = "performance_vs_baseline"
DATABASE_HEALTH = "database_health"
SOFT_REFERENCE_ORPHANS = "soft_reference_orphans"

_CHECKS = {
    NO_WRITES_TO_OLD_DATABASE: "No table of the old database was written after the cutover (ERROR).",
    CORE_HAS_NO_PGVECTOR: "Core still has no vector extension, column or index (ERROR).",
    SOFT_REFERENCE_ORPHANS: "Cross-database references (no foreign key guards them) did not gain orphans "
    "since the previous run (ERROR).",
    ROW_COUNTS: "No table shrank beyond the bound since the migration (WARN).",
    VECTOR_INDEX: "Vector indexes valid, used, and recall@10 not below the baseline (WARN).",
    PERFORMANCE_VS_BASELINE: "Batch workload at least 30% faster than the baseline and RAG p50 not slower "
    "(WARN).",
    DATABASE_HEALTH: "Deadlocks, rollbacks and conflicts within bounds on both databases (WARN).",
}


class SoakSettings(dg.ConfigurableResource):
    """The soak week's window, cadence and bounds."""

    window_hours: float = Field(default=168.0, description="How long after cutover the soak runs.")
    interval_minutes: float = Field(default=60.0, description="One soak run per interval.")
    shrink_bound: float = Field(default=0.1, description="A table with this share fewer rows warns.")
    batch_at_most: float = Field(default=0.7, description="Batch time must be at most this x baseline.")
    workload_runs: int = Field(default=3, description="Batch workload repetitions per soak run.")
    rag_queries: int = Field(default=20, description="RAG probe queries per soak run.")
    recall_tolerance: float = Field(
        default=0.05, description="How far recall@10 may fall below the baseline."
    )


def build_soak(
    plan: RoutingPlan,
) -> tuple[dg.AssetsDefinition, Any, dg.SensorDefinition]:
    """The `soak/health` asset, the `soak` job and the `soak_schedule` sensor."""

    @dg.asset(
        key=SOAK_HEALTH,
        deps=[CUTOVER],
        group_name="soak",
        kinds={"postgres"},
        description="The new pair after cutover, every hour of the soak week: reachability, the old "
        "database left alone, row counts, pgvector rules, the vector index, performance against the "
        "baseline, database health and cross-database orphans, each as numbers.",
        check_specs=[
            dg.AssetCheckSpec(name, asset=SOAK_HEALTH, description=text, blocking=False)
            for name, text in _CHECKS.items()
        ],
    )
    def soak_health(
        context: dg.AssetExecutionContext,
        source: SourceDatabase,
        core: CoreDatabase,
        ai: AiDatabase,
        soak: SoakSettings,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        with clear_failure(context):
            cutover = latest_metadata(context.instance, CUTOVER)
            if cutover is None:
                raise dg.Failure("no cutover yet: the soak week starts when cutover is materialized")
            figures: dict[str, Any] = {}
            outcomes: dict[str, CheckOutcome] = {}

            with source.get_connection() as conn:
                now = change_counters(conn)
            outcomes[NO_WRITES_TO_OLD_DATABASE] = probes.no_writes_since_cutover(
                ChangeCounters.from_json(cutover["source_change_counters"]), now
            )

            with (
                core.get_connection(autocommit=True) as core_conn,
                ai.get_connection(autocommit=True) as ai_conn,
            ):
                figures["reachable"] = 1  # both connected, as the application's URLs
                shrunk: list[CheckOutcome] = []
                records = TableCopyRecord.latest_many(
                    context.instance,
                    table_asset_keys(plan),
                )
                for target, conn in (("core", core_conn), ("ai", ai_conn)):
                    migrated = {
                        table: record.rows
                        for table in plan.tables(target)
                        if (record := records[table_key(target, table)]) is not None
                    }
                    shrunk.append(probes.row_counts(conn, migrated, shrink_bound=soak.shrink_bound))
                outcomes[ROW_COUNTS] = _merge(shrunk, severity="WARN")
                outcomes[CORE_HAS_NO_PGVECTOR] = verify.core_extension_rules(core_conn)
                indexes, invalid = probes.vector_indexes_valid(ai_conn)
                previous_run = latest_metadata(context.instance, SOAK_HEALTH) or {}
                previous_health = previous_run.get("health_counters") or {}
                health_now = {
                    "core": probes.health_counters(core_conn),
                    "ai": probes.health_counters(ai_conn),
                }
                outcomes[DATABASE_HEALTH] = _merge(
                    [
                        probes.database_health(health_now[role], previous_health.get(role), role)
                        for role in ("core", "ai")
                    ],
                    severity="WARN",
                )
                soft = verify.soft_references(ai_conn, core_conn, plan.soft_references)
            orphan_rows = int(soft.metadata.get("orphan_rows") or 0)  # type: ignore[call-overload]
            outcomes[SOFT_REFERENCE_ORPHANS] = probes.orphan_growth(
                int(previous_run["orphan_rows"]) if "orphan_rows" in previous_run else None, orphan_rows
            )

            # Imported here, not at the top: the application-side stack it loads (SQLAlchemy's asyncio
            # extension, asyncpg) would otherwise add to the start-up of every run, a one-table redo's too.
            from dual_db.measure.workload import measure

            measured = measure(
                core.database_url(), ai.database_url(), runs=soak.workload_runs, rag_queries=soak.rag_queries
            )
            baseline = latest_metadata(context.instance, BASELINE) or {}
            batch_ok, batch_line = probes.compared_with_baseline(
                "batch",
                measured.batch_median_ms,
                baseline.get("batch_median_ms"),
                at_most=soak.batch_at_most,
                label="batch workload ms",
            )
            rag_ok, rag_line = probes.compared_with_baseline(
                "rag", measured.rag_p50_ms, baseline.get("rag_p50_ms"), at_most=1.0, label="RAG p50 ms"
            )
            outcomes[PERFORMANCE_VS_BASELINE] = CheckOutcome(
                batch_ok and rag_ok,
                f"{batch_line}; {rag_line}",
                [line for ok, line in ((batch_ok, batch_line), (rag_ok, rag_line)) if not ok],
                {"batch_median_ms": measured.batch_median_ms, "rag_p50_ms": measured.rag_p50_ms},
                severity="WARN",
            )
            recall_base = baseline.get("rag_recall_at_10")
            baseline_used = baseline.get("rag_index_used")
            outcomes[VECTOR_INDEX] = probes.vector_index_outcome(
                indexes,
                invalid,
                index_used=measured.rag_index_used,
                rag_queries=measured.rag_queries,
                recall=measured.rag_recall_at_10,
                recall_base=None if recall_base is None else float(recall_base),
                baseline_index_used=None if baseline_used is None else bool(baseline_used),
                recall_tolerance=soak.recall_tolerance,
            )

            figures.update(measured.figures())
            figures["orphan_rows"] = orphan_rows
            figures["old_database_tables_written"] = len(
                outcomes[NO_WRITES_TO_OLD_DATABASE].metadata.get("tables_written") or []  # type: ignore[arg-type]
            )
            figures["old_database_commits_since_cutover"] = now.commits - int(
                cutover.get("source_commits") or 0
            )
            for name in ("deadlocks", "rollbacks", "conflicts", "temp_files"):
                # Summed over both databases by _merge.
                figures[name] = outcomes[DATABASE_HEALTH].metadata.get(name, 0)
            failed = [name for name, o in outcomes.items() if not o.passed]
            figures["checks_failed"] = len(failed)

        for name, outcome in outcomes.items():
            yield to_check_result(outcome, asset_key=SOAK_HEALTH, check_name=name)
        yield dg.MaterializeResult(
            asset_key=SOAK_HEALTH,
            metadata={
                **numeric_metadata(figures),
                "cutover_at": str(cutover.get("cutover_at")),
                # The next run judges health over the interval since this one.
                "health_counters": dg.MetadataValue.json(health_now),
                "summary": "all soak checks passed" if not failed else f"failed: {', '.join(failed)}",
            },
        )

    soak_job = dg.define_asset_job(
        SOAK_JOB,
        selection=dg.AssetSelection.assets(SOAK_HEALTH),
        description="One soak run: the new pair's health and performance after cutover.",
    )

    @dg.sensor(
        job=soak_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="After a cutover, requests the soak job once per interval for the soak window; says "
        "why it skips, and reports buckets missed while it was not running.",
    )
    def soak_schedule(
        context: dg.SensorEvaluationContext, soak: SoakSettings
    ) -> dg.RunRequest | dg.SkipReason:
        event = context.instance.get_latest_materialization_event(CUTOVER)
        if event is None:
            return dg.SkipReason("no cutover yet: the soak week starts when cutover is materialized")
        start, interval, window = event.timestamp, soak.interval_minutes * 60, soak.window_hours * 3600
        now = time.time()
        if now >= start + window:
            return dg.SkipReason(f"the soak window ({soak.window_hours:g} h after the cutover) has ended")
        bucket = int((now - start) // interval)
        state = json.loads(context.cursor) if context.cursor else {}
        last = int(state["bucket"]) if state.get("cutover_run") == event.run_id else -1
        if bucket <= last:
            next_at = start + (bucket + 1) * interval
            return dg.SkipReason(
                f"bucket {bucket} already requested; the next soak run is due in {next_at - now:.0f} s"
            )
        missed = list(range(last + 1, bucket))
        if missed:
            context.log.warning(f"soak bucket(s) {missed} were missed while the sensor was not running")
        context.update_cursor(json.dumps({"cutover_run": event.run_id, "bucket": bucket}))
        return dg.RunRequest(
            run_key=f"soak-{event.run_id}-{bucket}",
            tags={
                "dual_db/soak_bucket": str(bucket),
                "dual_db/soak_missed_buckets": ",".join(map(str, missed)),
            },
        )

    return soak_health, soak_job, soak_schedule


def _merge(outcomes: list[CheckOutcome], *, severity: str) -> CheckOutcome:
    metadata: dict[str, Any] = {}
    for outcome in outcomes:
        for key, value in outcome.metadata.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metadata[key] = metadata.get(key, 0) + value
            else:
                metadata[key] = value
    failures = [line for o in outcomes for line in o.failures]
    return CheckOutcome(
        all(o.passed for o in outcomes),
        "; ".join(o.summary for o in outcomes),
        failures,
        metadata,
        severity=severity,  # type: ignore[arg-type]
    )


# The plan's phase-8 checklist, each item with the soak checks that are its evidence (or none: a
# person must look, e.g. at the application's logs).
CHECKLIST: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("All API endpoints working correctly (both databases reachable as the application connects)", ()),
    ("AI chat functioning (RAG retrieval through the vector index)", (VECTOR_INDEX,)),
    ("Batch calculations running successfully", (ROW_COUNTS,)),
    ("No errors in production logs (database side: deadlocks, rollbacks, conflicts)", (DATABASE_HEALTH,)),
    ("Performance improvement confirmed (batch ≥30% faster, RAG p50 not slower)", (PERFORMANCE_VS_BASELINE,)),
    ("No write reached the old database after the cutover", (NO_WRITES_TO_OLD_DATABASE,)),
    ("Core never gained pgvector", (CORE_HAS_NO_PGVECTOR,)),
    ("Cross-database references gained no orphans", (SOFT_REFERENCE_ORPHANS,)),
)


def _window_evaluations(
    instance: dg.DagsterInstance, since: float
) -> dict[str, list[dg.AssetCheckEvaluation]]:
    """Every soak check evaluation since `since` (the cutover), by check name."""
    found: dict[str, list[dg.AssetCheckEvaluation]] = {}
    for name in _CHECKS:
        key = dg.AssetCheckKey(SOAK_HEALTH, name)
        cursor: int | None = None
        history = []
        while True:  # newest first, a page at a time, back to the cutover
            page = instance.event_log_storage.get_asset_check_execution_history(key, limit=500, cursor=cursor)
            history.extend(page)
            if len(page) < 500 or page[-1].create_timestamp < since:
                break
            cursor = page[-1].id
        for record in history:
            if record.create_timestamp < since or record.event is None or record.event.dagster_event is None:
                continue
            data = record.event.dagster_event.event_specific_data
            if isinstance(data, dg.AssetCheckEvaluation):
                found.setdefault(name, []).append(data)
    return found


@dg.asset(
    key=DECOMMISSION_READINESS,
    deps=[SOAK_HEALTH],
    group_name="soak",
    description="After the soak window: the plan's phase-8 checklist, each item with its evidence (soak "
    "runs, check results, figures). 'ready' only with a complete window and no failed ERROR check in it. "
    "It never deletes anything; it says what to do next.",
)
def decommission_readiness(context: dg.AssetExecutionContext, soak: SoakSettings) -> dg.MaterializeResult:
    cutover = context.instance.get_latest_materialization_event(CUTOVER)
    if cutover is None:
        raise dg.Failure("no cutover yet: there is nothing to decommission")
    window_end = cutover.timestamp + soak.window_hours * 3600
    runs = []
    page_cursor: str | None = None
    while True:  # newest first, a page at a time, back to the cutover
        page = context.instance.fetch_materializations(SOAK_HEALTH, limit=500, cursor=page_cursor)
        runs.extend(r for r in page.records if r.timestamp >= cutover.timestamp)
        if not page.has_more or (page.records and page.records[-1].timestamp < cutover.timestamp):
            break
        page_cursor = page.cursor
    evaluations = _window_evaluations(context.instance, cutover.timestamp)
    blockers: list[str] = []
    if time.time() < window_end:
        blockers.append(
            f"the soak window runs until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(window_end))}"
        )
    if not runs:
        blockers.append("no soak run since the cutover")
    lines = ["| item | evidence | status |", "|---|---|---|"]
    for item, names in CHECKLIST:
        if not names:
            evidence = f"{len(runs)} soak run(s) connected to both databases; check the application itself"
            lines.append(f"| {item} | {evidence} | look |")
            continue
        failed_error = [
            e
            for n in names
            for e in evaluations.get(n, [])
            if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
        ]
        failed_warn = [
            e
            for n in names
            for e in evaluations.get(n, [])
            if not e.passed and e.severity != dg.AssetCheckSeverity.ERROR
        ]
        total = sum(len(evaluations.get(n, [])) for n in names)
        if failed_error:
            blockers.append(
                f"{item}: {len(failed_error)} failed ERROR check(s), first: {failed_error[0].description}"
            )
        status = (
            "failed"
            if failed_error
            else ("warned" if failed_warn else ("passed" if total else "no evidence"))
        )
        evidence = f"{total} evaluation(s), {len(failed_error)} failed, {len(failed_warn)} warned"
        lines.append(f"| {item} | {evidence} | {status} |")
    ready = not blockers
    verdict = "ready" if ready else "not ready"
    next_step = (
        "Delete the old database with your provider (Railway: the old PostgreSQL service → Settings → "
        "Danger Zone → Delete Service), after keeping source/full_backup where your backups live; update "
        ".env.example and the deployment documentation with both database URLs."
        if ready
        else "Keep the old database and its rollback settings; fix what is listed, let the soak run on."
    )
    context.log.info(f"decommission: {verdict}. {next_step}")
    return dg.MaterializeResult(
        metadata={
            "verdict": verdict,
            "ready": ready,
            "blockers": dg.MetadataValue.json(blockers),
            "soak_runs": dg.MetadataValue.int(len(runs)),
            "checklist": dg.MetadataValue.md("\n".join(lines)),
            "next_step": next_step,
        }
    )
