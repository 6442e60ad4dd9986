"""Post-data: indexes, constraints and triggers, built after the rows are in.

Order and parallelism, as pg_restore -j does it, plus what pgvector needs:
1. indexes and primary/unique constraints, one table per worker connection, largest table first;
2. foreign keys (they need the referenced unique indexes; validating them proves no orphan rows);
3. vector indexes (HNSW, IVFFlat) last, one at a time, each with `maintenance_work_mem` sized to its
   graph and parallel maintenance workers: an HNSW graph that does not fit in memory builds several
   times slower;
4. everything else (triggers, comments on indexes, ...); then planner statistics: the source's,
   imported, where the servers allow it, else ANALYZE (statistics.py).

Statements that already exist (a re-run of this step) are skipped, so the step can be re-materialized.

Every session is registered with the run's `Cancellation` (db/cancel.py): an interrupted run cancels the
statement being built on the server (a cancelled CREATE INDEX leaves no index) and starts no other. A
session also asks its server to check every few seconds that dual-db is still connected, so a build
stops when the process was killed outright (`client_connection_check_interval`).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast
from pglast.enums import AlterTableType
from psycopg import sql

from dual_db.db.cancel import Cancellation, Interrupted, stop_when_client_is_gone
from dual_db.db.catalog import list_tables
from dual_db.db.connect import connect, connection
from dual_db.db.index_memory import build_memory_bytes, parallel_maintenance_workers, parse_memory
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.schema.split import POST_PARTS
from dual_db.schema.statements import Statement, is_session_setting, statements_of
from dual_db.schema.statistics import StatisticsOutcome, refresh_statistics

_COUNT_LOCK = threading.Lock()
# How often a long index build reports its progress.
PROGRESS_SECONDS = 5.0
_INDEX_PROGRESS_SQL = """
SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total
FROM pg_stat_progress_create_index WHERE pid = %s
"""
_ALREADY_THERE = (psycopg.errors.DuplicateTable, psycopg.errors.DuplicateObject)
# How soon an interrupt is acted upon while a vector index builds (the builder's thread waits this long).
CANCEL_POLL_SECONDS = 0.2


@dataclass
class VectorIndexBuild:
    name: str
    table: str
    seconds: float
    maintenance_work_mem: str
    parallel_workers: int


@dataclass
class PostDataReport:
    statements: int = 0
    skipped_existing: int = 0
    index_seconds: float = 0.0
    foreign_key_seconds: float = 0.0
    vector_indexes: list[VectorIndexBuild] = field(default_factory=list)
    other_seconds: float = 0.0
    statistics: StatisticsOutcome = field(default_factory=StatisticsOutcome)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the Dagster layer turns them into metadata)."""
        return {
            "statements": self.statements,
            "skipped_existing": self.skipped_existing,
            "index_seconds": round(self.index_seconds, 3),
            "foreign_key_seconds": round(self.foreign_key_seconds, 3),
            "other_seconds": round(self.other_seconds, 3),
            **self.statistics.to_dict(),
            "seconds": round(self.seconds, 3),
            "vector_indexes": [vars(v) for v in self.vector_indexes],
        }


def _relation_of(node: ast.Node) -> TableName | None:
    relation = getattr(node, "relation", None)
    if relation is None:
        return None
    return TableName(relation.schemaname or "public", relation.relname)


def _attaches_partition(node: ast.Node) -> bool:
    """ALTER INDEX parent ATTACH PARTITION child (pg_dump's way of building a partitioned index)."""
    return isinstance(node, ast.AlterTableStmt) and any(
        getattr(cmd, "subtype", None) == AlterTableType.AT_AttachPartition for cmd in node.cmds or ()
    )


def _execute(
    conn: psycopg.Connection,
    statement: Statement,
    report: PostDataReport,
    cancellation: Cancellation | None = None,
) -> None:
    if cancellation is not None:
        cancellation.check()
    try:
        with conn.transaction():
            conn.execute(statement.text)  # type: ignore[arg-type]  # a statement of a trusted dump
        ran = True
    except psycopg.errors.QueryCanceled as exc:
        if cancellation is None or cancellation.reason is None:
            raise
        name = getattr(statement.node, "idxname", None) or statement.text.strip().splitlines()[0][:80]
        raise Interrupted(f"{cancellation.reason}: {name} was cancelled on the server, rolled back") from exc
    except _ALREADY_THERE:
        ran = False
    except psycopg.errors.InvalidTableDefinition as exc:
        if "multiple primary keys" not in str(exc):
            raise
        ran = False
    with _COUNT_LOCK:  # workers share the report
        if ran:
            report.statements += 1
        else:
            report.skipped_existing += 1


def _session(url: DatabaseUrl, settings: Sequence[Statement], **extra: str) -> psycopg.Connection:
    conn = connect(url, autocommit=True, application_name="dual-db post-data")
    stop_when_client_is_gone(conn)
    for statement in settings:
        conn.execute(statement.text)  # type: ignore[arg-type]
    for key, value in extra.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(key), sql.Literal(value)))
    return conn


def _run_grouped(
    url: DatabaseUrl,
    groups: list[list[Statement]],
    settings: Sequence[Statement],
    workers: int,
    report: PostDataReport,
    cancellation: Cancellation,
) -> None:
    """Run each group's statements in order; groups in parallel, on `workers` connections that each
    take the next group (in the given order) until none is left."""
    pending = [group for group in groups if group]
    if not pending:
        return
    lock = threading.Lock()

    def next_group() -> list[Statement] | None:
        with lock:
            return pending.pop(0) if pending else None

    def run() -> None:
        conn = _session(url, settings)
        try:
            with cancellation.session(conn):
                while (group := next_group()) is not None:
                    for statement in group:
                        _execute(conn, statement, report, cancellation)
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pending)))) as pool:
        for future in [pool.submit(run) for _ in range(max(1, min(workers, len(pending))))]:
            future.result()


def index_progress_line(name: str, row: Sequence[Any] | None, seconds: float) -> str:
    """`building ix: building index: loading tuples, 11% (123 of 1,112 blocks, 3,300 tuples), 2s`: the
    phase and how far it is, in tuples when the server counts their total, else in table blocks."""
    if row is None:
        return f"building {name}: {seconds:.0f}s"
    phase, blocks_done, blocks_total, tuples_done, tuples_total = row
    if tuples_total:
        done = f", {100 * tuples_done // tuples_total}% ({tuples_done:,} of {tuples_total:,} tuples)"
    elif blocks_total:
        tuples = f", {tuples_done:,} tuples" if tuples_done else ""
        done = f", {100 * blocks_done // blocks_total}% ({blocks_done:,} of {blocks_total:,} blocks{tuples})"
    else:
        done = f", {tuples_done:,} tuples" if tuples_done else ""
    return f"building {name}: {phase}{done}, {seconds:.0f}s"


def _execute_with_progress(
    url: DatabaseUrl,
    conn: psycopg.Connection,
    statement: Statement,
    report: PostDataReport,
    name: str,
    log: Callable[[str], None],
    every: float,
    cancellation: Cancellation,
) -> None:
    """Run `statement` (a CREATE INDEX) on `conn` in a worker thread; meanwhile, every `every` seconds,
    read its progress from pg_stat_progress_create_index on another session and `log` it from here.
    Once the run is interrupted, the build is cancelled again at every poll until it has ended (a cancel
    sent just before the statement reached the server cancels nothing)."""
    pid = conn.info.backend_pid
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dual-db-index") as pool:
        future = pool.submit(_execute, conn, statement, report, cancellation)
        watcher: psycopg.Connection | None = None
        try:
            next_report = started + every
            while True:
                try:
                    future.result(timeout=max(0.0, min(CANCEL_POLL_SECONDS, next_report - time.monotonic())))
                    return
                except TimeoutError:
                    pass
                if cancellation.reason is not None:
                    cancellation.cancel(cancellation.reason)
                    continue
                if time.monotonic() < next_report:
                    continue
                next_report = time.monotonic() + every
                if watcher is None:
                    watcher = connect(url, autocommit=True, application_name="dual-db index progress")
                row = watcher.execute(_INDEX_PROGRESS_SQL, (pid,)).fetchone()
                log(index_progress_line(name, row, time.monotonic() - started))
        finally:
            if watcher is not None:
                watcher.close()


def _memory_setting(conn: psycopg.Connection, statement: Statement, max_bytes: int) -> int:
    node = statement.node
    assert isinstance(node, ast.IndexStmt)
    table = _relation_of(node)
    params = node.indexParams or ()
    column = getattr(params[0], "name", None) if params else None
    m = 16
    for option in node.options or ():
        if isinstance(option, ast.DefElem) and option.defname == "m":
            m = int(getattr(option.arg, "ival", m) or m)
    return build_memory_bytes(conn, table, column, m, max_bytes)


def build_post_data(
    url: DatabaseUrl,
    parts: Mapping[str, str],
    *,
    max_index_memory: str = "1GB",
    workers: int = 2,
    tables: Sequence[TableName] | None = None,
    statistics: str = "",
    log: Callable[[str], None] = lambda _msg: None,
    progress_every: float = PROGRESS_SECONDS,
    cancellation: Cancellation | None = None,
) -> PostDataReport:
    """Apply post-data `parts` (scripts keyed 'indexes', 'foreign_keys', 'vector_indexes',
    'triggers_and_other', as the schema split produces them) in that order, then give `tables` (default:
    every user table) planner statistics: the source's from `statistics` (pg_dump --statistics-only),
    else ANALYZE.

    A vector index build reports its phase and how far it is to `log` every `progress_every` seconds
    (from the calling thread). `cancellation` cancels what is being built when the run is interrupted
    (`Interrupted` is raised then)."""
    started = time.monotonic()
    cancellation = cancellation or Cancellation()
    report = PostDataReport()
    parsed = {name: statements_of(parts.get(name, "")) for name in POST_PARTS}
    # Each part carries pg_dump's SET lines; every session replays the first part's.
    settings = next(
        (
            [st for st in sts if is_session_setting(st)]
            for sts in parsed.values()
            if any(map(is_session_setting, sts))
        ),
        [],
    )
    body = {name: [st for st in sts if not is_session_setting(st)] for name, sts in parsed.items()}

    # 1. indexes and PK/unique constraints: one group per table, largest tables first.
    per_table: dict[TableName | None, list[Statement]] = defaultdict(list)
    attaching: list[Statement] = []
    for statement in body["indexes"]:
        if _attaches_partition(statement.node):
            attaching.append(statement)
            continue
        per_table[_relation_of(statement.node)].append(statement)
    with connection(url, autocommit=True) as conn:
        user_tables = list_tables(conn)
    sizes = {info.table: info.bytes for info in user_tables}
    groups = sorted(per_table.items(), key=lambda item: -sizes.get(item[0], 0) if item[0] else 0)
    phase = time.monotonic()
    _run_grouped(url, [g for _, g in groups], settings, workers, report, cancellation)
    # A partition's index is attached to its parent's only once both exist, and both are built by
    # other groups (side by side): attaching runs after them, which makes the parent's index valid.
    _run_grouped(url, [attaching], settings, 1, report, cancellation)
    report.index_seconds = time.monotonic() - phase
    log(f"indexes and keys: {len(body['indexes'])} statements in {report.index_seconds:.1f}s")

    # 2. foreign keys, one connection: two validations locking the same tables would only queue.
    phase = time.monotonic()
    _run_grouped(url, [body["foreign_keys"]], settings, 1, report, cancellation)
    report.foreign_key_seconds = time.monotonic() - phase

    # 3. vector indexes, one at a time with all the memory and workers we may use.
    max_bytes = parse_memory(max_index_memory)
    parallel = parallel_maintenance_workers()
    for statement in body["vector_indexes"]:
        conn = _session(url, settings, max_parallel_maintenance_workers=str(parallel))
        if not isinstance(statement.node, ast.IndexStmt):
            # What follows its vector index (ALTER INDEX ... ATTACH PARTITION of a partitioned one, a
            # comment): builds nothing, in dump order after the indexes it names.
            try:
                _execute(conn, statement, report)
            finally:
                conn.close()
            continue
        try:
            cancellation.check()
            memory = _memory_setting(conn, statement, max_bytes)
            conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{memory // 1024}kB")))
            phase = time.monotonic()
            node = statement.node
            assert isinstance(node, ast.IndexStmt)
            with cancellation.session(conn):
                _execute_with_progress(
                    url, conn, statement, report, node.idxname or "?", log, progress_every, cancellation
                )

            build = VectorIndexBuild(
                name=node.idxname or "?",
                table=str(_relation_of(node)),
                seconds=round(time.monotonic() - phase, 3),
                maintenance_work_mem=f"{memory // (1024 * 1024)}MB",
                parallel_workers=parallel,
            )
            report.vector_indexes.append(build)
            log(f"vector index {build.name}: {build.seconds:.1f}s with {build.maintenance_work_mem}")
        finally:
            conn.close()

    # 4. the rest (triggers, rules, policies...), in dump order.
    phase = time.monotonic()
    _run_grouped(url, [body["triggers_and_other"]], settings, 1, report, cancellation)
    report.other_seconds = time.monotonic() - phase

    if tables is None:
        tables = [info.table for info in user_tables]
    report.statistics = refresh_statistics(url, tables, statistics, workers=workers)
    outcome = report.statistics
    log(
        f"statistics: the source's for {len(outcome.imported)} table(s), ANALYZE for "
        f"{len(outcome.analyzed)}{f' ({outcome.reason})' if outcome.analyzed else ''} "
        f"in {outcome.seconds:.1f}s"
    )
    report.seconds = time.monotonic() - started
    return report
