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
    assert (
        "| **DIFFERS** | positions | core | 1,000 | 997 | 3 | 0 | 0 B | 665 | 0.00 | 0.00 | 1.50 |"
        in markdown
    )
    assert '| **DIFFERS** | analytics."Daily\\|PnL" | core | 5 | 5 | 0 | 0 |' in markdown  # pipe escaped

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
        "size_bytes": 0,
        "size": "0 B",
        "rows_per_second": 664.7,
        "seconds": 1.5,
        "copy_seconds": 0.0,
        "fingerprint_seconds": 0.0,
    }


def test_failing_tables_come_first_with_sizes_speed_and_where_the_seconds_went() -> None:
    """The summary, then the failing tables named, then every table with the failing ones on top:
    sizes in human units, rows/s of the COPY, the COPY's and the fingerprints' seconds apart."""
    report = VerificationReport()
    for name in ("accounts", "orders", "users"):
        report.add_table(
            TableName("public", name),
            "core",
            2_000_000,
            2_000_000,
            True,
            5.0,
            size_bytes=1_234_567_890,
            copy_seconds=4.0,
            fingerprint_seconds=1.0,
        )
    report.add_table(TableName("public", "ai_docs"), "ai", 10, 10, True, 0.5, size_bytes=4096)
    report.add_table(TableName("public", "zeta"), "core", 100, 90, False, 0.2, size_bytes=81920)
    report.add_table(TableName("public", "beta"), "core", 100, 100, False, 0.2, size_bytes=8192)
    report.add_outcome("core: schema_parity", CheckOutcome(True, "same schema"))
    report.add_outcome("ai: ai_extension_rules", CheckOutcome(False, "no HNSW index", ["ai_docs: none"]))

    rows = report.display_rows()
    assert [r["table"] for r in rows] == ["beta", "zeta", "ai_docs", "accounts", "orders", "users"]
    assert rows[0]["status"] == "FAILED: content differs"
    assert rows[1]["status"] == "FAILED: 10 rows missing" and rows[2]["status"] == "identical"
    accounts = rows[3]
    assert accounts["size"] == "1.2 GB" and accounts["rows_per_s"] == 500_000
    assert (accounts["copy_s"], accounts["fingerprint_s"], accounts["total_s"]) == (4.0, 1.0, 5.0)
    assert rows[1]["size"] == "81.9 kB"

    markdown = report.to_markdown()
    lines = markdown.splitlines()
    assert lines[0] == "**4/6 tables identical, 10 rows missing**"
    assert lines[2] == "**Failing tables (2):** beta (core: content differs); zeta (core: 10 rows missing)"
    assert lines[4] == "**Checks that did not pass:** ai: ai_extension_rules"
    table_lines = [line for line in lines if line.startswith(("| **DIFFERS** |", "| identical |"))]
    assert len(table_lines) == 6
    assert table_lines[0].startswith("| **DIFFERS** | beta |")
    assert (
        "| identical | accounts | core | 2,000,000 | 2,000,000 | 0 | 0 "
        "| 1.2 GB | 500,000 | 4.00 | 1.00 | 5.00 |" in markdown
    )
    checks = [line for line in lines if line.startswith("| ai: ") or line.startswith("| core: ")]
    assert checks[0].startswith("| ai: ai_extension_rules | **FAIL** |")
    assert [t["table"] for t in report.to_dict()["tables"]][:2] == ["public.beta", "public.zeta"]  # type: ignore[index,union-attr]
    assert report.to_dict()["failing_tables"] == ["public.beta", "public.zeta"]


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


def test_objects_accepted_across_the_split_are_named_in_the_summary_markdown_and_json() -> None:
    report = _report(2)
    report.set_accepted(
        [
            (
                "TRIGGER public.orders.orders_to_ai",
                "TRIGGER public.orders.orders_to_ai (core) uses …: left out",
            ),
            (
                "VIEW public.order_events",
                "VIEW public.order_events (core) uses AI table public.ai_events: left out",
            ),
            (
                "TRIGGER public.orders.orders_to_ai",
                "TRIGGER public.orders.orders_to_ai (core) uses …: left out",
            ),
        ]
    )
    assert report.summary_line() == (
        "2/2 tables identical, 0 rows missing; accepted in the plan across the split: 2 objects left "
        "out or copied into both (TRIGGER public.orders.orders_to_ai, VIEW public.order_events)"
    )
    assert report.passed  # the plan decided it: said, not failed
    assert "uses AI table public.ai_events: left out" in report.to_markdown()
    accepted = json.loads(json.dumps(report.to_dict()))["accepted_across_split"]
    assert [a["object"] for a in accepted] == [
        "TRIGGER public.orders.orders_to_ai",
        "VIEW public.order_events",
    ]
