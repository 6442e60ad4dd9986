"""Demo sources, built once per (scale, seed) and reused: each is its own database on the source server.

A source is complete when its database carries the bench's comment (written after the build
committed); a database without it is a build that was interrupted, and is rebuilt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from psycopg import sql

from bench.servers import connect
from dual_db.db.urls import DatabaseUrl
from dual_db.demo import build_demo_source
from dual_db.demo.source import AI_TABLES, CORE_TABLES
from dual_db.embedded import EmbeddedServer

MARKER = "dual-db bench source"


@dataclass(frozen=True)
class Source:
    scale: float
    seed: int
    url: DatabaseUrl
    table_bytes: int  # sum of pg_total_relation_size over the tables (heap, TOAST, indexes)
    heap_bytes: int  # sum of pg_table_size (heap + TOAST): what a copy moves
    embeddings: int
    rows: int
    built_seconds: float | None  # None when reused


def database_name(scale: float, seed: int) -> str:
    return f"bench_s{scale:g}_r{seed}".replace(".", "_")


def _marker(server: EmbeddedServer, dbname: str) -> dict[str, object] | None:
    with connect(server.url()) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (dbname,)
        ).fetchone()
    if not row or not row[0]:
        return None
    try:
        data = json.loads(row[0])
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("marker") == MARKER else None


def measure(url: DatabaseUrl) -> tuple[int, int, int, int]:
    """(total relation bytes, table bytes, embeddings, rows) of the demo tables."""
    tables = [*CORE_TABLES, *AI_TABLES]
    with connect(url) as conn:
        total, heap = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)), sum(pg_table_size(c.oid)) FROM pg_class c"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname = ANY(%s)",
            (tables,),
        ).fetchone() or (0, 0)
        embeddings = conn.execute(
            "SELECT count(*) FROM ai_kb_documents WHERE embedding IS NOT NULL"
        ).fetchone()
        rows = 0
        for table in tables:
            got = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            rows += int(got[0]) if got else 0
    return int(total or 0), int(heap or 0), int(embeddings[0]) if embeddings else 0, rows


def ensure_source(server: EmbeddedServer, scale: float, seed: int, say=print) -> Source:  # type: ignore[no-untyped-def]
    dbname = database_name(scale, seed)
    url = server.url(dbname)
    built: float | None = None
    if _marker(server, dbname) is None:
        say(f"building the demo source at scale {scale:g}, seed {seed} (database {dbname}) ...")
        server.drop_database(dbname)
        server.ensure_database(dbname)
        summary = build_demo_source(url, scale=scale, seed=seed)
        built = summary.seconds
        with connect(server.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(dbname),
                    sql.Literal(json.dumps({"marker": MARKER, "scale": scale, "seed": seed})),
                )
            )
        # A settled source: the visibility map set, as a production database would be.
        with connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
    total, heap, embeddings, rows = measure(url)
    return Source(scale, seed, url, total, heap, embeddings, rows, built)
