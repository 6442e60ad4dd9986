"""VerificationReport and CheckOutcome: summary line, Markdown, JSON, verdict."""

from __future__ import annotations

import json

import pytest

from dual_db.db.names import TableName
from dual_db.verify.outcome import CheckOutcome
from dual_db.verify.report import VerificationReport


def _report(n: int = 42) -> VerificationReport:
    report = VerificationReport()
    for i in range(n):
        report.add_table(
            TableName("public", f"t{i}"), "ai" if i < 3 else "core", 100 + i, 100 + i, True, 0.25
        )
    return report


def test_summary_line_for_a_clean_run() -> None:
    report = _report()
    assert report.summary_line() == "42/42 tables identical, 0 rows missing"
    assert report.passed
    assert report.rows_missing == 0 and report.rows_extra == 0


def test_missing_and_extra_rows_are_summed_per_table_not_netted() -> None:
    report = _report(3)
    report.add_table(TableName("public", "positions"), "core", 1000, 997, False, 1.5)
    report.add_table(TableName("public", "users"), "core", 10, 11, False, 0.1)
    report.add_table(
        TableName("analytics", "Daily|PnL"), "core", 5, 5, False, 0.1
    )  # same count, other content
    assert report.summary_line() == "3/6 tables identical, 3 rows missing, 1 extra row"
    assert report.rows_missing == 3 and report.rows_extra == 1
    assert not report.passed

    markdown = report.to_markdown()
    assert markdown.startswith("**3/6 tables identical, 3 rows missing, 1 extra row**")
    assert "| positions | core | 1000 | 997 | 3 | 0 | **DIFFERS** | 1.50 |" in markdown
    assert '| analytics."Daily\\|PnL" | core | 5 | 5 | 0 | 0 | **DIFFERS** |' in markdown  # pipe escaped

    data = report.to_dict()
    json.dumps(data)
    assert data["rows_missing"] == 3 and data["tables_identical"] == 3 and data["passed"] is False
    row = next(t for t in data["tables"] if t["table"] == "public.positions")  # type: ignore[union-attr,index]
    assert row == {
        "table": "public.positions",
        "target": "core",
        "source_rows": 1000,
        "target_rows": 997,
        "missing_rows": 3,
        "extra_rows": 0,
        "checksum_match": False,
        "identical": False,
        "seconds": 1.5,
    }


def test_database_checks_fail_the_report_only_at_error_severity() -> None:
    report = _report()
    report.add_outcome("core: core_extension_rules", CheckOutcome(True, "core: no pgvector"))
    report.add_outcome(
        "source: source_drift",
        CheckOutcome(False, "source: 1 table changed", ["users: 50 -> 51 rows"], severity="WARN"),
    )
    report.add_outcome(
        "soft_references",
        CheckOutcome(True, "1 soft reference: 2 orphan rows", warnings=["x: 2 orphan rows"]),
    )
    assert report.passed  # warnings do not block a cutover
    markdown = report.to_markdown()
    assert "| source: source_drift | warn | source: 1 table changed |" in markdown
    assert "- users: 50 -> 51 rows" in markdown and "- (warning) x: 2 orphan rows" in markdown

    report.add_outcome("core: schema_parity", CheckOutcome(False, "1 schema difference", ["users: ..."]))
    assert not report.passed
    assert "| core: schema_parity | **FAIL** | 1 schema difference |" in report.to_markdown()
    assert report.to_dict()["checks"]["core: schema_parity"]["passed"] is False  # type: ignore[index,call-overload]


def test_check_outcome_rejects_non_json_metadata_and_multi_line_summaries() -> None:
    from decimal import Decimal

    with pytest.raises(TypeError):
        CheckOutcome(True, "ok", metadata={"value": Decimal("1.5")})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="one line"):
        CheckOutcome(True, "two\nlines")
    outcome = CheckOutcome(False, "bad", ["t: x"], {"n": 1, "names": ["a"]})
    assert outcome.blocking and json.loads(json.dumps(outcome.to_dict()))["metadata"] == {
        "n": 1,
        "names": ["a"],
    }
