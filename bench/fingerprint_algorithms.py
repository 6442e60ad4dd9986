"""Cost of the row-hash candidates for the content fingerprint, on one source, in one run.

    .venv/bin/python bench/fingerprint_algorithms.py [--rounds 5] [--per-type]

Fingerprints every user table of $SOURCE_DATABASE_URL (read from .env) once per candidate and round,
one backend, the candidates in a rotating order within each round, and prints each candidate's median
total seconds and its ratio to `text-v1`. The machine is shared: only ratios from one run compare.
`record_send` candidates are references only: the row's binary form carries the type OIDs of user
types (vector, enums), which differ between servers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from dual_db.db.catalog import ColumnInfo, list_tables, table_columns
from dual_db.db.connect import connect
from dual_db.db.fingerprint import TEXT_V1, TYPED_V2, row_hash_expression, vector_extension_schema
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl

RowHash = Callable[[Sequence[ColumnInfo], str | None], sql.Composable]


def _typed(**options: str) -> RowHash:
    return lambda cols, schema: row_hash_expression(cols, vector_schema=schema, algorithm=TYPED_V2, **options)


CANDIDATES: dict[str, RowHash] = {
    "text-v1 (today)": lambda cols, schema: row_hash_expression(
        cols, vector_schema=schema, algorithm=TEXT_V1
    ),
    "typed-v2 (numeric send, jsonb send)": _typed(),
    "typed numeric hash, jsonb send": _typed(numeric="hash"),
    "typed numeric send, jsonb hash": _typed(jsonb="hash"),
    "typed numeric hash, jsonb hash": _typed(numeric="hash", jsonb="hash"),
    "ref: own hashes of the columns as they are (not exact)": lambda cols, schema: sql.SQL(
        "hashint4extended(0, hash_record_extended(ROW({}), 0))"
    ).format(
        sql.SQL(", ").join(
            sql.SQL("{}({})").format(
                sql.Identifier(schema or "public", "vector_send"), sql.Identifier(c.name)
            )
            if c.vector_type
            else sql.Identifier(c.name)
            for c in cols
        )
    ),
    "ref: the scan alone (count(*), sum(0))": lambda cols, schema: sql.SQL("0"),
    "ref: md5(record_send) 64 bit": lambda cols, schema: sql.SQL(
        "('x' || substr(md5(record_send(t)), 1, 16))::bit(64)::bigint"
    ),
    "ref: crc32c(record_send) 32 bit": lambda cols, schema: sql.SQL("crc32c(record_send(t))"),
}


def _url() -> DatabaseUrl:
    url = os.environ.get("SOURCE_DATABASE_URL")
    if not url:
        for line in Path(".env").read_text().splitlines():
            if line.startswith("SOURCE_DATABASE_URL="):
                url = line.split("=", 1)[1]
    assert url, "no SOURCE_DATABASE_URL (run make up and the demo source first)"
    return DatabaseUrl.parse(url)


COPY_OUT = "ref: COPY ... TO STDOUT (FORMAT binary) of every table, discarded"


def _total(conn: psycopg.Connection, queries: Sequence[sql.Composable]) -> float:
    started = time.perf_counter()
    for q in queries:
        if q.as_string(conn).startswith("COPY"):
            with conn.cursor() as cur, cur.copy(q) as copy:
                for _ in copy:
                    pass
        else:
            conn.execute(q).fetchone()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-type", action="store_true", help="also time each column type alone")
    args = parser.parse_args()
    with connect(_url(), autocommit=True) as conn:
        schema = vector_extension_schema(conn)
        tables: list[tuple[TableName, list[ColumnInfo]]] = [
            (info.table, table_columns(conn, info.table)) for info in list_tables(conn)
        ]
        candidates = {
            name: [
                sql.SQL("SELECT count(*), sum({h}) FROM {t} AS t").format(h=h(cols, schema), t=table.ident)
                for table, cols in tables
            ]
            for name, h in CANDIDATES.items()
        }
        # What the copy's read side costs, for scale: the fingerprint runs once per side per table.
        candidates[COPY_OUT] = [
            sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(table.ident) for table, _ in tables
        ]
        if args.per_type:
            kinds = sorted({c.vector_type or c.base_type for _, cols in tables for c in cols})
            for kind in kinds:
                for algorithm in (TEXT_V1, TYPED_V2):
                    queries = []
                    for table, cols in tables:
                        sub = [c for c in cols if (c.vector_type or c.base_type) == kind]
                        if sub:
                            h = row_hash_expression(sub, vector_schema=schema, algorithm=algorithm)
                            queries.append(
                                sql.SQL("SELECT count(*), sum({h}) FROM {t}").format(h=h, t=table.ident)
                            )
                    candidates[f"only {kind} columns: {algorithm}"] = queries
        # Warm the cache (and the catalog caches) once.
        for queries in candidates.values():
            _total(conn, queries)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        names = list(candidates)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(_total(conn, candidates[name]))
    base = statistics.median(times[names[0]])
    rows = sum(1 for _ in tables)
    print(f"{rows} tables, {args.rounds} rounds, median total seconds (one backend), ratio to text-v1")
    for name in names:
        med = statistics.median(times[name])
        spread = f"min {min(times[name]):.3f}, max {max(times[name]):.3f}"
        print(f"{med:8.3f} s  {med / base:5.2f}x  [{spread}]  {name}")


if __name__ == "__main__":
    main()
