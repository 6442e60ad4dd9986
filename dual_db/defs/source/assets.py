"""Source assets: the rollback backup and the schema dump, both read from the run's one snapshot."""

from pathlib import Path

import dagster as dg

from dual_db.defs.constants import (
    SNAPSHOT_READER_STEPS,
    SOURCE_FULL_BACKUP,
    SOURCE_POOL,
    SOURCE_SCHEMA_DUMP,
)
from dual_db.defs.errors import clear_failure
from dual_db.defs.resources import AiDatabase, CoreDatabase, MigrationSettings, SourceDatabase, SourceSnapshot
from dual_db.defs.state import SchemaFilesRecord, SnapshotRecord, human_bytes
from dual_db.preflight import preflight
from dual_db.schema.dump import (
    dump_full_backup,
    dump_schema_sections,
    prune_backups,
)


def run_dir(settings: MigrationSettings, run_id: str) -> Path:
    path = settings.dumps_path() / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


@dg.asset(
    key=SOURCE_FULL_BACKUP,
    # After the schema dump, which runs every guard: a typo in a URL must not first dump the source.
    # Beside the table copies, from the same snapshot (steps of a run run at once): off the critical path.
    deps=[SOURCE_SCHEMA_DUMP],
    group_name="source",
    kinds={"postgres"},
    pool=SOURCE_POOL,
    description="Whole-database dump of the source (pg_dump directory format) for rollback, "
    "taken from the same snapshot as the copy.",
)
def full_backup(
    context: dg.AssetExecutionContext,
    source: SourceDatabase,
    snapshot: SourceSnapshot,
    settings: MigrationSettings,
) -> dg.MaterializeResult:
    with clear_failure(context):
        bin_dir = settings.pg_bin_path()
        exported = snapshot.get()
        out_dir = run_dir(settings, context.run.run_id) / "full_backup"
        try:
            result = dump_full_backup(
                source.database_url(),
                out_dir,
                bin_dir=bin_dir,
                jobs=settings.backup_jobs,
                snapshot=exported.snapshot_id,
                compression=settings.backup_compression or None,
            )
        finally:
            snapshot.release_after(context, SNAPSHOT_READER_STEPS)
        context.log.info(
            f"full backup of {source.masked_url}: {human_bytes(result.bytes)} in {result.seconds:.1f}s"
        )
        for pruned in prune_backups(settings.dumps_path(), settings.keep_backups, current=result.path):
            context.log.info(f"deleted an older backup (keep_backups={settings.keep_backups}): {pruned}")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(result.path)),
                "bytes": dg.MetadataValue.int(result.bytes),
                "seconds": dg.MetadataValue.float(round(result.seconds, 2)),
                "pg_dump_version": result.pg_dump_version,
                "compression": result.compression,
                "restore_with": f"pg_restore --jobs=4 --no-owner --dbname=<new database> {result.path}",
                **SnapshotRecord.of(exported).to_metadata(),
            }
        )


@dg.asset(
    key=SOURCE_SCHEMA_DUMP,
    group_name="source",
    kinds={"postgres"},
    pool=SOURCE_POOL,
    description="Schema-only dump of the source, split into pre-data and post-data sections. "
    "Checks every server first: nothing is written anywhere unless all guards pass.",
)
def schema_dump(
    context: dg.AssetExecutionContext,
    source: SourceDatabase,
    core: CoreDatabase,
    ai: AiDatabase,
    snapshot: SourceSnapshot,
    settings: MigrationSettings,
) -> dg.MaterializeResult:
    with clear_failure(context):
        preflight(
            source.database_url(),
            {"core": core.database_url(), "ai": ai.database_url()},
            replace_existing=settings.replace_existing,
        )
        bin_dir = settings.pg_bin_path()
        exported = snapshot.get()
        try:
            sections = dump_schema_sections(
                source.database_url(), bin_dir=bin_dir, snapshot=exported.snapshot_id
            )
        finally:
            snapshot.release_after(context, SNAPSHOT_READER_STEPS)
        out_dir = run_dir(settings, context.run.run_id) / "schema"
        out_dir.mkdir(parents=True, exist_ok=True)
        pre_path, post_path = out_dir / "pre_data.sql", out_dir / "post_data.sql"
        pre_path.write_text(sections.pre_data)
        post_path.write_text(sections.post_data)
        return dg.MaterializeResult(
            metadata={
                **SchemaFilesRecord(pre_path, post_path).to_metadata(),
                "pg_dump_version": sections.pg_dump_version,
                **SnapshotRecord.of(exported).to_metadata(),
            },
        )
