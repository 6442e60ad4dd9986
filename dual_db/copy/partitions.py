"""Partitioned tables in the copy: one COPY per leaf partition, one result per partitioned table.

The routing plan names a partitioned table by its root; its rows live in its leaves (at any depth of
sub-partitioning). Each leaf is a COPY of its own (leaves stream side by side and each is replaced
atomically and fingerprinted on both sides), and the table's result is its leaves' results put
together: rows and the source fingerprint are their sums (a fingerprint is a count and a sum of row
hashes, so the leaves' add up to the table's), while the target side is fingerprinted again through
the partitioned table itself, so that a row the target holds in no copied leaf is counted too.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import psycopg

from dual_db.copy.engine import CopyError, SequenceValue, TableCopyResult, set_sequences
from dual_db.db.catalog import ColumnInfo, list_sequences, list_tables, partition_leaves
from dual_db.db.connect import connection
from dual_db.db.fingerprint import Fingerprint, table_fingerprint, vector_extension_schema
from dual_db.db.names import TableName
from dual_db.db.snapshot import snapshot_session
from dual_db.db.urls import DatabaseUrl


@dataclass
class PartitionedCopyResult(TableCopyResult):
    """A partitioned table's copy: the sums over `partitions`, one result per leaf."""

    partitions: list[TableCopyResult] = field(default_factory=list)


@dataclass(frozen=True)
class CopyUnits:
    """What copying some routed tables streams: a plain table is its own unit, a partitioned table's
    units are its leaves."""

    leaves: dict[TableName, list[TableName]]  # partitioned table -> its leaf partitions
    sizes: dict[TableName, int]  # on-disk size of every unit and every routed table
    tables: tuple[TableName, ...] = ()

    @property
    def units(self) -> list[TableName]:
        return [u for t in self.tables for u in self.leaves.get(t, [t])]

    def table_of(self, unit: TableName) -> TableName:
        """The routed table a unit belongs to (itself for a plain table)."""
        for table, leaves in self.leaves.items():
            if unit in leaves:
                return table
        return unit


def copy_units(conn: psycopg.Connection, tables: Sequence[TableName]) -> CopyUnits:
    """The COPY units of `tables`, read from the source catalog. Raises CopyError for a partition
    that is a foreign table (its rows are on another server: dual-db cannot copy them)."""
    listed = {info.table: info for info in list_tables(conn)}
    sizes = {info.table: info.bytes for info in listed.values()}
    leaves: dict[TableName, list[TableName]] = {}
    for table in tables:
        info = listed.get(table)
        if info is None or not info.partitioned:
            continue
        found = partition_leaves(conn, table)
        foreign = [leaf.table for leaf in found if leaf.kind == "f"]
        if foreign:
            raise CopyError(
                f"table {table} has foreign-table partition(s) {', '.join(map(str, foreign))}: their rows "
                "are on another server and dual-db cannot copy them; detach them on the source, or "
                f"exclude {table} in the routing plan"
            )
        leaves[table] = [leaf.table for leaf in found]
        sizes.update({leaf.table: leaf.bytes for leaf in found})
    return CopyUnits(leaves=leaves, sizes=sizes, tables=tuple(tables))


def _sum(fingerprints: Sequence[Fingerprint]) -> Fingerprint:
    algorithms = {f.algorithm for f in fingerprints}
    assert len(algorithms) <= 1, f"leaves fingerprinted with different algorithms: {sorted(algorithms)}"
    return Fingerprint(
        rows=sum(f.rows for f in fingerprints),
        checksum=str(sum(int(f.checksum) for f in fingerprints)),
        **({"algorithm": algorithms.pop()} if algorithms else {}),
    )


def _over_table_columns(
    leaves: Sequence[TableCopyResult],
    columns: Sequence[ColumnInfo],
    source_url: DatabaseUrl,
    snapshot_id: str | None,
) -> list[Fingerprint]:
    """Each leaf's source fingerprint over the partitioned table's column order. A row hash combines
    its columns by position, so the leaves' fingerprints add up to the table's only in one column
    order: a leaf created on its own and then attached can list its columns in another order, and is
    fingerprinted again (inside the same snapshot) over the table's."""
    order = [c.name for c in columns]
    found: list[Fingerprint] = []
    again = {id(r) for r in leaves if [c.name for c in r.columns] != order}
    session = (
        snapshot_session(source_url, snapshot_id, application_name="dual-db fingerprint") if again else None
    )
    with session if session is not None else nullcontext() as conn:
        for r in leaves:
            assert r.source_fingerprint is not None, f"partition {r.table} was copied without a fingerprint"
            if id(r) not in again:
                found.append(r.source_fingerprint)
                continue
            found.append(
                table_fingerprint(
                    conn,
                    r.table,
                    columns,
                    algorithm=r.source_fingerprint.algorithm,
                    vector_schema=vector_extension_schema(conn),
                )
            )
    return found


def combine_partitions(
    table: TableName,
    leaves: Sequence[TableCopyResult],
    columns: Sequence[ColumnInfo],
    *,
    source_url: DatabaseUrl,
    target_url: DatabaseUrl,
    snapshot_id: str | None,
) -> PartitionedCopyResult:
    """The partitioned `table`'s result from its leaves' (all copied): the source fingerprint is their
    sum; the target is fingerprinted through `table` itself over the table's `columns`. Sequences owned
    by `table` (a serial on the partitioned table, not on a leaf) are set to the source's values."""
    ordered = sorted(leaves, key=lambda r: r.table)
    source = _sum(_over_table_columns(ordered, columns, source_url, snapshot_id))
    with connection(source_url, read_only=True, application_name="dual-db copy") as source_conn:
        owned = [s for s in list_sequences(source_conn, owned_by=table) if s.last_value is not None]
    with connection(target_url, autocommit=True, application_name="dual-db copy") as target_conn:
        with target_conn.transaction():
            sequences = set_sequences(
                target_conn,
                [SequenceValue(s.sequence, s.last_value, s.is_called) for s in owned],  # type: ignore[arg-type]
            )
        target = table_fingerprint(
            target_conn,
            table,
            columns,
            algorithm=source.algorithm,
            vector_schema=vector_extension_schema(target_conn),
        )
    return PartitionedCopyResult(
        table=table,
        rows=sum(r.rows for r in ordered),
        bytes=sum(r.bytes for r in ordered),
        seconds=sum(r.seconds for r in ordered),
        snapshot_id=ordered[0].snapshot_id if ordered else None,
        copy_format="/".join(sorted({r.copy_format for r in ordered})),
        empty_method="/".join(sorted({r.empty_method for r in ordered})),
        replaced_rows=sum(r.replaced_rows for r in ordered),
        source_fingerprint=source,
        target_fingerprint=target,
        columns=list(columns),
        sequences=[*sequences, *(s for r in ordered for s in r.sequences)],
        source_fingerprint_seconds=sum(r.source_fingerprint_seconds for r in ordered),
        copy_seconds=sum(r.copy_seconds for r in ordered),
        target_fingerprint_seconds=sum(r.target_fingerprint_seconds for r in ordered),
        size_bytes=sum(r.size_bytes for r in ordered),
        partitions=ordered,
    )
