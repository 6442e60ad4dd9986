"""Target schema assets: `<target>/schema` before the copy, post-data after it.

The split is computed from the schema dump's files and the routing plan; each target's pre-data is
applied before its tables are copied, its post-data (indexes, constraints, triggers) after, because
building an index once over loaded rows is far cheaper than maintaining it row by row.
"""

import functools
import time
from pathlib import Path
from typing import Any

import dagster as dg

from dual_db.copy.engine import align_all_sequences
from dual_db.db.cancel import run_cancellation
from dual_db.db.connect import connection, server_version_num
from dual_db.db.names import TableName
from dual_db.defs.constants import POST_DATA_ASSETS, SCHEMA_ASSETS, SOURCE_SCHEMA_DUMP, table_key
from dual_db.defs.errors import clear_failure
from dual_db.defs.resources import (
    AiDatabase,
    CoreDatabase,
    MigrationSettings,
    SourceDatabase,
    target_database,
)
from dual_db.defs.state import SchemaFilesRecord, SequencesRecord
from dual_db.preflight import preflight
from dual_db.routing import RoutingPlan
from dual_db.schema.ownership import prepare_target
from dual_db.schema.post_data import build_post_data
from dual_db.schema.split import POST_PARTS, SchemaSplit, split_schema
from dual_db.schema.statistics import dump_statistics
from dual_db.split_hazards import check_split_hazards
from dual_db.verify.write_probe import broken_summary, write_probe

# The schema assets' metadata entry listing what `accept_across_split` let through (the report reads it).
ACCEPTED_METADATA = "accepted_across_split"


@functools.lru_cache(maxsize=2)
def _split_once(
    pre_data_path: str,
    post_data_path: str,
    ai_tables: frozenset[TableName],
    core_major: int,
    ai_major: int,
    accept: frozenset[str] = frozenset(),
) -> SchemaSplit:
    # A pure function of its inputs: both schema steps of a run ask with the same ones (the dump's
    # files, the plan, both servers' versions), so the dump is parsed and split once per run. It is
    # computed whole (both sides) before either step writes, so a refusal of either side's objects
    # stops both steps before anything reaches a target.
    return split_schema(
        Path(pre_data_path).read_text(),
        Path(post_data_path).read_text(),
        set(ai_tables),
        core_major=core_major,
        ai_major=ai_major,
        accept=accept,
    )


def _split_for(
    context: dg.AssetExecutionContext, plan: RoutingPlan, core: CoreDatabase, ai: AiDatabase
) -> SchemaSplit:
    dump = SchemaFilesRecord.required(context.instance, SOURCE_SCHEMA_DUMP)
    majors = []
    for db in (core, ai):
        with db.get_connection(autocommit=True) as conn:
            majors.append(server_version_num(conn) // 10000)
    return _split_once(
        str(dump.pre_data_path),
        str(dump.post_data_path),
        frozenset(plan.ai),
        majors[0],
        majors[1],
        frozenset(plan.accept_across_split),
    )


def build_schema_asset(target: str, plan: RoutingPlan) -> dg.AssetsDefinition:
    @dg.asset(
        key=SCHEMA_ASSETS[target],
        deps=[SOURCE_SCHEMA_DUMP],
        group_name=target,
        kinds={"postgres"} if target == "core" else {"postgres", "pgvector"},
        description=(
            "Core database schema, split from the source's dump: tables, types and functions of the "
            "core tables before the copy (no indexes or constraints yet); no pgvector extension, no AI "
            "tables, no vector types or indexes."
            if target == "core"
            else "AI database schema, split from the source's dump: CREATE EXTENSION vector and the AI "
            "tables before the copy (no indexes or constraints yet)."
        ),
    )
    def target_schema(
        context: dg.AssetExecutionContext,
        source: SourceDatabase,
        core: CoreDatabase,
        ai: AiDatabase,
        settings: MigrationSettings,
    ) -> dg.MaterializeResult:
        with clear_failure(context):
            target_db = target_database(target, core, ai)
            url = target_db.database_url()
            preflight(source.database_url(), {target: url}, replace_existing=settings.replace_existing)
            # Also here, not only in routing_complete: a one-asset run of this step skips that check.
            check_split_hazards(source.database_url(), plan)
            split = _split_for(context, plan, core, ai)
            for ref in split.soft_references:
                if ref.from_database == target:
                    # Declared in the plan (check_split_hazards refused it otherwise), yet the application
                    # loses an enforced key: said where the run log shows it.
                    context.log.warning(
                        f"foreign key {ref.name} {ref.describe()} is not created in {target}: it points into "
                        "the other database, and is now the soft reference the plan declares "
                        "(foreign_keys_valid and the soak week count its orphans)"
                    )
            # What the plan accepted across the split, and what an operator should know: said loudly,
            # not only in metadata (the verification report's summary names the accepted ones too).
            for accepted in split.accepted:
                context.log.warning(f"accepted in the routing plan: {accepted.detail}")
            for note in split.notes:
                context.log.warning(f"schema split: {note}")
            target_version = split.core_major if target == "core" else split.ai_major
            pre, post = (
                (split.core_pre, split.core_post_parts)
                if target == "core"
                else (
                    split.ai_pre,
                    split.ai_post_parts,
                )
            )
            out_dir = Path(settings.dumps_path()) / context.run.run_id / target
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "pre_data.sql").write_text(pre)
            for part, text in post.in_order():
                (out_dir / f"post_data_{part}.sql").write_text(text)
            started = time.monotonic()
            preparation = prepare_target(
                url,
                target,
                pre,
                source_database=source.database_url().dbname or "",
                planned_tables=plan.tables(target),
                replace_existing=settings.replace_existing,
                log=context.log.warning,
            )
            if preparation.kept:
                context.log.info(
                    f"{target} schema unchanged since the previous copy into {target_db.masked_url}: nothing "
                    "dropped; each table keeps its previous contents until its new copy commits"
                )
            metadata: dict[str, Any] = {
                "target": target_db.masked_url,
                "target_version": target_version,
                "statements": preparation.statements,
                "schema_kept": preparation.kept,
                "objects_created": len(preparation.created),
                "objects_dropped": len(preparation.dropped),
                "left_alone": dg.MetadataValue.json([str(t) for t in preparation.left_alone]),
                "seconds": round(time.monotonic() - started, 3),
                **SchemaFilesRecord(out_dir / "pre_data.sql", out_dir).to_metadata(post_key="post_data_dir"),
                "soft_references": dg.MetadataValue.json(
                    [
                        {
                            "constraint": ref.name,
                            "from": f"{ref.from_table}({', '.join(ref.from_columns)})",
                            "to": f"{ref.to_table}({', '.join(ref.to_columns)})",
                            "from_database": ref.from_database,
                        }
                        for ref in split.soft_references
                    ]
                ),
                "notes": dg.MetadataValue.json(split.notes),
                ACCEPTED_METADATA: dg.MetadataValue.json(
                    [
                        {
                            "kind": a.kind,
                            "name": a.name,
                            "detail": a.detail,
                            "table": a.table.qualified if a.table else None,
                            "own_name": a.own_name,
                        }
                        for a in split.accepted
                    ]
                ),
            }
            if target == "core":
                metadata["removed_from_core"] = dg.MetadataValue.md(
                    "| kind | name | reason |\n|---|---|---|\n"
                    + "\n".join(f"| {r.kind} | {r.name} | {r.reason} |" for r in split.removed)
                )
            return dg.MaterializeResult(metadata=metadata)

    return target_schema


def build_post_data_asset(target: str, plan: RoutingPlan) -> dg.AssetsDefinition:
    @dg.asset(
        key=POST_DATA_ASSETS[target],
        deps=[SCHEMA_ASSETS[target], *(table_key(target, t) for t in plan.tables(target))],
        group_name=target,
        kinds={"postgres"} if target == "core" else {"postgres", "pgvector"},
        description=(
            "Indexes, constraints and triggers of the core tables, built after the copy; sequences "
            "aligned with the source; the source's planner statistics imported (ANALYZE where they "
            "cannot be)."
            if target == "core"
            else "Indexes of the AI tables, HNSW/IVFFlat last with memory sized to the graph and "
            "parallel workers; the source's planner statistics imported (ANALYZE where they cannot be)."
        ),
    )
    def post_data(
        context: dg.AssetExecutionContext,
        source: SourceDatabase,
        core: CoreDatabase,
        ai: AiDatabase,
        settings: MigrationSettings,
    ) -> dg.MaterializeResult:
        with clear_failure(context):
            target_db = target_database(target, core, ai)
            files = SchemaFilesRecord.required(
                context.instance, SCHEMA_ASSETS[target], post_key="post_data_dir"
            )
            post_dir = files.post_data_path
            tables = plan.tables(target)
            # The source's planner statistics for these tables (read-only; "" before pg_dump 18).
            statistics = dump_statistics(source.database_url(), tables, bin_dir=settings.pg_bin_path())
            report = build_post_data(
                target_db.database_url(),
                {part: (post_dir / f"post_data_{part}.sql").read_text() for part in POST_PARTS},
                max_index_memory=settings.max_index_memory,
                workers=settings.copy_workers,
                tables=tables,
                statistics=statistics,
                log=context.log.info,
                # An interrupted run cancels the build on the server (the executor's main thread).
                cancellation=run_cancellation(context.run.run_id),
            )
            # One rolled-back write per table, triggers and foreign keys on: what the static reading of
            # the split missed fails here, named, rather than at the application's first write.
            probe = write_probe(target_db.database_url(), tables)
            context.log.info(
                f"write probe: {len(probe.probed)} table(s) written back and rolled back in "
                f"{probe.seconds:.1f}s ({len(probe.empty)} empty, {len(probe.inconclusive)} inconclusive)"
            )
            for table, why in probe.inconclusive.items():
                context.log.warning(f"write probe inconclusive for {table.qualified}: {why}")
            if probe.broken:
                raise dg.Failure(
                    description=broken_summary(target, probe),
                    metadata={"write_probe": dg.MetadataValue.json(probe.to_dict())},
                )
            # After the probe: sequences its triggers drew from return to the source's values.
            with (
                connection(source.database_url(), read_only=True) as src,
                connection(target_db.database_url(), autocommit=True) as tgt,
            ):
                sequences = align_all_sequences(src, tgt)
            return dg.MaterializeResult(
                metadata={
                    **report.to_dict(),
                    "vector_indexes": dg.MetadataValue.json(report.to_dict()["vector_indexes"]),
                    "write_probe": dg.MetadataValue.json(probe.to_dict()),
                    **SequencesRecord(
                        {s.sequence: (s.last_value, s.is_called) for s in sequences}
                    ).to_metadata(),
                }
            )

    return post_data
