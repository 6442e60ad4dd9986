"""Narrowing a fingerprint mismatch down to a primary-key range, and then to rows.

When a table's fingerprint differs between the source and a target, a person needs to know *where*.
`locate_difference` splits the key space into ~16 ranges at key quantiles, fingerprints every range on
both sides in one grouped scan per side, and recurses into the first range that differs until it holds
at most ~64 rows. It then lists the keys that differ inside that range (missing, extra, changed).

Key values travel as their text form (`col::text`) and come back as SQL literals of unknown type, so
PostgreSQL parses them with the column's own input function: this round-trips every key type
(integers, uuid, numeric, timestamps, enums, text with quotes and spaces) without naming a type in SQL.
Collatable key columns are compared with `COLLATE "C"` on both sides, so a range holds the same rows on
two servers even if their default collations sort differently.

Everything here is a plain SELECT: it runs on the read-only source session, inside the copy's snapshot
when the caller still has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from dual_db.db.catalog import ColumnInfo, regclass_literal
from dual_db.db.fingerprint import (
    CURRENT_ALGORITHM,
    Fingerprint,
    row_hash_expression,
    vector_extension_schema,
)
from dual_db.db.names import TableName
from dual_db.verify.outcome import JSONValue

# Rows read into Python from each side for the final row-by-row comparison, at most.
_MAX_ROWS_READ = 10_000

# Primary-key columns in key order, with whether each is collatable (text-like: gets COLLATE "C").
_KEY_COLUMNS_SQL = """
SELECT a.attname, a.attcollation <> 0
FROM pg_index i
JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %(rel)s::regclass AND i.indisprimary
ORDER BY k.ord
"""


@dataclass(frozen=True)
class KeyColumn:
    name: str
    collatable: bool

    @property
    def sort_expr(self) -> sql.Composable:
        ident = sql.Identifier(self.name)
        if self.collatable:
            return sql.SQL("{} COLLATE {}").format(ident, sql.Identifier("C"))
        return ident


def key_columns(conn: psycopg.Connection, table: TableName) -> list[KeyColumn]:
    """The primary key of `table` as this server defines it; [] when it has none."""
    rows = conn.execute(_KEY_COLUMNS_SQL, {"rel": regclass_literal(table)}).fetchall()
    return [KeyColumn(r[0], bool(r[1])) for r in rows]


Key = tuple[str, ...]


def _sql_text_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident_text(name: str) -> str:
    # Quoted only where PostgreSQL needs it (the project's rule for display names).
    return TableName("public", name).display


@dataclass(frozen=True)
class KeyRange:
    """`lower <= key < upper` in key order; a missing bound is open (start or end of the table)."""

    columns: tuple[str, ...]
    lower: Key | None = None
    upper: Key | None = None

    def _key_text(self, key: Key) -> str:
        values = ", ".join(_sql_text_literal(v) for v in key)
        return f"({values})" if len(key) > 1 else values

    @property
    def _columns_text(self) -> str:
        names = ", ".join(_ident_text(c) for c in self.columns)
        return f"({names})" if len(self.columns) > 1 else names

    def describe(self) -> str:
        """`id >= '42' AND id < '57'`, `(a, b) >= ('x', '1')`, or `all keys`: what a person would query."""
        parts = []
        if self.lower is not None:
            parts.append(f"{self._columns_text} >= {self._key_text(self.lower)}")
        if self.upper is not None:
            parts.append(f"{self._columns_text} < {self._key_text(self.upper)}")
        return " AND ".join(parts) if parts else "all keys"

    def condition(self, key: Sequence[KeyColumn]) -> sql.Composable | None:
        """The WHERE condition selecting this range (None for the whole table)."""
        row = sql.SQL("ROW({})").format(sql.SQL(", ").join(k.sort_expr for k in key))
        parts: list[sql.Composable] = []
        if self.lower is not None:
            parts.append(sql.SQL("{} >= {}").format(row, _literal_row(self.lower)))
        if self.upper is not None:
            parts.append(sql.SQL("{} < {}").format(row, _literal_row(self.upper)))
        return sql.SQL(" AND ").join(parts) if parts else None

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "key_columns": list(self.columns),
            "lower": list(self.lower) if self.lower is not None else None,
            "upper": list(self.upper) if self.upper is not None else None,
            "condition": self.describe(),
        }


def _literal_row(key: Key) -> sql.Composable:
    # Literals without a cast are of type unknown: each resolves to its key column's type.
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Literal(v) for v in key))


@dataclass(frozen=True)
class RowDifference:
    kind: str  # 'missing_in_target' | 'extra_in_target' | 'duplicated_in_target' | 'changed'
    key: Key

    def describe(self, columns: Sequence[str]) -> str:
        pairs = ", ".join(
            f"{_ident_text(c)}={_sql_text_literal(v)}" for c, v in zip(columns, self.key, strict=True)
        )
        return f"{self.kind.replace('_', ' ')}: {pairs}"


@dataclass
class BisectResult:
    """Where the source and the target first differ, in key order."""

    found: bool  # False: the two sides are identical over the whole key space right now
    key_range: KeyRange
    source: Fingerprint  # of `key_range` on the source
    target: Fingerprint  # of `key_range` on the target
    source_total: Fingerprint  # the whole table on the source connection
    target_total: Fingerprint
    depth: int
    differences: list[RowDifference] = field(default_factory=list)
    differences_truncated: bool = False

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "found": self.found,
            **self.key_range.to_json(),
            "source_rows_in_range": self.source.rows,
            "target_rows_in_range": self.target.rows,
            "depth": self.depth,
            "differences": [{"kind": d.kind, "key": list(d.key)} for d in self.differences],
            "differences_truncated": self.differences_truncated,
        }


class _Side:
    """One table on one server, with the expressions every range query needs."""

    def __init__(
        self,
        conn: psycopg.Connection,
        table: TableName,
        columns: Sequence[ColumnInfo],
        key: Sequence[KeyColumn],
        algorithm: str,
    ) -> None:
        self.conn = conn
        self.table = table
        self.key = list(key)
        self.algorithm = algorithm
        schema = vector_extension_schema(conn) if any(c.vector_type for c in columns) else None
        self.row_hash = row_hash_expression(columns, vector_schema=schema, algorithm=algorithm)

    def _where(self, key_range: KeyRange) -> sql.Composable:
        condition = key_range.condition(self.key)
        return sql.SQL("") if condition is None else sql.SQL(" WHERE {}").format(condition)

    def _key_row(self) -> sql.Composable:
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(k.sort_expr for k in self.key))

    def _order_by(self) -> sql.Composable:
        return sql.SQL(", ").join(k.sort_expr for k in self.key)

    def _key_text_columns(self) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{}::text AS {}").format(sql.Identifier(k.name), sql.Identifier(f"k{i}"))
            for i, k in enumerate(self.key)
        )

    def fingerprint(self, key_range: KeyRange) -> Fingerprint:
        # Same SQL as `fingerprint_query`, so the whole-range value equals `table_fingerprint`.
        query = sql.SQL("SELECT count(*), coalesce(sum({h}), 0)::text FROM {t}{w}").format(
            h=self.row_hash, t=self.table.ident, w=self._where(key_range)
        )
        row = self.conn.execute(query).fetchone()
        assert row is not None
        return Fingerprint(int(row[0]), str(row[1]), self.algorithm)

    def quantiles(self, key_range: KeyRange, rows: int, fanout: int) -> list[Key]:
        """Up to `fanout - 1` keys splitting `key_range` into parts of about `rows / fanout` rows."""
        step = max(-(-rows // fanout), 1)
        query = sql.SQL(
            "SELECT * FROM (SELECT {keys}, row_number() OVER (ORDER BY {order}) AS rn FROM {t}{w}) q "
            "WHERE rn > 1 AND (rn - 1) % {step} = 0 ORDER BY rn LIMIT {limit}"
        ).format(
            keys=self._key_text_columns(),
            order=self._order_by(),
            t=self.table.ident,
            w=self._where(key_range),
            step=sql.Literal(step),
            limit=sql.Literal(fanout - 1),
        )
        n = len(self.key)
        return [tuple(r[:n]) for r in self.conn.execute(query).fetchall()]

    def bucket_fingerprints(self, key_range: KeyRange, bounds: Sequence[Key]) -> dict[int, Fingerprint]:
        """Fingerprint of each part of `key_range` cut at `bounds`, in one scan."""
        key_row = self._key_row()
        whens = sql.SQL(" ").join(
            sql.SQL("WHEN {} < {} THEN {}").format(key_row, _literal_row(b), sql.Literal(i))
            for i, b in enumerate(bounds)
        )
        query = sql.SQL(
            "SELECT CASE {whens} ELSE {last} END AS bucket, count(*), coalesce(sum({h}), 0)::text "
            "FROM {t}{w} GROUP BY 1"
        ).format(
            whens=whens,
            last=sql.Literal(len(bounds)),
            h=self.row_hash,
            t=self.table.ident,
            w=self._where(key_range),
        )
        return {
            int(r[0]): Fingerprint(int(r[1]), str(r[2]), self.algorithm)
            for r in self.conn.execute(query).fetchall()
        }

    def row_hashes(self, key_range: KeyRange, limit: int) -> dict[Key, list[str]]:
        query = sql.SQL("SELECT {keys}, ({h})::text FROM {t}{w} ORDER BY {order} LIMIT {limit}").format(
            keys=self._key_text_columns(),
            h=self.row_hash,
            t=self.table.ident,
            w=self._where(key_range),
            order=self._order_by(),
            limit=sql.Literal(limit),
        )
        n = len(self.key)
        hashes: dict[Key, list[str]] = {}
        for r in self.conn.execute(query).fetchall():
            hashes.setdefault(tuple(r[:n]), []).append(r[n])
        return hashes


def locate_difference(
    source_conn: psycopg.Connection,
    source_table: TableName,
    target_conn: psycopg.Connection,
    target_table: TableName,
    columns: Sequence[ColumnInfo],
    key: Sequence[KeyColumn],
    *,
    fanout: int = 16,
    max_rows: int = 64,
    max_depth: int = 24,
    max_listed: int = 20,
    algorithm: str = CURRENT_ALGORITHM,
) -> BisectResult:
    """The first key range (in key order) where source and target differ, and the differing keys in it.

    `columns` is the source's column list: both sides hash the same columns in the same order, with
    the row hash of `algorithm` (that of the fingerprint the caller compares with).
    """
    if not key:
        raise ValueError(f"{source_table}: no primary key to bisect on")
    if fanout < 2:
        raise ValueError("fanout must be at least 2")
    source = _Side(source_conn, source_table, columns, key, algorithm)
    target = _Side(target_conn, target_table, columns, key, algorithm)
    empty = Fingerprint(0, "0", algorithm)
    current = KeyRange(tuple(k.name for k in key))
    source_total = src = source.fingerprint(current)
    target_total = tgt = target.fingerprint(current)
    if src == tgt:
        return BisectResult(False, current, src, tgt, source_total, target_total, depth=0)

    depth = 0
    while max(src.rows, tgt.rows) > max_rows and depth < max_depth:
        # Cut where the bigger side has its quantiles: rows present only on one side (extra rows on
        # the target, rows missing from it) still end up split.
        splitter = source if src.rows >= tgt.rows else target
        bounds = splitter.quantiles(current, max(src.rows, tgt.rows), fanout)
        if not bounds:
            break
        src_parts = source.bucket_fingerprints(current, bounds)
        tgt_parts = target.bucket_fingerprints(current, bounds)
        for i in range(len(bounds) + 1):
            s, t = src_parts.get(i, empty), tgt_parts.get(i, empty)
            if s != t:
                current = KeyRange(
                    current.columns,
                    current.lower if i == 0 else bounds[i - 1],
                    current.upper if i == len(bounds) else bounds[i],
                )
                src, tgt = s, t
                break
        else:
            # Every part agrees although the whole did not: the data changed between the two scans.
            break
        depth += 1

    # Normally the range holds <= max_rows rows; if bisection stopped early, read a bounded sample.
    limit = min(max(src.rows, tgt.rows, max_rows) + 1, _MAX_ROWS_READ)
    src_rows = source.row_hashes(current, limit)
    tgt_rows = target.row_hashes(current, limit)
    differences: list[RowDifference] = []
    # Source keys in the server's key order, then keys only the target has (also in key order).
    for k in [*src_rows, *(k for k in tgt_rows if k not in src_rows)]:
        if k not in tgt_rows:
            differences.append(RowDifference("missing_in_target", k))
        elif k not in src_rows:
            differences.append(RowDifference("extra_in_target", k))
        elif len(tgt_rows[k]) > len(src_rows[k]):
            # The target lost its primary key and holds the row twice.
            differences.append(RowDifference("duplicated_in_target", k))
        elif sorted(src_rows[k]) != sorted(tgt_rows[k]):
            differences.append(RowDifference("changed", k))
    truncated = len(differences) > max_listed or max(src.rows, tgt.rows) >= limit
    return BisectResult(
        True,
        current,
        src,
        tgt,
        source_total,
        target_total,
        depth,
        differences[:max_listed],
        truncated,
    )


def first_differing_range(
    source_conn: psycopg.Connection,
    target_conn: psycopg.Connection,
    table: TableName,
    columns: Sequence[ColumnInfo],
    *,
    target_table: TableName | None = None,
) -> dict[str, JSONValue] | None:
    """JSON summary of `locate_difference` for `table`, or None (no primary key, or no difference now).

    `range` is the first differing key range as a SQL condition, e.g. `id >= '42' AND id < '57'`.
    """
    key = key_columns(source_conn, table)
    if not key:
        return None
    found = locate_difference(source_conn, table, target_conn, target_table or table, columns, key)
    if not found.found:
        return None
    return {"range": found.key_range.describe(), **found.to_json()}
