"""The demo: a SigmaSight-like source database to migrate (`dual-db demo-source`), kept apart from
the product so that the runtime package reads as what it is."""

from dual_db.demo.source import (
    AI_TABLES,
    CORE_TABLES,
    DemoSourceError,
    DemoSourceExists,
    DemoSourceSummary,
    build_demo_source,
    demo_table_names,
)

__all__ = [
    "AI_TABLES",
    "CORE_TABLES",
    "DemoSourceError",
    "DemoSourceExists",
    "DemoSourceSummary",
    "build_demo_source",
    "demo_table_names",
]
