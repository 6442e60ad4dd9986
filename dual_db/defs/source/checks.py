"""Source checks: the routing plan covers the source exactly."""

import dagster as dg

from dual_db.copy.engine import CopyError
from dual_db.copy.partitions import copy_units
from dual_db.db.catalog import list_tables, partitions_of, table_columns
from dual_db.defs.constants import ROUTING_COMPLETE, SOURCE_SCHEMA_DUMP
from dual_db.defs.errors import clear_failure
from dual_db.defs.resources import SourceDatabase
from dual_db.routing import RoutingPlan, plan_path


def build_routing_complete(plan: RoutingPlan) -> dg.AssetChecksDefinition:
    """The check runs with the plan the definitions were built from, not a re-read of the file."""

    @dg.asset_check(
        asset=SOURCE_SCHEMA_DUMP,
        name=ROUTING_COMPLETE,
        blocking=True,
        description="Every source table is routed exactly once by the routing plan: a table missing "
        "from the plan, a planned table missing from the source, or a table routed twice fails it by name.",
    )
    def routing_complete(source: SourceDatabase) -> dg.AssetCheckResult:
        with clear_failure():
            return _routing_complete(plan, source)

    return routing_complete


def _routing_complete(plan: RoutingPlan, source: SourceDatabase) -> dg.AssetCheckResult:
    with source.get_connection() as conn:
        source_tables = [info.table for info in list_tables(conn)]
        partitions = partitions_of(conn)
        # vector_tables only labels the assets (has_vectors, class): out of date, it is said, not failed.
        stale: list[str] = []
        if plan.vector_tables is not None:
            listed = set(plan.vector_tables)
            for table in source_tables:
                has_vectors = any(c.vector_type for c in table_columns(conn, table))
                if has_vectors != (table in listed):
                    stale.append(f"{table} has {'a' if has_vectors else 'no'} pgvector column")
        problems = plan.problems(source_tables, partitions)
        try:
            # A partition that is a foreign table cannot be copied: refused before anything is written.
            copy_units(conn, [t for t in (*plan.core, *plan.ai) if t in set(source_tables)])
        except CopyError as exc:
            problems.append(str(exc))
    note = (
        f" (vector_tables is out of date: {'; '.join(stale[:5])}; it only labels the assets: "
        "rewrite it with `dual-db plan --discover`)"
        if stale
        else ""
    )
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"all {len(source_tables)} source tables routed exactly once{note}"
            if not problems
            else f"{len(problems)} routing problem(s): " + "; ".join(problems[:10]) + note
        ),
        metadata={
            "plan_file": str(plan_path()),
            "source_tables": len(source_tables),
            "core_tables": len(plan.core),
            "ai_tables": len(plan.ai),
            "excluded_tables": len(plan.exclude),
            "problems": dg.MetadataValue.json(problems),
            "vector_tables_out_of_date": dg.MetadataValue.json(stale),
        },
    )
