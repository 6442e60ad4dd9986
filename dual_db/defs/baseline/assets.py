"""`baseline/metrics`: how the old database performs before cutover (the plan's phase 1).

The batch workload, RAG latency and recall, and database figures, measured on the source the way the
application connects (asyncpg, pgvector's codec). The soak week compares the new pair with these
numbers; every figure is numeric metadata, so the UI plots them. Materialized on purpose (not part of
`migrate`): measure when the source is under its usual load.
"""

from typing import Any

import dagster as dg

from dual_db.defs.constants import BASELINE
from dual_db.defs.errors import clear_failure
from dual_db.defs.resources import SourceDatabase
from dual_db.defs.state import numeric_metadata


class WorkloadConfig(dg.Config):
    runs: int = 5  # repetitions of the batch workload; the median is reported
    rag_queries: int = 20  # seeded query vectors for the RAG probe
    seed: int = 42


@dg.asset(
    key=BASELINE,
    group_name="baseline",
    kinds={"postgres"},
    description="The source's batch workload time (median and spread), RAG latency p50/p95 and "
    "recall@10 through the HNSW index, size, cache hit ratio and vector index scans, before cutover.",
)
def baseline_metrics(
    context: dg.AssetExecutionContext, config: WorkloadConfig, source: SourceDatabase
) -> dg.MaterializeResult:
    with clear_failure(context):
        # Imported here, not at the top: the application-side stack it loads (SQLAlchemy's asyncio
        # extension, asyncpg) would otherwise add to the start-up of every run, a one-table redo's too.
        from dual_db.measure.workload import measure

        url = source.database_url()
        measured = measure(url, url, runs=config.runs, rag_queries=config.rag_queries, seed=config.seed)
    for note in measured.notes:
        context.log.warning(note)
    metadata: dict[str, Any] = numeric_metadata(measured.figures())
    metadata["database"] = source.masked_url
    metadata["batch"] = dg.MetadataValue.md(
        "| statement | median ms | spread ms |\n|---|---|---|\n"
        + "\n".join(
            f"| {t.name} | {t.median_ms:.2f} | {t.spread_ms:.2f} |"
            if t.median_ms is not None and t.spread_ms is not None
            else f"| {t.name} | skipped | {t.skipped_reason} |"
            for t in measured.batch
        )
    )
    return dg.MaterializeResult(metadata=metadata)
