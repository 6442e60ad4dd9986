"""The SQL files shipped with dual-db (`sql/` at the top of the project).

In a checkout or an editable install they are read from `sql/` beside the package; a wheel carries
them inside the package as `dual_db/sql/` (pyproject.toml maps one onto the other), so a plain
`pip install .` finds them too.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def sql_dir() -> Path:
    installed = _PACKAGE / "sql"
    return installed if installed.is_dir() else _PACKAGE.parent / "sql"


def sql_file(*parts: str) -> Path:
    """`sql_file("demo_source", "schema.sql")`: the path of a shipped SQL file (it may not exist)."""
    return sql_dir().joinpath(*parts)
