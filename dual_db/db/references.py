"""Soft references: references between a core table and an AI table, which no foreign key can enforce
once the two live in different databases (e.g. `ai_feedback.message_id -> agent_messages.id`).

They come from two places, as one type: foreign keys the schema split had to remove (named by their
constraint, with the statement that declared them), and the routing plan's `soft_references`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dual_db.db.names import TableName


@dataclass(frozen=True)
class SoftReference:
    """MATCH SIMPLE: rows with a NULL in `from_columns` reference nothing."""

    name: str  # the removed constraint's name, or a description for the plan's references
    from_table: TableName
    from_columns: tuple[str, ...]
    to_table: TableName
    to_columns: tuple[str, ...]
    from_database: str | None = None  # "core" or "ai", where known
    definition: str | None = None  # the statement that declared it, for a removed foreign key

    def __post_init__(self) -> None:
        if not self.from_columns or len(self.from_columns) != len(self.to_columns):
            raise ValueError(f"soft reference {self.name}: from_columns and to_columns must pair up")

    def describe(self) -> str:
        frm, to = ", ".join(self.from_columns), ", ".join(self.to_columns)
        return f"{self.from_table}({frm}) -> {self.to_table}({to})"
