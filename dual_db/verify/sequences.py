"""sequences_aligned: every sequence at least where the source's was.

The rules of `dual_db.verify` (its package docstring) hold here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import psycopg
from psycopg import sql

from dual_db.db.catalog import (
    regclass_literal,
)
from dual_db.db.names import TableName
from dual_db.verify.outcome import CheckOutcome, JSONValue, capped, plural


class _SequenceValueLike(Protocol):
    last_value: int | None
    is_called: bool


SequenceExpectation = int | tuple[int, bool] | _SequenceValueLike | None

_SEQUENCE_SQL = """
SELECT s.seqincrement FROM pg_sequence s WHERE s.seqrelid = to_regclass(%(rel)s)
"""


def _expected_bound(value: SequenceExpectation) -> tuple[int | None, bool]:
    """(source last_value, is_called). A bare int is a value the source may already have handed out."""
    if value is None or isinstance(value, int):
        return value, True
    if isinstance(value, tuple):
        return int(value[0]), bool(value[1])
    return value.last_value, bool(value.is_called)


def sequences_aligned(
    expected: Mapping[TableName, SequenceExpectation], target_conn: psycopg.Connection
) -> CheckOutcome:
    """Every sequence's next value on the target is beyond what the source handed out at the snapshot.

    `expected` maps each sequence to the source's state: a `SequenceInfo`/`SequenceValue` (last_value,
    is_called), a `(last_value, is_called)` pair, or an int taken as handed out. The source handed out
    `last_value` only if `is_called`; the target's next value is `last_value + increment` if its
    `is_called`, else `last_value`. Descending sequences compare the other way round.
    """
    failures: list[str] = []
    checked: list[JSONValue] = []
    warnings: list[str] = []
    for seq, value in sorted(expected.items()):
        last, called = _expected_bound(value)
        if last is None:
            warnings.append(f"{seq}: no source value recorded; not checked")
            continue
        inc_row = target_conn.execute(_SEQUENCE_SQL, {"rel": regclass_literal(seq)}).fetchone()
        if inc_row is None:
            failures.append(f"{seq}: sequence missing on target (source last value {last})")
            checked.append({"sequence": seq.qualified, "source_last_value": last, "target": None})
            continue
        increment = int(inc_row[0])
        row = target_conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(seq.ident)
        ).fetchone()
        assert row is not None
        t_last, t_called = int(row[0]), bool(row[1])
        target_next = t_last + increment if t_called else t_last
        # The first value the source has NOT handed out yet; the target must not hand out anything before it.
        source_next = last + increment if called else last
        ok = target_next >= source_next if increment > 0 else target_next <= source_next
        checked.append(
            {
                "sequence": seq.qualified,
                "source_last_value": last,
                "source_is_called": called,
                "target_last_value": t_last,
                "target_is_called": t_called,
                "target_next_value": target_next,
                "aligned": ok,
            }
        )
        if not ok:
            failures.append(
                f"{seq}: target would hand out {target_next} next, but the source had already reached "
                f"{last}{'' if called else ' (not yet used)'}: new rows would collide with copied ones"
            )
    meta: dict[str, JSONValue] = {"sequences": checked}
    if not failures:
        return CheckOutcome(
            True, f"{plural(len(checked), 'sequence')} aligned with the source", [], meta, warnings
        )
    return CheckOutcome(
        False,
        f"{plural(len(failures), 'sequence')} behind the source: {failures[0]}",
        capped(failures),
        meta,
        warnings,
    )
