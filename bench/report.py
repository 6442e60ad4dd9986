"""Results: `bench/results/<date>[-<label>].json` (every attempt) and `.md` (medians, ratios, steps)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summarize(attempts: list[dict[str, Any]], sources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per scale, per contender: median seconds, MiB/s, peak RSS, verification."""
    out: dict[str, dict[str, Any]] = {}
    for a in attempts:
        scale = f"{a['scale']:g}"
        out.setdefault(scale, {}).setdefault(a["contender"], []).append(a)
    summary: dict[str, dict[str, Any]] = {}
    for scale, by_contender in out.items():
        mib = sources[scale]["table_bytes"] / 2**20
        summary[scale] = {}
        for key, runs in by_contender.items():
            seconds = _median([r["seconds"] for r in runs])
            failures = sorted({f for r in runs for f in r["failures"]})
            summary[scale][key] = {
                "median_seconds": round(seconds, 2),
                "runs": [r["seconds"] for r in runs],
                "mib_per_second": round(mib / seconds, 1) if seconds else None,
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                "peak_pss_mib": max(r.get("peak_pss_mib", 0.0) for r in runs),
                "verified": all(r["verified"] for r in runs),
                "completed": all(r["returncode"] == 0 for r in runs),
                "failures": failures,
            }
        floor = summary[scale].get("floor", {}).get("median_seconds")
        for entry in summary[scale].values():
            entry["x_floor"] = round(entry["median_seconds"] / floor, 2) if floor else None
    return summary


def _steps_table(attempts: list[dict[str, Any]], contender: str, scale: str) -> list[str]:
    runs = [a for a in attempts if a["contender"] == contender and f"{a['scale']:g}" == scale and a["steps"]]
    if not runs:
        return []
    keys: list[str] = []
    for r in runs:
        for s in r["steps"]:
            if s["step"] not in keys:
                keys.append(s["step"])
    lines = [
        f"| step ({contender}, scale {scale}) | starts at s | seconds (median of {len(runs)}) |",
        "|---|---|---|",
    ]
    for key in keys:
        starts = [s["start"] for r in runs for s in r["steps"] if s["step"] == key]
        secs = [s["seconds"] for r in runs for s in r["steps"] if s["step"] == key]
        lines.append(f"| `{key}` | {_median(starts):.2f} | {_median(secs):.2f} |")
    run_s = [r["run_seconds"] for r in runs if r["run_seconds"]]
    total = [r["seconds"] for r in runs]
    if run_s:
        lines.append(f"| the Dagster run (RUN_START to its end) | | {_median(run_s):.2f} |")
        lines.append(
            f"| outside the run (CLI start-up, loading definitions, exit) | | "
            f"{_median(total) - _median(run_s):.2f} |"
        )
    return lines


def markdown(
    attempts: list[dict[str, Any]],
    sources: dict[str, Any],
    extras: dict[str, Any],
    labels: dict[str, str],
    repeats: int,
    notes: list[str],
    title: str,
) -> str:
    summary = summarize(attempts, sources)
    lines = [f"# {title}", ""]
    lines.append(
        f"`make bench`: every contender into empty core and AI databases (three separate embedded "
        "PostgreSQL 18 + pgvector servers), order rotating between repeats, "
        f"median of {repeats}; each result "
        "verified by the bench's own SQL (row counts and content checksums, indexes, constraints, sequences, "
        "the extension rule). Peak RSS: the contender's whole client process tree, servers excluded."
    )
    lines.append("")
    for note in notes:
        lines.append(f"- {note}")
    for scale, entries in summary.items():
        src = sources[scale]
        lines += [
            "",
            f"## Scale {scale}: {src['table_bytes'] / 2**20:.0f} MiB of tables "
            f"({src['heap_bytes'] / 2**20:.0f} MiB without indexes), {src['embeddings']} embeddings, "
            f"{src['rows']} rows",
            "",
            "| contender | median s | MiB/s | peak RSS MiB (PSS) | x floor | verified | runs (s) |",
            "|---|---|---|---|---|---|---|",
        ]

        # The floor first, then by time; a contender that did not complete (non-zero exit) last.
        def order(key: str, entries: dict[str, Any] = entries) -> tuple[bool, bool, float]:
            e = entries[key]
            return (key != "floor", not e.get("completed", True), e["median_seconds"])

        for key, e in sorted(entries.items(), key=lambda kv: order(kv[0])):
            ok = "yes" if e["verified"] else f"**NO** ({len(e['failures'])} failures)"
            if not e.get("completed", True):
                ok += ", did not complete"
            mark = "" if e["verified"] else " ✗"
            x_floor = e["x_floor"] if e["x_floor"] is not None else "-"
            lines.append(
                f"| {labels.get(key, key)} | {e['median_seconds']:.1f}{mark} | {e['mib_per_second']} | "
                f"{e['peak_rss_mib']:.0f} ({e['peak_pss_mib']:.0f}) | {x_floor} | {ok} | "
                f"{', '.join(f'{s:.1f}' for s in e['runs'])} |"
            )
        keys = sorted(entries, key=order)
        lines += [
            "",
            "Ratios (row ÷ column, median seconds):",
            "",
            "| | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        for a in keys:
            cells = [f"{entries[a]['median_seconds'] / entries[b]['median_seconds']:.2f}" for b in keys]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        failed = [(k, e) for k, e in entries.items() if not e["verified"]]
        if failed:
            lines += ["", "Verification failures (✗: the time is shown, but the result is wrong):", ""]
            for key, e in failed:
                for failure in e["failures"][:12]:
                    lines.append(f"- {key}: {failure}")
                if len(e["failures"]) > 12:
                    lines.append(f"- {key}: … and {len(e['failures']) - 12} more (see the JSON)")
        for contender in ("dualdb", "dualdb_nobackup"):
            steps = _steps_table(attempts, contender, scale)
            if steps:
                lines += ["", *steps]
        ex = extras.get(scale)
        if ex:
            lines += [
                "",
                "| also timed (after a fresh migrate) | seconds | of which the Dagster run |",
                "|---|---|---|",
            ]
            if "error" in ex:
                lines.append(f"| {ex['error']} | | |")
            for key, what in (
                ("verify", "`dagster job execute -j verify` (every check, 64-bit row hashes)"),
                (
                    "pgcopydb_compare",
                    "pgcopydb's `compare data` query on both sides, 4 jobs (32-bit row hashes)",
                ),
                ("redo_small", "one-table redo, small"),
                ("redo_large", "one-table redo, large"),
            ):
                if key in ex:
                    e = ex[key]
                    name = what + (f" `{e['asset']}`" if "asset" in e else "")
                    status = "" if e["returncode"] == 0 else f" (exit {e['returncode']})"
                    lines.append(f"| {name} | {e['seconds']:.2f}{status} | {e.get('run_seconds') or '-'} |")
    lines.append("")
    return "\n".join(lines)


def write_reports(
    *,
    attempts: list[dict[str, Any]],
    sources: dict[str, Any],
    extras: dict[str, Any],
    labels: dict[str, str],
    repeats: int,
    notes: list[str],
    label: str,
    results_dir: Path,
    date: str,
) -> dict[str, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = date + (f"-{label}" if label else "")
    data = {
        "date": date,
        "label": label,
        "repeats": repeats,
        "sources": sources,
        "summary": summarize(attempts, sources),
        "extras": extras,
        "notes": notes,
        "attempts": attempts,
    }
    json_path = results_dir / f"{stem}.json"
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    md_path = results_dir / f"{stem}.md"
    title = f"dual-db bench, {date}" + (f" ({label})" if label else "")
    md_path.write_text(markdown(attempts, sources, extras, labels, repeats, notes, title))
    return {"json": json_path, "markdown": md_path}
