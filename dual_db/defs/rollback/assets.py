"""`rollback/restored_source`: the latest full backup restored into a new, empty database, proven equal
to the source at the backup's snapshot, and the settings to switch the application back to it.

This is the plan's "Full rollback (if old DB deleted)": the old database may be gone, so the source,
core and AI are compared with the rollback database only as far as they can be reached; the rollback
database must be empty anyway, which none of them is after a migration.
"""

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg

from dual_db.db.connect import connection
from dual_db.db.env import write_private_text
from dual_db.db.fingerprint import Fingerprint
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.defs.constants import ROLLBACK_RESTORED_SOURCE, SOURCE_FULL_BACKUP, table_asset_keys, table_key
from dual_db.defs.errors import USER_ERRORS, clear_failure, one_line
from dual_db.defs.resources import (
    AiDatabase,
    CoreDatabase,
    MigrationSettings,
    PostgresDatabase,
    RollbackDatabase,
    SourceDatabase,
)
from dual_db.defs.state import SequenceState, SnapshotRecord, TableCopyRecord, required_metadata
from dual_db.preflight import GuardError, check_rollback_target, database_identity
from dual_db.routing import TARGETS, RoutingPlan
from dual_db.schema.restore import restore_backup
from dual_db.verify.restored import restored_matches_snapshot


def _reachable_identities(
    context: dg.AssetExecutionContext, databases: dict[str, PostgresDatabase]
) -> dict[str, tuple[str, ...]]:
    """The server identity of each database that can be reached; the others are logged, not fatal
    (a rollback usually happens because one of them is gone)."""
    identities: dict[str, tuple[str, ...]] = {}
    for role, database in databases.items():
        try:
            with connection(
                database.database_url(), read_only=True, application_name="dual-db rollback identity"
            ) as conn:
                identities[role] = database_identity(conn)
        except (dg.Failure, *USER_ERRORS) as exc:
            reason = exc.description if isinstance(exc, dg.Failure) else one_line(exc)
            context.log.warning(
                f"the {role} database was not compared with the rollback database ({reason}); the "
                "rollback database must still be empty, which neither the source nor a migrated target is"
            )
    return identities


def _recorded_at(
    instance: dg.DagsterInstance, plan: RoutingPlan, snapshot: SnapshotRecord
) -> tuple[dict[TableName, Fingerprint], dict[TableName, SequenceState]]:
    """Every planned table's source fingerprint (and its sequences) recorded at `snapshot`; raises
    GuardError naming the tables whose latest copy was never made or read another snapshot."""
    fingerprints: dict[TableName, Fingerprint] = {}
    sequences: dict[TableName, SequenceState] = {}
    unprovable: list[str] = []
    records = TableCopyRecord.latest_many(instance, table_asset_keys(plan))
    for target in TARGETS:
        for table in plan.tables(target):
            record = records[table_key(target, table)]
            if record is None:
                unprovable.append(f"{table} (never copied)")
            elif record.snapshot != snapshot:
                other = record.snapshot.snapshot_id if record.snapshot else "unknown"
                unprovable.append(f"{table} (copied from snapshot {other})")
            else:
                fingerprints[table] = record.source
                sequences.update(record.sequences)
    if unprovable:
        shown = ", ".join(unprovable[:5]) + (
            f" and {len(unprovable) - 5} more" if len(unprovable) > 5 else ""
        )
        raise GuardError(
            f"the latest backup was taken from snapshot {snapshot.snapshot_id} ({snapshot.taken_at}), but "
            f"{len(unprovable)} table(s) have no fingerprint from it: {shown}; nothing could prove the "
            "restore. Run migrate, whose backup and copies share one snapshot, then roll back"
        )
    return fingerprints, sequences


def _application_masked(url: DatabaseUrl) -> str:
    return "postgresql+asyncpg://" + url.masked().split("://", 1)[1]


def write_rollback_values(directory: Path, url: DatabaseUrl, *, comment: str) -> Path:
    """The application's settings to switch back to the restored database, readable by the owner only."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "rollback.env"
    write_private_text(
        path,
        f"# {comment}\n"
        "# Switch the application back to one database: set DATABASE_URL and unset AI_DATABASE_URL\n"
        f"DATABASE_URL={url.application_url()}\n"
        "# unset AI_DATABASE_URL\n",
    )
    return path


def build_rollback(plan: RoutingPlan) -> dg.AssetsDefinition:
    @dg.asset(
        key=ROLLBACK_RESTORED_SOURCE,
        deps=[SOURCE_FULL_BACKUP],
        group_name="rollback",
        kinds={"postgres"},
        description="The latest source/full_backup restored (pg_restore) into the empty database "
        "ROLLBACK_DATABASE_URL names, proven equal to the source at the backup's snapshot; writes the "
        "settings to switch the application back to it into an owner-only file. Only in the rollback job.",
    )
    def restored_source(
        context: dg.AssetExecutionContext,
        rollback: RollbackDatabase,
        source: SourceDatabase,
        core: CoreDatabase,
        ai: AiDatabase,
        settings: MigrationSettings,
    ) -> dg.MaterializeResult:
        with clear_failure(context):
            url = rollback.database_url()
            backup = required_metadata(context.instance, SOURCE_FULL_BACKUP)
            backup_path = Path(str(backup["path"]))
            snapshot = SnapshotRecord.from_metadata(backup)
            if snapshot is None:
                raise GuardError(
                    f"the latest backup {backup_path} records no snapshot, so nothing can prove a restore "
                    "of it: run migrate for a new backup"
                )
            expected, sequences = _recorded_at(context.instance, plan, snapshot)
            identities = _reachable_identities(context, {"source": source, "core": core, "ai": ai})
            check_rollback_target(url, identities)

            context.log.info(f"restoring {backup_path} into {url.masked()}")
            restored = restore_backup(
                url,
                backup_path,
                bin_dir=settings.pg_bin_path(),
                jobs=settings.backup_jobs,
            )
            with connection(url, read_only=True, application_name="dual-db rollback proof") as conn:
                outcome = restored_matches_snapshot(conn, expected, sequences)
            metadata: dict[str, Any] = {
                "rollback_database": url.masked(),
                "backup_path": dg.MetadataValue.path(str(backup_path)),
                "restore_seconds": dg.MetadataValue.float(round(restored.seconds, 2)),
                "pg_restore_version": restored.pg_restore_version,
                "summary": outcome.summary,
                "tables": dg.MetadataValue.json(outcome.metadata["tables"]),
                "sequences": dg.MetadataValue.json(outcome.metadata["sequences"]),
                "failures": dg.MetadataValue.json(outcome.failures),
                "warnings": dg.MetadataValue.json(outcome.warnings),
                **snapshot.to_metadata(),
            }
            for warning in outcome.warnings:
                context.log.warning(warning)
            if not outcome.passed:
                raise dg.Failure(
                    description=f"rollback: {url.masked()} is not the source as of the backup's snapshot: "
                    f"{outcome.summary}",
                    metadata=metadata,
                    allow_retries=False,
                )

            when = dt.datetime.now(dt.UTC).isoformat()
            values_file = write_rollback_values(
                settings.dumps_path() / "rollback" / context.run.run_id,
                url,
                comment=f"dual-db rollback at {when}: {backup_path} (snapshot {snapshot.snapshot_id} taken "
                f"at {snapshot.taken_at}) restored into {url.masked()}; {outcome.summary}",
            )
            context.log.info(
                f"{outcome.summary}. To switch back: DATABASE_URL={_application_masked(url)} and unset "
                f"AI_DATABASE_URL (the full value is in {values_file})"
            )
            metadata.update(
                {
                    "DATABASE_URL": _application_masked(url),
                    "AI_DATABASE_URL": "unset",
                    "values_file": dg.MetadataValue.path(str(values_file)),
                }
            )
            return dg.MaterializeResult(metadata=metadata)

    return restored_source
