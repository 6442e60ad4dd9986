"""Source checks: the routing plan covers the source exactly, and the schema splits as planned."""

import dagster as dg

from dual_db.copy.engine import CopyError
from dual_db.copy.partitions import copy_units
from dual_db.db.catalog import list_tables, partitions_of, table_columns
from dual_db.defs.constants import ROUTING_COMPLETE, SOURCE_SCHEMA_DUMP
from dual_db.defs.errors import clear_failure
from dual_db.defs.resources import SourceDatabase
from dual_db.defs.state import SchemaFilesRecord
from dual_db.defs.targets.schema import _split_once
from dual_db.routing import RoutingPlan, plan_path
from dual_db.schema.split import SchemaSplitError, TargetVersionError
from dual_db.split_hazards import split_hazards


def build_routing_complete(plan: RoutingPlan) -> dg.AssetChecksDefinition:
    """The check runs with the plan the definitions were built from, not a re-read of the file."""

    @dg.asset_check(
        asset=SOURCE_SCHEMA_DUMP,
        name=ROUTING_COMPLETE,
        blocking=True,
        description="Every source table is routed exactly once by the routing plan: a table missing "
        "from the plan, a planned table missing from the source, or a table routed twice fails it by name; "
        "so does what no copy can carry: an undeclared foreign key across the split, large objects. "
        "The dumped schema must split as planned: an object referencing the other database (a function "
        "body, trigger, view, rule or policy; a sequence both sides draw from) fails it by name unless "
        "the plan's accept_across_split names it. Before anything is written to a target.",
    )
    def routing_complete(
        context: dg.AssetCheckExecutionContext, source: SourceDatabase
    ) -> dg.AssetCheckResult:
        with clear_failure():
            return _routing_complete(plan, source, _split_problem(context, plan))

    return routing_complete


def _split_problem(context: dg.AssetCheckExecutionContext, plan: RoutingPlan) -> str | None:
    """Why the dumped schema cannot be split as the plan says, or None. The target servers' versions
    are not known here: their syntax checks wait for the schema steps."""
    dump = SchemaFilesRecord.required(context.instance, SOURCE_SCHEMA_DUMP)
    try:
        _split_once(
            str(dump.pre_data_path),
            str(dump.post_data_path),
            frozenset(plan.ai),
            18,
            18,
            frozenset(plan.accept_across_split),
        )
    except TargetVersionError:
        return None
    except SchemaSplitError as exc:
        return str(exc)
    return None


def _routing_complete(
    plan: RoutingPlan, source: SourceDatabase, split_problem: str | None = None
) -> dg.AssetCheckResult:
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
        # Blocking: nothing downstream (the target schemas, the copies) runs while these are open.
        hazards = split_hazards(conn, plan)
        problems = plan.problems(source_tables, partitions) + hazards
        try:
            # A partition that is a foreign table cannot be copied: refused before anything is written.
            copy_units(conn, [t for t in (*plan.core, *plan.ai) if t in set(source_tables)])
        except CopyError as exc:
            problems.append(str(exc))
    if split_problem is not None and not problems:
        # Only for a plan that covers the source: a split of a wrong plan fails on the same tables.
        problems.append(split_problem)
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
