"""The verification report: one row per copied table, one outcome per database-level check.

The summary line is what a person reads first ("42/42 tables identical, 0 rows missing"); the Markdown
table is what they scroll; the dict is what the Dagster layer stores as metadata.

"Identical" means identical to the source *at the copy's snapshot*. When the source has been written
to since (a live application), the report says so in the summary line itself, naming the tables that
moved, so that nobody reads "0 rows missing" as "the targets hold what the source holds now".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from dual_db.db.names import TableName
from dual_db.verify.outcome import CheckOutcome, JSONValue, plural

Target = Literal["core", "ai"]


@dataclass(frozen=True)
class TableRow:
    table: TableName
    target: Target
    source_rows: int
    target_rows: int
    checksum_match: bool
    seconds: float

    @property
    def missing(self) -> int:
        return max(self.source_rows - self.target_rows, 0)

    @property
    def extra(self) -> int:
        return max(self.target_rows - self.source_rows, 0)

    @property
    def identical(self) -> bool:
        return self.checksum_match and self.source_rows == self.target_rows

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "table": self.table.qualified,
            "target": self.target,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "missing_rows": self.missing,
            "extra_rows": self.extra,
            "checksum_match": self.checksum_match,
            "identical": self.identical,
            "seconds": round(self.seconds, 3),
        }


# How many moved tables the summary line names (the report lists them all).
_NAMED_IN_SUMMARY = 5


def _md(text: str) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass
class VerificationReport:
    """Per-table rows plus per-database check outcomes (keyed by check name, e.g. "core: schema_parity")."""

    tables: list[TableRow] = field(default_factory=list)
    outcomes: dict[str, CheckOutcome] = field(default_factory=dict)
    # Tables whose source content changed after their copy's snapshot (display names, sorted).
    source_moved: list[str] = field(default_factory=list)

    def add_table(
        self,
        table: TableName,
        target: Target,
        source_rows: int,
        target_rows: int,
        checksum_match: bool,
        seconds: float,
    ) -> TableRow:
        row = TableRow(table, target, source_rows, target_rows, checksum_match, seconds)
        self.tables.append(row)
        return row

    def add_outcome(self, name: str, outcome: CheckOutcome) -> None:
        self.outcomes[name] = outcome

    def set_source_moved(self, tables: Iterable[TableName | str]) -> None:
        """Record which tables changed on the source since their snapshot (the source_drift finding)."""
        self.source_moved = sorted({t.display if isinstance(t, TableName) else t for t in tables})

    @classmethod
    def build(
        cls, tables: Iterable[TableRow] = (), outcomes: Mapping[str, CheckOutcome] | None = None
    ) -> VerificationReport:
        return cls(list(tables), dict(outcomes or {}))

    # ---- totals ------------------------------------------------------------------------------------
    @property
    def identical_tables(self) -> int:
        return sum(1 for t in self.tables if t.identical)

    @property
    def rows_missing(self) -> int:
        return sum(t.missing for t in self.tables)

    @property
    def rows_extra(self) -> int:
        return sum(t.extra for t in self.tables)

    @property
    def passed(self) -> bool:
        """Every table identical and no blocking (ERROR-severity) check failed. WARN checks (source
        drift, soft references) are shown but do not fail the report."""
        return all(t.identical for t in self.tables) and not any(o.blocking for o in self.outcomes.values())

    def summary_line(self) -> str:
        """`42/42 tables identical, 0 rows missing` (`, 3 extra rows` appended when there are any).

        When the source moved since the snapshot: `42/42 tables identical to the snapshot, 0 rows
        missing; the source has moved since: 3 tables changed (a, b, c)`.
        """
        identical = "tables identical to the snapshot" if self.source_moved else "tables identical"
        line = (
            f"{self.identical_tables}/{len(self.tables)} {identical}, "
            f"{plural(self.rows_missing, 'row')} missing"
        )
        if self.rows_extra:
            line += f", {plural(self.rows_extra, 'extra row')}"
        if self.source_moved:
            named = ", ".join(self.source_moved[:_NAMED_IN_SUMMARY])
            if len(self.source_moved) > _NAMED_IN_SUMMARY:
                named += f" and {len(self.source_moved) - _NAMED_IN_SUMMARY} more"
            moved = plural(len(self.source_moved), "table")
            line += f"; the source has moved since: {moved} changed ({named})"
        return line

    # ---- renderings --------------------------------------------------------------------------------
    def to_markdown(self) -> str:
        lines = [f"**{self.summary_line()}**", ""]
        lines += [
            "| table | target | source rows | target rows | missing | extra | checksum | seconds |",
            "|---|---|---:|---:|---:|---:|---|---:|",
        ]
        for t in sorted(self.tables, key=lambda r: (r.target, r.table)):
            lines.append(
                f"| {_md(t.table.display)} | {t.target} | {t.source_rows} | {t.target_rows} | {t.missing} "
                f"| {t.extra} | {'match' if t.checksum_match else '**DIFFERS**'} | {t.seconds:.2f} |"
            )
        if self.outcomes:
            lines += ["", "| check | result | summary |", "|---|---|---|"]
            for name, o in self.outcomes.items():
                result = "pass" if o.passed else ("**FAIL**" if o.severity == "ERROR" else "warn")
                lines.append(f"| {_md(name)} | {result} | {_md(o.summary)} |")
            details = [(n, o) for n, o in self.outcomes.items() if o.failures or o.warnings]
            for name, o in details:
                lines += ["", f"**{_md(name)}**", ""]
                lines += [f"- {_md(f)}" for f in o.failures]
                lines += [f"- (warning) {_md(w)}" for w in o.warnings]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "summary": self.summary_line(),
            "passed": self.passed,
            "tables_total": len(self.tables),
            "tables_identical": self.identical_tables,
            "rows_missing": self.rows_missing,
            "rows_extra": self.rows_extra,
            "source_moved": list(self.source_moved),
            "tables": [t.to_dict() for t in self.tables],
            "checks": {name: o.to_dict() for name, o in self.outcomes.items()},
        }
