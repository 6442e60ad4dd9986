"""The verification report: one row per copied table, one outcome per database-level check.

The summary line is what a person reads first ("42/42 tables identical, 0 rows missing"); then the
failing tables, named; then every table, failing ones first, with its size, its COPY speed and which
of its seconds went to the COPY and which to the fingerprints. `display_rows` is that table as plain
values (the Dagster layer shows it inline), the Markdown and the dict carry the same order.

"Identical" means identical to the source *at the copy's snapshot*. When the source has been written
to since (a live application), the report says so in the summary line itself, naming the tables that
moved, so that nobody reads "0 rows missing" as "the targets hold what the source holds now".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from dual_db.db.names import TableName
from dual_db.verify.outcome import CheckOutcome, JSONValue, human_bytes, plural

Target = Literal["core", "ai"]


@dataclass(frozen=True)
class TableRow:
    table: TableName
    target: Target
    source_rows: int
    target_rows: int
    checksum_match: bool
    seconds: float  # the whole table step: fingerprints and COPY
    size_bytes: int = 0  # the target table after the load
    copy_seconds: float = 0.0  # the COPY stream alone (0.0 when not recorded)
    fingerprint_seconds: float = 0.0  # source and target fingerprints

    @property
    def rows_per_second(self) -> float:
        seconds = self.copy_seconds or self.seconds
        return self.target_rows / seconds if seconds > 0 else float(self.target_rows)

    @property
    def problem(self) -> str:
        """What is wrong with this table, in a few words ("" when identical)."""
        if self.identical:
            return ""
        parts = []
        if self.missing:
            parts.append(f"{plural(self.missing, 'row')} missing")
        if self.extra:
            parts.append(plural(self.extra, "extra row"))
        return ", ".join(parts) or "content differs"

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
            "size_bytes": self.size_bytes,
            "size": human_bytes(self.size_bytes),
            "rows_per_second": round(self.rows_per_second, 1),
            "seconds": round(self.seconds, 3),
            "copy_seconds": round(self.copy_seconds, 3),
            "fingerprint_seconds": round(self.fingerprint_seconds, 3),
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
    # Objects reaching across the split that the routing plan accepted (`accept_across_split`): left
    # out of the targets, or a sequence copied into both. "KIND name" each; `accepted_details` says why.
    accepted: list[str] = field(default_factory=list)
    accepted_details: list[str] = field(default_factory=list)
    # Steps of the report's run that failed (a guard, the schema, a table): the run verified less.
    failed_steps: list[str] = field(default_factory=list)

    def add_table(
        self,
        table: TableName,
        target: Target,
        source_rows: int,
        target_rows: int,
        checksum_match: bool,
        seconds: float,
        *,
        size_bytes: int = 0,
        copy_seconds: float = 0.0,
        fingerprint_seconds: float = 0.0,
    ) -> TableRow:
        row = TableRow(
            table,
            target,
            source_rows,
            target_rows,
            checksum_match,
            seconds,
            size_bytes=size_bytes,
            copy_seconds=copy_seconds,
            fingerprint_seconds=fingerprint_seconds,
        )
        self.tables.append(row)
        return row

    def add_outcome(self, name: str, outcome: CheckOutcome) -> None:
        self.outcomes[name] = outcome

    def set_source_moved(self, tables: Iterable[TableName | str]) -> None:
        """Record which tables changed on the source since their snapshot (the source_drift finding)."""
        self.source_moved = sorted({t.display if isinstance(t, TableName) else t for t in tables})

    def set_accepted(self, objects: Iterable[tuple[str, str]]) -> None:
        """Record what the plan accepted across the split: (`KIND name`, detail) pairs, each once."""
        seen = dict(objects)
        self.accepted = sorted(seen)
        self.accepted_details = [seen[name] for name in self.accepted]

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
    def failing_tables(self) -> list[TableRow]:
        return [t for t in self.ordered_tables() if not t.identical]

    @property
    def failing_checks(self) -> list[str]:
        """The checks that did not pass, ERROR ones first."""
        failed = [(n, o) for n, o in self.outcomes.items() if not o.passed]
        return [n for n, o in sorted(failed, key=lambda item: item[1].severity != "ERROR")]

    def ordered_tables(self) -> list[TableRow]:
        """Failing tables first, then the rest; each part by target and name."""
        return sorted(self.tables, key=lambda r: (r.identical, r.target, r.table))

    def ordered_outcomes(self) -> list[tuple[str, CheckOutcome]]:
        """Failed checks first (ERROR before WARN), then the passed ones, each in the order added."""
        rank = {n: i for i, n in enumerate(self.failing_checks)}
        return sorted(self.outcomes.items(), key=lambda item: rank.get(item[0], len(rank)))

    def display_rows(self) -> list[dict[str, str | int | float]]:
        """Every table as a person reads it, failing ones first: what the UI shows inline."""
        return [
            {
                "status": "identical" if t.identical else f"FAILED: {t.problem}",
                "table": t.table.display,
                "target": t.target,
                "source_rows": t.source_rows,
                "target_rows": t.target_rows,
                "size": human_bytes(t.size_bytes),
                "rows_per_s": round(t.rows_per_second),
                "copy_s": round(t.copy_seconds, 2),
                "fingerprint_s": round(t.fingerprint_seconds, 2),
                "total_s": round(t.seconds, 2),
            }
            for t in self.ordered_tables()
        ]

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
        if self.accepted:
            # Not a failure (the plan decided it), but what the application will miss: said up front.
            named = ", ".join(self.accepted[:_NAMED_IN_SUMMARY])
            if len(self.accepted) > _NAMED_IN_SUMMARY:
                named += f" and {len(self.accepted) - _NAMED_IN_SUMMARY} more"
            line += (
                f"; accepted in the plan across the split: {plural(len(self.accepted), 'object')} "
                f"left out or copied into both ({named})"
            )
        if self.failed_steps:
            line += f"; {plural(len(self.failed_steps), 'step')} failed ({', '.join(self.failed_steps)})"
        return line

    # ---- renderings --------------------------------------------------------------------------------
    def to_markdown(self) -> str:
        """The summary; what failed (tables, then checks), named; every table, failing ones first;
        every check, failed ones first; the details of each finding."""
        lines = [f"**{self.summary_line()}**", ""]
        failing = self.failing_tables
        if failing:
            lines.append(
                f"**Failing tables ({len(failing)}):** "
                + "; ".join(f"{_md(t.table.display)} ({t.target}: {t.problem})" for t in failing)
            )
            lines.append("")
        if self.failing_checks:
            named = [n if self.outcomes[n].blocking else f"{n} (warning)" for n in self.failing_checks]
            lines.append(f"**Checks that did not pass:** {_md(', '.join(named))}")
            lines.append("")
        if self.accepted:
            lines.append(
                f"**Accepted in the plan across the split ({len(self.accepted)}):** "
                + "; ".join(_md(d) for d in self.accepted_details)
            )
            lines.append("")
        lines += [
            "| status | table | target | source rows | target rows | missing | extra | size | rows/s "
            "| copy s | fingerprint s | total s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t in self.ordered_tables():
            status = "identical" if t.identical else "**DIFFERS**"
            lines.append(
                f"| {status} | {_md(t.table.display)} | {t.target} | {t.source_rows:,} | {t.target_rows:,} "
                f"| {t.missing:,} | {t.extra:,} | {human_bytes(t.size_bytes)} | {t.rows_per_second:,.0f} "
                f"| {t.copy_seconds:.2f} | {t.fingerprint_seconds:.2f} | {t.seconds:.2f} |"
            )
        lines += [
            "",
            "*copy s*: the COPY stream (empty, load, commit); *fingerprint s*: hashing the source at the "
            "snapshot and the target after the load; *rows/s*: rows over copy seconds; *size*: the "
            "target table after the load, without indexes.",
        ]
        if self.outcomes:
            lines += ["", "| check | result | summary |", "|---|---|---|"]
            for name, o in self.ordered_outcomes():
                result = "pass" if o.passed else ("**FAIL**" if o.severity == "ERROR" else "warn")
                lines.append(f"| {_md(name)} | {result} | {_md(o.summary)} |")
            details = [(n, o) for n, o in self.ordered_outcomes() if o.failures or o.warnings]
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
            "failing_tables": [t.table.qualified for t in self.failing_tables],
            "failing_checks": self.failing_checks,
            "source_moved": list(self.source_moved),
            "accepted_across_split": [
                {"object": name, "detail": detail}
                for name, detail in zip(self.accepted, self.accepted_details, strict=True)
            ],
            "failed_steps": list(self.failed_steps),
            "tables": [t.to_dict() for t in self.ordered_tables()],
            "checks": {name: o.to_dict() for name, o in self.ordered_outcomes()},
        }
