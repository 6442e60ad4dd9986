"""The baseline: every figure measured on a real SigmaSight-like source, through asyncpg and pgvector."""

from __future__ import annotations

import dagster as dg
import pytest

from dual_db.definitions import build_definitions
from dual_db.demo import build_demo_source
from dual_db.embedded import EmbeddedCluster
from dual_db.measure.workload import measure
from dual_db.routing import DEFAULT_PLAN_FILE, RoutingPlan
from dual_db_tests.conftest import DatabaseFactory


@pytest.fixture
def demo_source(servers: EmbeddedCluster, new_database: DatabaseFactory):  # type: ignore[no-untyped-def]
    url = new_database(servers["source"])
    build_demo_source(url, scale=0.4, seed=7)
    return url


def test_every_baseline_figure_is_measured(demo_source) -> None:  # type: ignore[no-untyped-def]
    measured = measure(demo_source, demo_source, runs=3, rag_queries=10)
    figures = measured.figures()
    assert not measured.notes, measured.notes  # every batch statement ran on the demo schema
    assert [t.name for t in measured.batch] == ["q1", "q2", "q3", "q4"]
    for name in ("batch_median_ms", "batch_spread_ms", "rag_p50_ms", "rag_p95_ms", "cache_hit_ratio"):
        assert isinstance(figures[name], float) and figures[name] >= 0, name
    assert figures["batch_runs"] == 3 and figures["rag_queries"] == 10
    assert figures["rag_p95_ms"] >= figures["rag_p50_ms"]
    assert 0.0 <= figures["rag_recall_at_10"] <= 1.0 and figures["rag_recall_at_10"] > 0.5
    assert figures["hnsw_ef_search"] == 40  # pgvector's default, recorded with the latency
    assert figures["database_bytes"] > 1_000_000
    assert figures["vector_index_scans"] >= 10  # the RAG probe went through the HNSW index


def test_baseline_asset_records_numeric_metadata(
    demo_source, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SOURCE_DATABASE_URL", demo_source.uri())
    monkeypatch.chdir(tmp_path)
    defs = build_definitions(RoutingPlan.load(DEFAULT_PLAN_FILE))
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(["baseline", "metrics"])],
            run_config={"ops": {"baseline__metrics": {"config": {"runs": 2, "rag_queries": 5}}}},
        )
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey(["baseline", "metrics"]))
        assert event is not None and event.asset_materialization is not None
        metadata = event.asset_materialization.metadata
    assert isinstance(metadata["rag_p50_ms"], dg.FloatMetadataValue)
    assert isinstance(metadata["batch_median_ms"], dg.FloatMetadataValue)
    assert isinstance(metadata["database_bytes"], dg.IntMetadataValue)
    assert demo_source.password not in str(metadata)
