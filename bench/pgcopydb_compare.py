"""What `pgcopydb compare data` (pgcopydb ≥ 0.14) does, for Debian's 0.10 which lacks the command.

For every table, the same query runs on the source and on the target at once, and the two results
are compared; `--table-jobs` workers (pgcopydb's default: 4) share the tables. The query is
pgcopydb's own: the row count and the SHA-256 of "<sum of 32-bit hashtext of each row's text>-<count>".
Note it hashes 32 bits per row (`hashtext`), where dual-db keeps 64.

Usage: python -m bench.pgcopydb_compare <source-uri> <jobs> <target-uri>:<table,table,...> ...
(the passwords come from PGPASSFILE). Exit status 1 when a table differs.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

QUERY = (
    "select count(1) as cnt, encode(sha256(format('%s-%s', sum(hashtext({cols}::text)::bigint),"
    " count(1))::bytea), 'hex') as chksum from only {table}"
)


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        (f'public."{table}"',),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _query(conn: psycopg.Connection, table: str) -> sql.Composed:
    cols = _columns(conn, table)
    row = sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in cols))
    return sql.SQL(QUERY).format(cols=row, table=sql.Identifier("public", table))


def compare_table(source: str, target: str, table: str) -> str | None:
    with psycopg.connect(source) as src, psycopg.connect(target) as dst:
        query = _query(src, table)
        # Both sides at once, as pgcopydb sends them asynchronously.
        with ThreadPoolExecutor(max_workers=2) as pool:
            a = pool.submit(lambda: src.execute(query).fetchone())
            b = pool.submit(lambda: dst.execute(query).fetchone())
            left, right = a.result(), b.result()
    if left != right:
        return f"{table}: source {left}, target {right}"
    return None


def main(argv: list[str]) -> int:
    source, jobs, pairs = argv[0], int(argv[1]), argv[2:]
    work = []
    for pair in pairs:
        target, tables = pair.rsplit(":", 1)
        work.extend((target, t) for t in tables.split(",") if t)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda item: compare_table(source, item[0], item[1]), work))
    differ = [r for r in results if r]
    for line in differ:
        print(line)
    print(f"compared {len(work)} tables, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
