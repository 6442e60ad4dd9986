"""One asset per table, from one subsettable multi-asset per target database.

Materializing copies the selected tables from the run's source snapshot and checks each one
(count_parity, checksum_parity) as it lands. Selecting only the checks (the `verify` job) re-checks the
target as it is now against the source fingerprint recorded at the copy's snapshot.
"""

import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import dagster as dg

from dual_db.copy.engine import CopyProgress, CopyRun, TableCopyResult, copy_tables
from dual_db.copy.partitions import CopyUnits, PartitionedCopyResult, combine_partitions, copy_units
from dual_db.db.cancel import run_cancellation
from dual_db.db.catalog import table_columns
from dual_db.db.fingerprint import Fingerprint
from dual_db.db.names import TableName
from dual_db.defs.check_results import to_check_result
from dual_db.defs.constants import (
    CHECKSUM_PARITY,
    COUNT_PARITY,
    SCHEMA_ASSETS,
    SNAPSHOT_READER_STEPS,
    SOURCE_POOL,
    table_key,
)
from dual_db.defs.errors import clear_failure
from dual_db.defs.resources import (
    AiDatabase,
    CoreDatabase,
    MigrationSettings,
    PostgresDatabase,
    SourceDatabase,
    SourceSnapshot,
    target_database,
)
from dual_db.defs.state import PartitionCopyRecord, SnapshotRecord, TableCopyRecord, human_bytes
from dual_db.preflight import check_replica_role_privilege
from dual_db.routing import RoutingPlan
from dual_db.schema.ownership import owned_tables_guard
from dual_db.verify.outcome import CheckOutcome
from dual_db.verify.parity import partitioned_parity, table_parity

TABLE_METADATA_KEY = "dual_db/table"
# How often, at most, the copy's progress reaches the run log while tables stream.
PROGRESS_SECONDS = 5.0


def table_specs(target: str, tables: Sequence[TableName]) -> dict[dg.AssetKey, TableName]:
    return {table_key(target, t): t for t in tables}


def _materialize_result(
    asset_key: dg.AssetKey,
    result: TableCopyResult,
    checks: dict[str, CheckOutcome],
    snapshot: SnapshotRecord,
) -> dg.MaterializeResult:
    assert result.source_fingerprint is not None and result.target_fingerprint is not None
    record = TableCopyRecord(
        table=result.table,
        rows=result.rows,
        bytes=result.bytes,
        seconds=result.seconds,
        snapshot=snapshot,
        source=result.source_fingerprint,
        target_checksum=result.target_fingerprint.checksum,
        copy_format=result.copy_format,
        empty_method=result.empty_method,
        replaced_rows=result.replaced_rows,
        sequences={s.sequence: (s.last_value, s.is_called) for s in result.sequences},
        source_fingerprint_seconds=result.source_fingerprint_seconds,
        copy_seconds=result.copy_seconds,
        target_fingerprint_seconds=result.target_fingerprint_seconds,
        size_bytes=result.size_bytes,
        partitions=tuple(
            PartitionCopyRecord(
                p.table, p.rows, p.source_fingerprint, p.target_fingerprint.checksum, p.copy_seconds
            )
            for p in result.partitions
            if p.source_fingerprint is not None and p.target_fingerprint is not None
        )
        if isinstance(result, PartitionedCopyResult)
        else (),
    )
    return dg.MaterializeResult(
        asset_key=asset_key,
        metadata={
            TABLE_METADATA_KEY: result.table.qualified,
            **record.to_metadata(result.columns),
            # A re-run loads without the table's secondary indexes and builds them after (engine.py).
            "rebuilt_indexes": dg.MetadataValue.json(result.rebuilt_indexes),
            "index_seconds": round(result.index_seconds, 3),
        },
        check_results=[
            to_check_result(outcome, asset_key=asset_key, check_name=name) for name, outcome in checks.items()
        ],
    )


Copied = TableCopyResult | CopyProgress | CopyRun


# The longest a table's error may be in the first line of a failed copy's description.
FIRST_ERROR_CHARS = 300
# How many other failed tables the first line names.
OTHERS_NAMED = 8


def copy_failure_description(target: str, failed: Mapping[TableName, object], total: int) -> str:
    """One line that says what failed (the first table's error, the others by name), then every
    table's error on a line of its own. A stopped server fails every table with a long libpq message
    each: joined on one line they made a line of thousands of characters."""
    ordered = sorted(failed.items())
    first_table, first_error = ordered[0]
    error = " ".join(str(first_error).split())
    if len(error) > FIRST_ERROR_CHARS:
        error = error[: FIRST_ERROR_CHARS - 1] + "…"
    others = [str(t) for t, _ in ordered[1:]]
    named = ", ".join(others[:OTHERS_NAMED]) + (
        f" and {len(others) - OTHERS_NAMED} more" if len(others) > OTHERS_NAMED else ""
    )
    line = f"{len(failed)} of {total} table(s) failed to copy to {target}: {first_table}: {error}"
    if others:
        line += f"; also {named}"
    line += ". A failed table keeps its previous contents: re-materialize it or re-run migrate."
    return "\n".join([line, *(f"{t}: {e}" for t, e in ordered)])


def _run_copy_in_background(**kwargs: Any) -> Iterator[Copied]:
    """Yield each table's result as it lands, the engine's progress reports, then the whole run (so the
    UI shows progress). Everything reaches the step's own thread, which alone logs and yields."""
    results: queue.Queue[Copied | BaseException] = queue.Queue()

    def run() -> None:
        try:
            results.put(copy_tables(on_result=results.put, on_progress=results.put, **kwargs))
        except BaseException as exc:
            results.put(exc)

    thread = threading.Thread(target=run, name="dual-db-copy-run", daemon=True)
    thread.start()
    while True:
        item = results.get()
        if isinstance(item, BaseException):
            raise item
        yield item
        if isinstance(item, CopyRun):
            break
    thread.join()


def progress_line(target: str, progress: CopyProgress, done_size: int, total_size: int) -> str | None:
    """One run-log line: how far the copy into `target` is (tables done of the total, the share of the
    source's on-disk size done, bytes streamed) and what just landed or is still streaming. None for a
    failed table: the step reports failures itself, once, at the end."""
    if progress.failed is not None:
        return None
    share = f" ({100 * done_size // total_size}% of {human_bytes(total_size)})" if total_size else ""
    head = (
        f"{target}: {progress.tables_done}/{progress.tables_total} tables copied{share}, "
        f"{human_bytes(progress.bytes_streamed)} streamed"
    )
    landed = progress.landed
    if landed is None:
        streaming = ", ".join(t.display for t in progress.in_flight[:3])
        more = f" and {len(progress.in_flight) - 3} more" if len(progress.in_flight) > 3 else ""
        return f"{head}; streaming {streaming}{more}" if streaming else head
    fingerprints = landed.source_fingerprint_seconds + landed.target_fingerprint_seconds
    rows = f"{landed.rows:,} row{'' if landed.rows == 1 else 's'}"
    n = len(landed.rebuilt_indexes)
    rebuilt = f"; {n} index{'' if n == 1 else 'es'} rebuilt in {landed.index_seconds:.1f}s" if n else ""
    return (
        f"{head}; {landed.table.display}: {rows}, {human_bytes(landed.size_bytes)} in "
        f"{landed.seconds:.1f}s (COPY {landed.copy_seconds:.1f}s, {landed.rows_per_second:,.0f} rows/s; "
        f"fingerprints {fingerprints:.1f}s{rebuilt})"
    )


def build_table_assets(
    target: str, tables: Sequence[TableName], plan: RoutingPlan | None = None
) -> dg.AssetsDefinition | None:
    """The `<target>/<table>` assets for `tables`, or None when the plan routes no table there.

    Each is labelled from the plan alone (no database is read when definitions load): tags `target`,
    `class`, `has_vectors` and `soft_reference` (RoutingPlan.table_tags), the plan's owners of the
    target, the table's name as Dagster's `dagster/table_name`; row count, size and column schema come
    with each materialization."""
    if not tables:
        return None
    plan = plan or RoutingPlan(**{target: list(tables)})  # type: ignore[arg-type]
    by_key = table_specs(target, tables)
    specs = [
        dg.AssetSpec(
            key=key,
            deps=[SCHEMA_ASSETS[target]],
            skippable=True,
            group_name=target,
            kinds={"postgres", "pgvector"}
            if plan.table_tags(table).get("has_vectors") == "true"
            else {"postgres"},
            description=f"Table {table.qualified} in the {target} database, copied from the source.",
            metadata={TABLE_METADATA_KEY: table.qualified, "dagster/table_name": table.qualified},
            tags=plan.table_tags(table),
            owners=plan.owners.get(target, []),
        )
        for key, table in by_key.items()
    ]
    check_specs = [
        spec
        for key in by_key
        for spec in (
            dg.AssetCheckSpec(
                COUNT_PARITY,
                asset=key,
                blocking=True,
                description="Target rows equal the source's rows at the copy's snapshot.",
            ),
            dg.AssetCheckSpec(
                CHECKSUM_PARITY,
                asset=key,
                blocking=True,
                description="Target content fingerprint equals the source's at the copy's snapshot.",
            ),
        )
    ]

    @dg.multi_asset(
        name=f"{target}_tables",
        specs=specs,
        check_specs=check_specs,
        can_subset=True,
        pool=SOURCE_POOL,
    )
    def copy_target_tables(
        context: dg.AssetExecutionContext,
        source: SourceDatabase,
        core: CoreDatabase,
        ai: AiDatabase,
        snapshot: SourceSnapshot,
        settings: MigrationSettings,
    ) -> Iterator[Any]:
        target_db = target_database(target, core, ai)
        selected = [key for key in by_key if key in context.selected_asset_keys]
        if selected:
            try:
                with clear_failure(context):
                    exported = snapshot.get()
                context.log.info(
                    f"copying {len(selected)} table(s) to {target} at {target_db.masked_url} "
                    f"from snapshot {exported.snapshot_id}"
                )
                key_of = {by_key[key]: key for key in selected}
                # A partitioned table is copied leaf by leaf: each leaf is a COPY of its own.
                with clear_failure(context), source.get_connection() as conn:
                    units = copy_units(conn, list(key_of))
                    parent_columns = {t: table_columns(conn, t) for t in units.leaves}
                sizes = units.sizes
                # Only into tables dual-db created there, never after a cutover, and only where the load
                # may skip triggers and foreign keys: refused before anything is written.
                with clear_failure(context), target_db.get_connection(autocommit=True) as conn:
                    loaded = [*key_of, *(u for u in units.units if u not in key_of)]
                    owned_tables_guard(conn, target, target_db.database_url(), loaded)
                    check_replica_role_privilege(conn, target, target_db.database_url(), units.units)
                landed: dict[TableName, list[TableCopyResult]] = {t: [] for t in units.leaves}
                combine_errors: dict[TableName, BaseException] = {}

                def partitioned_result(table: TableName) -> dg.MaterializeResult | None:
                    """The partitioned table's result once all its leaves landed (None on a failure)."""
                    try:
                        combined = combine_partitions(
                            table,
                            landed[table],
                            parent_columns[table],
                            source_url=source.database_url(),
                            target_url=target_db.database_url(),
                            snapshot_id=exported.snapshot_id,
                        )
                    except Exception as exc:
                        combine_errors[table] = exc
                        return None
                    assert combined.source_fingerprint is not None
                    checks = partitioned_parity(
                        table,
                        _parity(combined, source, target_db, exported.snapshot_id),
                        {
                            leaf.table: _parity(leaf, source, target_db, exported.snapshot_id)
                            for leaf in combined.partitions
                        },
                    )
                    return _materialize_result(key_of[table], combined, checks, SnapshotRecord.of(exported))

                for table in [t for t, leaves in units.leaves.items() if not leaves]:
                    # A partitioned table without partitions holds no rows: nothing streams for it.
                    if (done := partitioned_result(table)) is not None:
                        yield done
                run: CopyRun | None = None
                total_size = sum(sizes.get(t, 0) for t in key_of)
                done_size, logged_step, logged_at = 0, -1, time.monotonic()
                for item in _run_copy_in_background(
                    source_url=source.database_url(),
                    target_url=target_db.database_url(),
                    tables=units.units,
                    snapshot_id=exported.snapshot_id,
                    workers=settings.copy_workers,
                    sizes=sizes,
                    target_name=target,
                    progress_every=PROGRESS_SECONDS,
                    max_index_memory=settings.max_index_memory,
                    # An interrupted run cancels the load on the servers (the executor's main thread).
                    cancellation=run_cancellation(context.run.run_id),
                ):
                    if isinstance(item, CopyRun):
                        run = item
                        continue
                    if isinstance(item, CopyProgress):
                        # A line when a table lands past another tenth of the size, or after
                        # PROGRESS_SECONDS of silence, and for the last table: not one per table of 40.
                        if item.landed is not None:
                            done_size += sizes.get(item.landed.table, 0)
                        step = 10 * done_size // total_size if total_size else item.tables_done
                        due = time.monotonic() - logged_at >= PROGRESS_SECONDS
                        last = item.tables_done == item.tables_total
                        if (item.landed is not None and (step > logged_step or last)) or due:
                            line = progress_line(target, item, done_size, total_size)
                            if line:
                                context.log.info(line)
                                logged_step, logged_at = step, time.monotonic()
                        continue
                    assert item.source_fingerprint is not None
                    owner = units.table_of(item.table)
                    if owner != item.table:
                        landed[owner].append(item)
                        if len(landed[owner]) == len(units.leaves[owner]):
                            if (done := partitioned_result(owner)) is not None:
                                yield done
                        continue
                    checks = _parity(item, source, target_db, exported.snapshot_id)
                    yield _materialize_result(key_of[item.table], item, checks, SnapshotRecord.of(exported))
                assert run is not None
                for warning in run.warnings:
                    context.log.warning(warning)
                # Every selected table is copied or failed: a table in neither would be recorded as
                # materialized by nothing and silently skipped downstream.
                unaccounted = set(units.units) - {r.table for r in run.results} - set(run.errors)
                failed = _by_routed_table(
                    units,
                    {**run.errors, **{t: "not copied (no worker reported it)" for t in unaccounted}},
                )
                failed.update({t: e for t, e in combine_errors.items() if t not in failed})
                if failed:
                    raise dg.Failure(
                        description=copy_failure_description(target, failed, len(key_of)),
                        metadata={"failed_tables": [str(t) for t in sorted(failed)]},
                    )
                context.log.info(f"copied {len(run.results)} table(s) to {target} in {run.seconds:.1f}s")
            finally:
                # The last table read: the source's snapshot is not held through indexes and checks.
                snapshot.release_after(context, SNAPSHOT_READER_STEPS)
        else:
            snapshot.release_after(context, SNAPSHOT_READER_STEPS)

        # Checks selected without their asset: re-check the target now against the recorded source.
        check_only = [
            key
            for key in context.selected_asset_check_keys
            if key.asset_key in by_key and key.asset_key not in context.selected_asset_keys
        ]
        recorded = TableCopyRecord.latest_many(
            context.instance,
            {
                asset_key: by_key[asset_key]
                for asset_key in sorted({k.asset_key for k in check_only}, key=lambda k: k.to_user_string())
            },
        )
        # Fingerprinting is the cost: several tables at once, each yielded as it is done.
        with ThreadPoolExecutor(
            max_workers=max(1, settings.copy_workers), thread_name_prefix="dual-db-verify"
        ) as pool:
            futures = {
                pool.submit(
                    _recheck_table, asset_key, by_key[asset_key], record, source, target_db
                ): asset_key
                for asset_key, record in recorded.items()
            }
            for future in as_completed(futures):
                asset_key = futures[future]
                names = {k.name for k in check_only if k.asset_key == asset_key}
                for name, outcome in future.result().items():
                    if name in names:
                        yield to_check_result(outcome, asset_key=asset_key, check_name=name)

    return copy_target_tables


def _parity(
    result: TableCopyResult, source: SourceDatabase, target_db: PostgresDatabase, snapshot_id: str | None
) -> dict[str, CheckOutcome]:
    """count_parity and checksum_parity of a table (or leaf partition) the copy just fingerprinted."""
    assert result.source_fingerprint is not None
    return table_parity(
        result.source_fingerprint,
        result.table,
        result.columns,
        source_url=source.database_url(),
        target_url=target_db.database_url(),
        snapshot_id=snapshot_id,
        actual=result.target_fingerprint,
    )


def _by_routed_table(units: CopyUnits, failed: Mapping[TableName, object]) -> dict[TableName, object]:
    """Failures by the routed table: a failed leaf fails its partitioned table, naming the leaf."""
    result: dict[TableName, object] = {}
    for unit, error in sorted(failed.items()):
        owner = units.table_of(unit)
        if owner not in result:
            result[owner] = error if owner == unit else f"partition {unit}: {error}"
    return result


def _recheck_table(
    asset_key: dg.AssetKey,
    table: TableName,
    record: TableCopyRecord | None,
    source: SourceDatabase,
    target_db: PostgresDatabase,
) -> dict[str, CheckOutcome]:
    """count_parity and checksum_parity of the target now against the source fingerprint recorded at
    the copy's snapshot (the snapshot itself is gone: a difference is located against the source now)."""
    if record is None:
        never = f"{table} has never been copied: materialize {asset_key.to_user_string()}"
        return {name: CheckOutcome(False, never, [never]) for name in (COUNT_PARITY, CHECKSUM_PARITY)}
    with source.get_connection() as source_conn:
        columns = {t: table_columns(source_conn, t) for t in [table, *(p.table for p in record.partitions)]}

    def recheck(t: TableName, expected: Fingerprint) -> dict[str, CheckOutcome]:
        return table_parity(
            expected,
            t,
            columns[t],
            source_url=source.database_url(),
            target_url=target_db.database_url(),
            snapshot_id=None,
        )

    whole = recheck(table, record.source)
    if not record.partitions:
        return whole
    # A partitioned table: as a whole, and each leaf against its own fingerprint at the snapshot.
    return partitioned_parity(table, whole, {p.table: recheck(p.table, p.source) for p in record.partitions})
