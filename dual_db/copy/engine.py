"""The copy engine: source → target, table by table, streamed, inside one exported snapshot.

Each table is one COPY TO STDOUT on the source piped into one COPY FROM STDIN on the target, block by
block, with no intermediate file. Binary format where it is portable between the two servers (it
skips text formatting and parsing on both sides); text format where binary would carry
server-specific type OIDs (arrays of enums, composites) or where column types differ.

Each table is replaced atomically: emptying it and loading it happen in one target transaction, so a
re-run or a single-table re-materialization replaces rows, never duplicates them, and a failure
leaves the previous contents. Emptying never cascades into other tables. A table reloaded with
secondary indexes in place (a re-run) loads without them: they are dropped in that transaction and
built again over the loaded rows before it commits (indexes.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from dual_db.copy.indexes import drop_secondary_indexes, rebuild_indexes
from dual_db.db.cancel import Cancellation, Interrupted, stop_when_client_is_gone
from dual_db.db.catalog import (
    ColumnInfo,
    has_triggers_or_foreign_keys,
    list_sequences,
    referenced_by_other_tables,
    regclass_literal,
    table_columns,
)
from dual_db.db.connect import connect
from dual_db.db.fingerprint import Fingerprint, table_fingerprint, vector_extension_schema
from dual_db.db.names import TableName
from dual_db.db.snapshot import SnapshotLost, close_snapshot_session, snapshot_session_connection
from dual_db.db.urls import DatabaseUrl


class CopyError(RuntimeError):
    """A table could not be copied. Names the table; never a password."""


@dataclass(frozen=True)
class SequenceValue:
    sequence: TableName
    last_value: int
    is_called: bool


@dataclass
class TableCopyResult:
    table: TableName
    rows: int
    bytes: int
    seconds: float
    snapshot_id: str | None
    copy_format: str  # 'binary' | 'text'
    empty_method: str  # 'truncate' | 'delete'
    replaced_rows: int  # rows the target held before (a re-run replaces them)
    source_fingerprint: Fingerprint | None
    target_fingerprint: Fingerprint | None = None
    columns: list[ColumnInfo] = field(default_factory=list)
    sequences: list[SequenceValue] = field(default_factory=list)
    # Where `seconds` went: fingerprinting the source at the snapshot, the COPY stream (emptying,
    # loading, committing), fingerprinting what the target committed.
    source_fingerprint_seconds: float = 0.0
    copy_seconds: float = 0.0
    target_fingerprint_seconds: float = 0.0
    # The source was fingerprinted on a second session while the COPY streamed (not before it).
    fingerprint_beside_copy: bool = False
    # The target table's size right after the load (pg_table_size: heap and TOAST, no indexes).
    size_bytes: int = 0
    # Secondary indexes dropped before the load and built again after it (a re-run), and the seconds
    # their builds took (part of copy_seconds).
    rebuilt_indexes: list[str] = field(default_factory=list)
    index_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        """Rows per second of the COPY stream itself (fingerprints and index rebuilds excluded)."""
        seconds = (self.copy_seconds - self.index_seconds) or self.seconds
        return self.rows / seconds if seconds > 0 else float(self.rows)


# Bytes of COPY data gathered from the source's rows before one write to the target.
COPY_BATCH_BYTES = 128 * 1024
# From this size on, a table's source fingerprint runs on a second session in the same snapshot while
# the COPY streams, instead of before it: the largest table (the vector table) is the start of the
# longest chain of a run (its copy, then its HNSW build), and its fingerprint was a third of its copy.
PARALLEL_FINGERPRINT_BYTES = 32 * 1024 * 1024


def _column_list(columns: Sequence[ColumnInfo]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)


def choose_format(source_columns: Sequence[ColumnInfo], target_columns: Sequence[ColumnInfo]) -> str:
    """'binary' when every copied column is binary-portable and typed identically on both sides."""
    target_types = {c.name: c.type_sql for c in target_columns}
    for column in source_columns:
        if not column.binary_portable or target_types.get(column.name) != column.type_sql:
            return "text"
    return "binary"


def copy_table(
    source: psycopg.Connection,
    target: psycopg.Connection,
    table: TableName,
    *,
    snapshot_id: str | None,
    fingerprint: bool = True,
    block_callback: Callable[[int], None] | None = None,
    fingerprint_session: psycopg.Connection | None = None,
    max_index_memory: str = "1GB",
) -> TableCopyResult:
    """Copy one table. `source` must already be inside the snapshot transaction (`snapshot_session`).

    `target` must be in autocommit mode, so that the load is its own transaction and commits on success.
    With `fingerprint_session` (another session in the same snapshot), the source is fingerprinted
    there while the COPY streams; without it, on `source` before the COPY. Secondary indexes the
    target table has are rebuilt after the load, a vector index with up to `max_index_memory`.
    """
    if not target.autocommit:
        raise ValueError("copy_table needs an autocommit target connection")
    started = time.monotonic()
    columns = table_columns(source, table)
    copied = [c for c in columns if not c.generated]
    try:
        target_columns = table_columns(target, table)
    except psycopg.errors.UndefinedTable:
        target.rollback()
        raise CopyError(f"table {table} does not exist in the target: apply the schema first") from None
    missing = sorted({c.name for c in copied} - {c.name for c in target_columns})
    if missing:
        raise CopyError(f"table {table}: target lacks column(s) {', '.join(missing)}")

    def fingerprint_source(session: psycopg.Connection) -> tuple[Fingerprint, float]:
        phase = time.monotonic()
        found = table_fingerprint(session, table, columns, vector_schema=vector_extension_schema(session))
        return found, time.monotonic() - phase

    source_fingerprint: Fingerprint | None = None
    source_fingerprint_seconds = 0.0
    beside = fingerprint and fingerprint_session is not None
    if beside:
        assert fingerprint_session is not None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dual-db-fingerprint") as side:
            pending = side.submit(fingerprint_source, fingerprint_session)
            load = _load(source, target, table, copied, target_columns, block_callback, max_index_memory)
        source_fingerprint, source_fingerprint_seconds = pending.result()
    else:
        if fingerprint:
            source_fingerprint, source_fingerprint_seconds = fingerprint_source(source)
        load = _load(source, target, table, copied, target_columns, block_callback, max_index_memory)
    size_row = target.execute("SELECT pg_table_size(%s::regclass)", (regclass_literal(table),)).fetchone()

    target_fingerprint: Fingerprint | None = None
    phase = time.monotonic()
    if fingerprint:
        # Read back what the target committed, hashed over the source's column list: this is what
        # count_parity and checksum_parity compare with the source's fingerprint at the snapshot.
        target_fingerprint = table_fingerprint(
            target, table, columns, vector_schema=vector_extension_schema(target)
        )
    target_fingerprint_seconds = time.monotonic() - phase
    return TableCopyResult(
        table=table,
        rows=load.rows,
        bytes=load.bytes,
        seconds=time.monotonic() - started,
        snapshot_id=snapshot_id,
        copy_format=load.copy_format,
        empty_method=load.empty_method,
        replaced_rows=load.replaced_rows,
        source_fingerprint=source_fingerprint,
        target_fingerprint=target_fingerprint,
        columns=columns,
        sequences=load.sequences,
        source_fingerprint_seconds=source_fingerprint_seconds,
        copy_seconds=load.seconds,
        target_fingerprint_seconds=target_fingerprint_seconds,
        size_bytes=int(size_row[0]) if size_row and size_row[0] is not None else 0,
        fingerprint_beside_copy=beside,
        rebuilt_indexes=load.rebuilt_indexes,
        index_seconds=load.index_seconds,
    )


@dataclass(frozen=True)
class _Load:
    """What streaming one table did (`_load`)."""

    seconds: float
    rows: int
    bytes: int
    empty_method: str
    replaced_rows: int
    copy_format: str
    sequences: list[SequenceValue]
    rebuilt_indexes: list[str]
    index_seconds: float


def _load(
    source: psycopg.Connection,
    target: psycopg.Connection,
    table: TableName,
    copied: Sequence[ColumnInfo],
    target_columns: Sequence[ColumnInfo],
    block_callback: Callable[[int], None] | None,
    max_index_memory: str,
) -> _Load:
    """Empty `table` on the target and stream the source's rows into it, in one target transaction,
    its secondary indexes dropped before and built again after."""
    copy_format = choose_format(copied, target_columns)
    options = sql.SQL("(FORMAT binary)") if copy_format == "binary" else sql.SQL("(FORMAT text)")
    nbytes = 0
    phase = time.monotonic()
    with target.transaction():
        # Loading must neither fire user triggers (an updated_at trigger would rewrite values) nor
        # check or cascade foreign keys (other tables keep their rows untouched). That is what
        # `session_replication_role = replica` does, and SET LOCAL confines it to this transaction
        # on this session: the plan's separate `psql -c "SET ..."` affected nothing.
        if has_triggers_or_foreign_keys(target, table):
            target.execute("SET LOCAL session_replication_role = replica")
        count_row = target.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()
        replaced_rows = int(count_row[0]) if count_row else 0
        # Rows loaded into a built HNSW index go into its graph one search at a time (254 s against
        # 1.1 s for 40k x vector(256)): the indexes are built once over the loaded rows instead.
        set_aside = drop_secondary_indexes(target, table)
        if referenced_by_other_tables(target, table):
            # TRUNCATE refuses while other tables' foreign keys point here, and CASCADE would empty
            # them: delete instead (replica role keeps ON DELETE CASCADE from firing).
            target.execute(sql.SQL("DELETE FROM {}").format(table.ident))
            empty_method, freeze = "delete", False
        else:
            target.execute(sql.SQL("TRUNCATE {}").format(table.ident))
            # Truncated in this transaction: FREEZE writes rows already frozen (no later rewrite for
            # hint bits or anti-wraparound vacuum).
            empty_method, freeze = "truncate", True
        load_options = options
        if freeze:
            load_options = sql.SQL("(FORMAT {}, FREEZE)").format(sql.SQL(copy_format))
        copy_out = sql.SQL("COPY {} ({}) TO STDOUT {}").format(table.ident, _column_list(copied), options)
        copy_in = sql.SQL("COPY {} ({}) FROM STDIN {}").format(
            table.ident, _column_list(copied), load_options
        )
        with source.cursor() as out_cur, target.cursor() as in_cur:
            with out_cur.copy(copy_out) as reader, in_cur.copy(copy_in) as writer:
                # COPY TO hands over one row per read. Written row by row, 1M rows (97 MB) cost this
                # process 2.8 s of CPU, more than the whole psql-to-psql COPY took (1.8 s); written
                # in blocks of COPY_BATCH_BYTES, 1.2 s.
                pending = bytearray()

                def flush() -> None:
                    nonlocal nbytes, pending
                    writer.write(pending)
                    nbytes += len(pending)
                    if block_callback is not None:
                        block_callback(len(pending))
                    pending = bytearray()

                for row in reader:
                    pending += row
                    if len(pending) >= COPY_BATCH_BYTES:
                        flush()
                if pending:
                    flush()
            rows = in_cur.rowcount
        index_seconds = 0.0
        if set_aside:
            index_phase = time.monotonic()
            rebuild_indexes(target, set_aside, max_index_memory=max_index_memory)
            index_seconds = time.monotonic() - index_phase
        sequences = _align_owned_sequences(source, target, table)
    return _Load(
        time.monotonic() - phase,
        rows,
        nbytes,
        empty_method,
        replaced_rows,
        copy_format,
        sequences,
        [index.name for index in set_aside],
        index_seconds,
    )


def _align_owned_sequences(
    source: psycopg.Connection, target: psycopg.Connection, table: TableName
) -> list[SequenceValue]:
    """Set the target's sequences owned by `table` (serial, identity) to the source's values."""
    owned = [s for s in list_sequences(source, owned_by=table) if s.last_value is not None]
    return set_sequences(target, [SequenceValue(s.sequence, s.last_value, s.is_called) for s in owned])  # type: ignore[arg-type]


def set_sequences(target: psycopg.Connection, values: Sequence[SequenceValue]) -> list[SequenceValue]:
    """setval each sequence that exists on the target; returns those set."""
    done = []
    for value in values:
        exists = target.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind = 'S'",
            (value.sequence.schema, value.sequence.name),
        ).fetchone()
        if not exists:
            continue
        target.execute(
            "SELECT setval(%s::regclass, %s, %s)",
            (regclass_literal(value.sequence), value.last_value, value.is_called),
        )
        done.append(value)
    return done


def align_all_sequences(source: psycopg.Connection, target: psycopg.Connection) -> list[SequenceValue]:
    """Every sequence present on both sides ends at the source's value (standalone ones too)."""
    values = [
        SequenceValue(s.sequence, s.last_value, s.is_called)
        for s in list_sequences(source)
        if s.last_value is not None
    ]
    with target.transaction():
        return set_sequences(target, values)


@dataclass(frozen=True)
class CopyProgress:
    """Where a copy run stands: reported when a table lands (`landed`) and, while tables stream,
    every `progress_every` seconds (`landed` None)."""

    tables_done: int
    tables_total: int
    bytes_streamed: int  # COPY bytes sent so far, tables in flight included
    in_flight: tuple[TableName, ...]
    landed: TableCopyResult | None = None
    failed: TableName | None = None


@dataclass
class CopyRun:
    results: list[TableCopyResult]
    errors: dict[TableName, BaseException]
    seconds: float
    # Workers that could not connect (their tables went to the others): worth telling the user.
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def copy_tables(
    source_url: DatabaseUrl,
    target_url: DatabaseUrl,
    tables: Sequence[TableName],
    *,
    snapshot_id: str | None,
    workers: int = 4,
    fingerprint: bool = True,
    sizes: dict[TableName, int] | None = None,
    on_result: Callable[[TableCopyResult], None] | None = None,
    stop_on_error: bool = False,
    target_name: str = "target",
    on_progress: Callable[[CopyProgress], None] | None = None,
    progress_every: float = 5.0,
    parallel_fingerprint_bytes: int = PARALLEL_FINGERPRINT_BYTES,
    max_index_memory: str = "1GB",
    cancellation: Cancellation | None = None,
) -> CopyRun:
    """Copy `tables` with `workers` parallel streams, largest first (the longest table starts first, so
    the run is not left waiting on one big table at the end).

    Every worker joins the same exported snapshot, so all tables are read as of one moment. Every table
    ends in exactly one of `results` or `errors`: a worker takes a table only once its connections are
    open, a worker that cannot connect leaves the queue to the others, and when no worker can connect
    the remaining tables fail with the connection error. With `stop_on_error` no new table starts
    after the first failure. `on_progress` hears each table land or fail, and every `progress_every`
    seconds while rows stream (called from the worker threads). Tables of `parallel_fingerprint_bytes`
    or more (by `sizes`) are fingerprinted on the source beside their COPY, on a second session.
    A table reloaded with secondary indexes rebuilds them, a vector index with up to `max_index_memory`.
    Once `cancellation` is cancelled (the run was interrupted), what streams or builds is cancelled on
    the servers and rolled back, and no other table starts.
    """
    cancellation = cancellation or Cancellation()
    started = time.monotonic()
    order = sorted(tables, key=lambda t: (-(sizes or {}).get(t, 0), t))
    results: list[TableCopyResult] = []
    errors: dict[TableName, BaseException] = {}
    warnings: list[str] = []
    lock = threading.Lock()
    queue = list(order)
    stop = threading.Event()
    n_workers = max(1, min(workers, len(order)))
    alive = [n_workers]
    streamed = [0]
    in_flight: list[TableName] = []
    last_report = [time.monotonic()]

    def progress(landed: TableCopyResult | None = None, failed: TableName | None = None) -> None:
        """Tell `on_progress` where the run stands (the caller holds `lock`)."""
        if on_progress is None:
            return
        last_report[0] = time.monotonic()
        on_progress(
            CopyProgress(
                tables_done=len(results),
                tables_total=len(order),
                bytes_streamed=streamed[0],
                in_flight=tuple(in_flight),
                landed=landed,
                failed=failed,
            )
        )

    def on_block(n: int) -> None:
        with lock:
            streamed[0] += n
            if on_progress is not None and time.monotonic() - last_report[0] >= progress_every:
                progress()

    def next_table() -> TableName | None:
        with lock:
            if stop.is_set() or not queue or cancellation.reason is not None:
                return None
            return queue.pop(0)

    def give_up(exc: BaseException) -> None:
        """This worker cannot connect: the others take its share; the last one fails what is left."""
        with lock:
            alive[0] -= 1
            warnings.append(f"a copy worker could not connect and left its tables to the others: {exc}")
            if alive[0] == 0:
                for table in queue:
                    errors[table] = CopyError(f"table {table} was not copied: {exc}")
                queue.clear()

    def worker() -> None:
        while True:
            with lock:
                if stop.is_set() or not queue:
                    return
            # One source session per streak of tables: a failed COPY aborts the snapshot transaction,
            # so after a failure the worker joins the snapshot again with a fresh session. Sessions
            # open before a table is taken, so a failed connection never strands a table.
            try:
                src_conn = snapshot_session_connection(source_url, snapshot_id)
            except SnapshotLost as exc:
                # No worker can join it any more: every table still queued fails with that reason.
                with lock:
                    for table in queue:
                        errors[table] = CopyError(f"table {table} was not copied: {exc}")
                    queue.clear()
                return
            except Exception as exc:
                give_up(exc)
                return
            try:
                try:
                    tgt_conn = connect(target_url, autocommit=True, application_name="dual-db copy")
                except Exception as exc:
                    give_up(exc)
                    return
                # The streak's second source session, for large tables' fingerprints (opened lazily).
                held: list[psycopg.Connection] = []
                try:
                    # A re-run's index rebuild runs here too: it stops if this process is killed.
                    stop_when_client_is_gone(tgt_conn)
                    with cancellation.session(src_conn), cancellation.session(tgt_conn):
                        _copy_streak(src_conn, tgt_conn, held)
                finally:
                    tgt_conn.close()
                    for session in held:
                        close_snapshot_session(session)
            finally:
                close_snapshot_session(src_conn)

    def fingerprint_session_for(
        table: TableName, held: list[psycopg.Connection]
    ) -> psycopg.Connection | None:
        """A second session in the snapshot for a large table's source fingerprint (opened once per
        streak, kept in `held`); None for small tables, without a snapshot, or when it cannot open."""
        if not fingerprint or snapshot_id is None or (sizes or {}).get(table, 0) < parallel_fingerprint_bytes:
            return None
        if not held:
            try:
                held.append(
                    snapshot_session_connection(
                        source_url, snapshot_id, application_name="dual-db fingerprint"
                    )
                )
            except Exception as exc:
                with lock:
                    warnings.append(
                        f"{table}: no second source session for its fingerprint ({exc}); "
                        "fingerprinted before its copy instead"
                    )
                return None
        return held[0]

    def _copy_streak(
        src_conn: psycopg.Connection, tgt_conn: psycopg.Connection, held: list[psycopg.Connection]
    ) -> None:
        """Copy tables on these sessions until the queue is empty or a table fails."""
        table = next_table()
        while table is not None:
            with lock:
                in_flight.append(table)
            try:
                result = copy_table(
                    src_conn,
                    tgt_conn,
                    table,
                    snapshot_id=snapshot_id,
                    fingerprint=fingerprint,
                    block_callback=on_block,
                    fingerprint_session=fingerprint_session_for(table, held),
                    max_index_memory=max_index_memory,
                )
            except Exception as exc:
                with lock:
                    in_flight.remove(table)
                    errors[table] = (
                        Interrupted(
                            f"{cancellation.reason}: {table} was cancelled on the server, rolled back"
                        )
                        if cancellation.reason is not None
                        else _explain_failure(
                            table, exc, src_conn, tgt_conn, source_url, target_url, target_name
                        )
                    )
                    progress(failed=table)
                if stop_on_error:
                    stop.set()
                return
            with lock:
                in_flight.remove(table)
                results.append(result)
                progress(landed=result)
            if on_result is not None:
                on_result(result)
            table = next_table()

    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="dual-db-copy") as pool:
        futures: list[Future[None]] = [pool.submit(worker) for _ in range(n_workers)]
    crashed = [f.exception() for f in futures if f.exception() is not None]
    # Whatever is left (stop_on_error, or a worker that died unexpectedly) is failed, never dropped.
    done = {r.table for r in results} | set(errors)
    for table in order:
        if table not in done:
            cause = crashed[0] if crashed else None
            errors[table] = CopyError(
                f"table {table} was not copied: "
                + (str(cause) if cause else "an earlier failure stopped the run")
            )
    return CopyRun(results=results, errors=errors, seconds=time.monotonic() - started, warnings=warnings)


def _explain_failure(
    table: TableName,
    exc: Exception,
    source: psycopg.Connection,
    target: psycopg.Connection,
    source_url: DatabaseUrl,
    target_url: DatabaseUrl,
    target_name: str,
) -> Exception:
    """Say which server a lost connection was on: libpq's words are the same for both sides."""
    # libpq's first line is the reason; the rest ("This probably means...") is boilerplate.
    reason = (str(exc).strip().splitlines() or [""])[0]
    if target.broken:
        where = f"the {target_name} database {target_url.masked()} dropped the connection while loading it"
    elif source.broken:
        where = f"the source {source_url.masked()} dropped the connection while it was read"
    else:
        return exc
    return CopyError(f"{where} ({reason}); rolled back")
