"""The one result type every verification check returns.

The Dagster layer turns a `CheckOutcome` into an asset check result 1:1: `passed`, `severity`,
`summary` as the description, `failures`/`warnings` and `metadata` as metadata. So everything in it
is plain JSON (no Decimal, no datetime, no DatabaseUrl) and nothing in it is a password: the checks
only ever put table names, counts, key values and catalog text here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

JSONValue: TypeAlias = "str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None"

Severity = Literal["ERROR", "WARN"]

# A person reads failures in the Dagster UI: beyond this many, the rest are counted, not listed.
MAX_LISTED = 50


@dataclass
class CheckOutcome:
    """What one check found.

    `passed` is the verdict. `severity` says how the orchestrator should treat `passed=False`:
    "ERROR" blocks cutover, "WARN" (source drift, soft references) is shown but does not.
    `failures` are the reasons for `passed=False`, each naming the table; `warnings` are findings that
    did not fail the check (soft-reference orphans when not strict, notes about how it was checked).
    """

    passed: bool
    summary: str
    failures: list[str] = field(default_factory=list)
    metadata: dict[str, JSONValue] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    severity: Severity = "ERROR"

    def __post_init__(self) -> None:
        # Fail at the check, not later in Dagster's serialiser, if a non-JSON value slips in.
        json.dumps(self.metadata, allow_nan=False)
        if "\n" in self.summary:
            raise ValueError("CheckOutcome.summary must be one line")

    @property
    def blocking(self) -> bool:
        """Whether this outcome should stop a cutover."""
        return not self.passed and self.severity == "ERROR"

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "passed": self.passed,
            "severity": self.severity,
            "summary": self.summary,
            "failures": list(self.failures),
            "warnings": list(self.warnings),
            "metadata": self.metadata,
        }


def capped(items: list[str], limit: int = MAX_LISTED) -> list[str]:
    """`items`, with everything past `limit` replaced by one "... and N more" line."""
    if len(items) <= limit:
        return list(items)
    return [*items[:limit], f"... and {len(items) - limit} more"]


def plural(n: int, word: str, plural_word: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural_word or word + 's')}"


def human_bytes(n: int) -> str:
    """`1.2 GB`, `340 kB`: sizes as a person reads them (decimal units, as pg_size_pretty is not)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
