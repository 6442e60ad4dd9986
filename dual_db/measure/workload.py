"""Performance probes: the batch workload, RAG latency and recall, and database health figures.

The same probes run on the old database before cutover (the baseline) and on the new pair during the
soak week, so that "30% faster" is a comparison of like with like. They connect the way the
application does, on asyncpg, with pgvector's codec for vectors. Every figure is a plain number.

- Batch: each statement of `sql/workload/batch.sql`, `runs` times, read-only; per statement and in
  total, the median and the spread (max - min) in milliseconds. A statement whose tables do not exist
  in this database is reported as skipped, not failed.
- RAG: `sql/workload/rag.sql` for a fixed, seeded set of query vectors through the HNSW index; p50 and
  p95 latency, and recall@10 against exact search (the same query with index scans disabled), with the
  session's `hnsw.ef_search` recorded.
- Database: size, cache hit ratio, the vector indexes' scan count.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
from pgvector import Vector

from dual_db.app.database import create_engine
from dual_db.app.settings import PoolSettings
from dual_db.db.sql_files import sql_file
from dual_db.db.urls import DatabaseUrl
from dual_db.schema.statements import statements_of


@dataclass
class StatementTiming:
    name: str
    median_ms: float | None  # None: skipped (its tables are not in this database)
    spread_ms: float | None
    skipped_reason: str = ""


@dataclass
class Measurements:
    batch: list[StatementTiming] = field(default_factory=list)
    batch_median_ms: float = 0.0
    batch_spread_ms: float = 0.0
    runs: int = 0
    rag_queries: int = 0
    rag_p50_ms: float | None = None
    rag_p95_ms: float | None = None
    rag_recall_at_10: float | None = None
    hnsw_ef_search: int | None = None
    rag_index_used: bool | None = None
    database_bytes: int = 0
    cache_hit_ratio: float | None = None
    vector_index_scans: int | None = None
    notes: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, float | int]:
        """Every numeric figure under a stable name (what the UI plots)."""
        out: dict[str, float | int] = {
            "batch_median_ms": round(self.batch_median_ms, 3),
            "batch_spread_ms": round(self.batch_spread_ms, 3),
            "batch_runs": self.runs,
            "database_bytes": self.database_bytes,
        }
        for timing in self.batch:
            if timing.median_ms is not None:
                out[f"batch_{timing.name}_median_ms"] = round(timing.median_ms, 3)
        optional = {
            "rag_queries": self.rag_queries,
            "rag_p50_ms": self.rag_p50_ms,
            "rag_p95_ms": self.rag_p95_ms,
            "rag_recall_at_10": self.rag_recall_at_10,
            "hnsw_ef_search": self.hnsw_ef_search,
            "rag_index_used": None if self.rag_index_used is None else int(self.rag_index_used),
            "cache_hit_ratio": self.cache_hit_ratio,
            "vector_index_scans": self.vector_index_scans,
        }
        out.update(
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in optional.items() if v is not None}
        )
        return out


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


async def _time_batch(conn: asyncpg.Connection, runs: int, result: Measurements) -> None:
    statements = statements_of(sql_file("workload", "batch.sql").read_text())
    per_statement: dict[int, list[float]] = {i: [] for i in range(len(statements))}
    skipped: dict[int, str] = {}
    for _ in range(runs):
        for i, statement in enumerate(statements):
            if i in skipped:
                continue
            async with conn.transaction(readonly=True):
                started = time.perf_counter()
                try:
                    await conn.fetch(statement.text)
                except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
                    skipped[i] = str(exc)
                    continue
                per_statement[i].append((time.perf_counter() - started) * 1000)
    totals = [sum(per_statement[i][run] for i in per_statement if i not in skipped) for run in range(runs)]
    result.runs = runs
    result.batch_median_ms = statistics.median(totals) if totals else 0.0
    result.batch_spread_ms = (max(totals) - min(totals)) if totals else 0.0
    for i in per_statement:
        name = f"q{i + 1}"
        if i in skipped:
            result.batch.append(StatementTiming(name, None, None, skipped[i]))
            result.notes.append(f"batch statement {name} skipped: {skipped[i]}")
        else:
            timings = per_statement[i]
            result.batch.append(
                StatementTiming(name, statistics.median(timings), max(timings) - min(timings))
            )


async def _vector_schema(conn: asyncpg.Connection) -> str | None:
    return await conn.fetchval(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    )


async def _measure_rag(conn: asyncpg.Connection, queries: int, seed: int, result: Measurements) -> None:
    schema = await _vector_schema(conn)
    has_table = await conn.fetchval("SELECT to_regclass('ai_kb_documents') IS NOT NULL")
    if schema is None or not has_table:  # the application's AI engine registered the codec if so
        result.notes.append("RAG probe skipped: no ai_kb_documents with pgvector in this database")
        return
    dims = await conn.fetchval(
        "SELECT vector_dims(embedding) FROM ai_kb_documents WHERE embedding IS NOT NULL LIMIT 1"
    )
    if dims is None:
        result.notes.append("RAG probe skipped: ai_kb_documents has no embeddings")
        return
    # Queries like a user's: near documents that exist. Seeded picks of stored embeddings (by key
    # order, which the copy preserves) plus a little seeded noise, so old and new databases get the
    # same query set.
    rng = random.Random(seed)
    stored = int(await conn.fetchval("SELECT count(*) FROM ai_kb_documents WHERE embedding IS NOT NULL"))
    vectors = []
    for _ in range(queries):
        picked = await conn.fetchval(
            "SELECT embedding FROM ai_kb_documents WHERE embedding IS NOT NULL ORDER BY id OFFSET $1 LIMIT 1",
            rng.randrange(stored),
        )
        raw = [x + rng.gauss(0.0, 0.02) for x in picked.to_list()]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        vectors.append(Vector([x / norm for x in raw]))
    query = sql_file("workload", "rag.sql").read_text()
    result.hnsw_ef_search = int(await conn.fetchval("SELECT current_setting('hnsw.ef_search')::int"))
    scans_before = await _vector_index_scans(conn) or 0
    latencies: list[float] = []
    recalls: list[float] = []
    for vector in vectors:
        started = time.perf_counter()
        approximate = await conn.fetch(query, vector)
        latencies.append((time.perf_counter() - started) * 1000)
        async with conn.transaction(readonly=True):
            # Exact search: the same query with the index out of the planner's reach.
            await conn.execute("SET LOCAL enable_indexscan = off")
            await conn.execute("SET LOCAL enable_bitmapscan = off")
            exact = await conn.fetch(query, vector)
        truth = {r["id"] for r in exact}
        if truth:
            recalls.append(len({r["id"] for r in approximate} & truth) / len(truth))
    result.rag_queries = len(vectors)
    # Whether the probe's nearest-neighbour queries went through a vector index at all (the planner may
    # prefer an exact scan on a small or oddly-costed table): recall is only approximate if they did.
    result.rag_index_used = (await _vector_index_scans(conn) or 0) - scans_before >= len(vectors)
    result.rag_p50_ms = _percentile(latencies, 0.50)
    result.rag_p95_ms = _percentile(latencies, 0.95)
    result.rag_recall_at_10 = statistics.fmean(recalls) if recalls else None


async def _database_figures(conn: asyncpg.Connection, result: Measurements) -> None:
    result.database_bytes = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    row = await conn.fetchrow(
        "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()"
    )
    if row is not None and (row["blks_hit"] + row["blks_read"]) > 0:
        result.cache_hit_ratio = row["blks_hit"] / (row["blks_hit"] + row["blks_read"])


async def _vector_index_scans(conn: asyncpg.Connection) -> int | None:
    """How often the vector indexes were used (None where there are none), this session's own scans
    included: its statistics are flushed first (PostgreSQL otherwise holds them back for a second)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return await conn.fetchval(
        "SELECT sum(s.idx_scan)::bigint FROM pg_stat_user_indexes s "
        "JOIN pg_class i ON i.oid = s.indexrelid JOIN pg_am am ON am.oid = i.relam "
        "WHERE am.amname IN ('hnsw', 'ivfflat')"
    )


async def measure_async(
    core_url: DatabaseUrl, ai_url: DatabaseUrl, *, runs: int = 5, rag_queries: int = 20, seed: int = 42
) -> Measurements:
    """Batch workload on `core_url`, RAG on `ai_url` (both the old database for the baseline), each on a
    connection made by the application module's engines (`dual_db.app`): asyncpg, pgvector's codec and
    the AI engine's session settings, exactly as the application connects."""
    result = Measurements()
    pool = PoolSettings(pool_size=1, max_overflow=0)
    core_engine = create_engine(core_url, pool)
    try:
        async with core_engine.connect() as connection:
            core = (await connection.get_raw_connection()).driver_connection
            await _time_batch(core, runs, result)
            await _database_figures(core, result)
    finally:
        await core_engine.dispose()
    ai_engine = create_engine(ai_url, pool, vector_codec=True)
    try:
        async with ai_engine.connect() as connection:
            ai = (await connection.get_raw_connection()).driver_connection
            await _measure_rag(ai, rag_queries, seed, result)
            result.vector_index_scans = await _vector_index_scans(ai)
            if ai_url != core_url:
                result.database_bytes += int(await ai.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await ai_engine.dispose()
    return result


def measure(
    core_url: DatabaseUrl, ai_url: DatabaseUrl, *, runs: int = 5, rag_queries: int = 20, seed: int = 42
) -> Measurements:
    return asyncio.run(measure_async(core_url, ai_url, runs=runs, rag_queries=rag_queries, seed=seed))
