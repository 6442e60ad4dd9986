"""`make bench`: run every contender into empty targets, verify each, and write the results.

Environment:
  BENCH_SCALES      demo builder scales, comma-separated (default "3.5,10": about 350 MiB and 1 GiB
                    of tables, pg_total_relation_size)
  BENCH_REPEATS     runs per contender and scale; the median is reported (default 3)
  BENCH_CONTENDERS  which contenders (default all): floor,pgcopydb,pgdump,runbook,dualdb,dualdb_nobackup
  BENCH_EXTRAS      1 (default) also times `verify`, pgcopydb's checksum query and one-table redos
  BENCH_SEED        the demo source's seed (default 42)
  BENCH_LABEL       appended to the result file names (e.g. "preliminary")
  BENCH_KEEP_SERVERS  1 leaves the bench's servers running afterwards
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import contenders as C
from bench.procs import Measured, run_measured
from bench.report import write_reports
from bench.servers import (
    BENCH_STATE_DIR,
    bench_cluster,
    conn_uri,
    ensure_pgcopydb,
    pg_bin,
    recreate_targets,
    start,
    write_passfile,
)
from bench.sources import ensure_source
from bench.verifier import expected_from_source, verify
from dual_db.embedded import EmbeddedCluster

ALL_CONTENDERS = ("floor", "pgcopydb", "pgcopydb_asis", "pgdump", "runbook", "dualdb", "dualdb_nobackup")
LABELS = {
    "floor": "floor: psql binary COPY pipes, 2 at a time per target, core and AI at once; post-data "
    "with maintenance_work_mem=1GB",
    "pgcopydb": "pgcopydb 0.10 with filters, one run per target, with the workaround 0.10 needs",
    "pgcopydb_asis": "pgcopydb 0.10 clone with filters, one run per target, as is",
    "pgdump": "pg_dump -Fd -j2, pg_restore -j2 per target (filtered TOC)",
    "runbook": "the hand-run runbook (plain dumps, grep-cleaned schema, psql)",
    "dualdb": "dual-db migrate (backup + copy + checks + report)",
    "dualdb_nobackup": "dual-db migrate without source/full_backup",
}


def say(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", flush=True)


@dataclass
class Attempt:
    contender: str
    scale: float
    repeat: int
    seconds: float
    peak_rss_mib: float
    peak_pss_mib: float
    returncode: int
    verified: bool
    failures: list[str]
    log: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    run_seconds: float | None = None  # dual-db: the Dagster run itself (RUN_START to its end)


@dataclass
class Env:
    cluster: EmbeddedCluster
    state: Path
    passfile: Path
    dagster_home: Path
    dualdb_cwd: Path
    plan_file: Path

    def script_env(self, work: Path, source_url: Any, core: Any, ai: Any) -> dict[str, str]:
        env = {
            "PATH": f"{pg_bin()}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PGPASSFILE": str(self.passfile),
            "PG_CONFIG": str(pg_bin() / "pg_config"),
            "SRC": conn_uri(source_url),
            "CORE": conn_uri(core),
            "AI": conn_uri(ai),
            "WORK": str(work),
        }
        return env

    def dagster_env(self, source_url: Any, core: Any, ai: Any) -> dict[str, str]:
        instance = self.cluster["instance"].url("dagster")
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "DAGSTER_POSTGRES_URL": instance.sqlalchemy_url("psycopg2"),
            "SOURCE_DATABASE_URL": source_url.uri(),
            "CORE_DATABASE_URL": core.uri(),
            "AI_DATABASE_URL": ai.uri(),
            "DUAL_DB_PG_BIN_DIR": str(pg_bin()),
            "DUAL_DB_PLAN_FILE": str(self.plan_file),
        }


def _setup(state: Path) -> Env:
    cluster = bench_cluster(state)
    say(f"starting the bench's servers under {state}/servers (source, core, ai, instance)")
    start(cluster)
    urls = [cluster[r].url() for r in ("source", "core", "ai", "instance")]
    passfile = write_passfile(state / "pgpass", urls)
    dagster_home = state / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(C.REPO_DIR / "dagster.yaml", dagster_home / "dagster.yaml")
    dualdb_cwd = state / "dualdb"
    dualdb_cwd.mkdir(parents=True, exist_ok=True)
    return Env(cluster, state, passfile, dagster_home, dualdb_cwd, C.REPO_DIR / "routing_plan.yaml")


def _selection_without_backup(env: Env, denv: dict[str, str]) -> str:
    code = (
        "from dual_db.definitions import defs\n"
        "keys = defs.resolve_job_def('migrate').asset_layer.selected_asset_keys\n"
        "names = sorted(k.to_user_string() for k in keys)\n"
        "print(','.join(n for n in names if n != 'source/full_backup'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=denv, cwd=env.dualdb_cwd, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def _instance(env: Env) -> Any:
    from dagster import DagsterInstance

    os.environ["DAGSTER_HOME"] = str(env.dagster_home)
    os.environ["DAGSTER_POSTGRES_URL"] = env.cluster["instance"].url("dagster").sqlalchemy_url("psycopg2")
    return DagsterInstance.get()


def step_breakdown(instance: Any) -> tuple[str | None, float | None, list[dict[str, Any]]]:
    """The latest run's steps from the event log: start offset and duration per step key."""
    from dagster import DagsterEventType as E

    runs = instance.get_runs(limit=1)
    if not runs:
        return None, None, []
    run = runs[0]
    starts: dict[str, float] = {}
    steps: list[dict[str, Any]] = []
    run_start = run_end = None
    for record in instance.all_logs(run.run_id):
        event = record.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == E.RUN_START:
            run_start = record.timestamp
        elif kind in (E.RUN_SUCCESS, E.RUN_FAILURE):
            run_end = record.timestamp
        elif kind == E.STEP_START and record.step_key:
            starts[record.step_key] = record.timestamp
        elif kind in (E.STEP_SUCCESS, E.STEP_FAILURE) and record.step_key in starts:
            steps.append(
                {
                    "step": record.step_key,
                    "start": starts[record.step_key],
                    "seconds": round(record.timestamp - starts[record.step_key], 3),
                    "ok": kind == E.STEP_SUCCESS,
                }
            )
    base = run_start or (min(s["start"] for s in steps) if steps else 0.0)
    for s in steps:
        s["start"] = round(s["start"] - base, 3)
    run_seconds = round(run_end - run_start, 3) if run_start and run_end else None
    return run.run_id, run_seconds, sorted(steps, key=lambda s: s["start"])


def run_contender(
    key: str,
    scale: float,
    repeat: int,
    env: Env,
    source: Any,
    prep: C.Prepared,
    expected: Any,
    results_dir: Path,
    selection: str | None,
    instance: Any,
) -> Attempt:
    core, ai = recreate_targets(env.cluster)
    work = env.state / "work" / key
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = env.state / "logs" / f"s{scale:g}-r{repeat}-{key}.log"
    if key.startswith("dualdb"):
        dagster = str(Path(sys.executable).parent / "dagster")
        script = C.dualdb_script(dagster, selection if key == "dualdb_nobackup" else None)
        shutil.rmtree(env.dualdb_cwd / ".dual_db", ignore_errors=True)  # old backups: disk, not time
        run_env = env.dagster_env(source.url, core, ai)
        cwd = env.dualdb_cwd
    else:
        script = {
            "floor": lambda: C.floor_script(prep),
            "pgcopydb": lambda: C.pgcopydb_script(prep),
            "pgcopydb_asis": lambda: C.pgcopydb_script(prep, workaround=False),
            "pgdump": lambda: C.pgdump_script(prep),
            "runbook": lambda: C.runbook_script(prep, [t for t in C.PLAN_CORE_TABLES]),
        }[key]()
        run_env = {**env.script_env(work, source.url, core, ai), "LOGS": str(log.parent / log.stem)}
        (log.parent / log.stem).mkdir(parents=True, exist_ok=True)
        cwd = work
    script_file = env.state / "scripts" / f"{key}.sh"
    script_file.parent.mkdir(parents=True, exist_ok=True)
    script_file.write_text(script)
    say(f"scale {scale:g} run {repeat + 1}: {key} ...")
    measured: Measured = run_measured(["bash", str(script_file)], log=log, env=run_env, cwd=cwd)
    verdicts = verify(core, ai, expected)
    failures = [f"{v.target}: {f}" for v in verdicts for f in v.failures]
    if measured.returncode != 0:
        failures.insert(0, f"exit status {measured.returncode} (log: {log})")
    steps: list[dict[str, Any]] = []
    run_seconds = None
    if key.startswith("dualdb"):
        _run_id, run_seconds, steps = step_breakdown(instance)
    shutil.rmtree(work, ignore_errors=True)
    attempt = Attempt(
        contender=key,
        scale=scale,
        repeat=repeat,
        seconds=round(measured.seconds, 2),
        peak_rss_mib=round(measured.peak_rss_bytes / 2**20, 1),
        peak_pss_mib=round(measured.peak_pss_bytes / 2**20, 1),
        returncode=measured.returncode,
        verified=not failures,
        failures=failures,
        log=str(log),
        steps=steps,
        run_seconds=run_seconds,
    )
    say(
        f"  {key}: {attempt.seconds:.1f} s, peak RSS {attempt.peak_rss_mib:.0f} MiB "
        f"(PSS {attempt.peak_pss_mib:.0f} MiB), "
        + ("verified" if attempt.verified else f"FAILED verification ({len(failures)}): {failures[:3]}")
    )
    return attempt


def extras(env: Env, source: Any, prep: C.Prepared, expected: Any, instance: Any) -> dict[str, Any]:
    """`verify` alone vs pgcopydb's checksum comparison, and one-table redos, after a fresh migrate."""
    core, ai = recreate_targets(env.cluster)
    denv = env.dagster_env(source.url, core, ai)
    dagster = str(Path(sys.executable).parent / "dagster")
    logs = env.state / "logs"
    out: dict[str, Any] = {}
    say("extras: a migrate to verify against ...")
    m = run_measured(
        [dagster, "job", "execute", "-m", "dual_db.definitions", "-j", "migrate"],
        log=logs / "extras-migrate.log",
        env=denv,
        cwd=env.dualdb_cwd,
    )
    if m.returncode != 0:
        return {"error": f"migrate failed (log {m.log})"}
    m = run_measured(
        [dagster, "job", "execute", "-m", "dual_db.definitions", "-j", "verify"],
        log=logs / "extras-verify.log",
        env=denv,
        cwd=env.dualdb_cwd,
    )
    _rid, run_s, steps = step_breakdown(instance)
    out["verify"] = {
        "seconds": round(m.seconds, 2),
        "run_seconds": run_s,
        "returncode": m.returncode,
        "peak_rss_mib": round(m.peak_rss_bytes / 2**20, 1),
        "steps": steps,
    }
    senv = env.script_env(env.state, source.url, core, ai)
    pairs = [f"{conn_uri(core)}:{','.join(prep.core_tables)}", f"{conn_uri(ai)}:{','.join(prep.ai_tables)}"]
    m = run_measured(
        [sys.executable, "-m", "bench.pgcopydb_compare", conn_uri(source.url), "4", *pairs],
        log=logs / "extras-pgcopydb-compare.log",
        env={**senv, "PYTHONPATH": str(C.REPO_DIR)},
        cwd=C.REPO_DIR,
    )
    out["pgcopydb_compare"] = {
        "seconds": round(m.seconds, 2),
        "returncode": m.returncode,
        "jobs": 4,
        "peak_rss_mib": round(m.peak_rss_bytes / 2**20, 1),
    }
    for label, table in (("small", "core/alembic_version"), ("large", f"core/{prep.core_tables[0]}")):
        m = run_measured(
            [dagster, "asset", "materialize", "-m", "dual_db.definitions", "--select", table],
            log=logs / f"extras-redo-{label}.log",
            env=denv,
            cwd=env.dualdb_cwd,
        )
        _rid, run_s, steps = step_breakdown(instance)
        out[f"redo_{label}"] = {
            "asset": table,
            "seconds": round(m.seconds, 2),
            "run_seconds": run_s,
            "returncode": m.returncode,
            "steps": steps,
        }
    for key, value in out.items():
        say(
            f"  {key}: {value.get('seconds')} s"
            + (f" (run {value['run_seconds']} s)" if value.get("run_seconds") else "")
        )
    return out


def main() -> int:
    scales = [float(s) for s in os.environ.get("BENCH_SCALES", "3.5,10").split(",") if s.strip()]
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    chosen = [
        c.strip()
        for c in os.environ.get("BENCH_CONTENDERS", ",".join(ALL_CONTENDERS)).split(",")
        if c.strip()
    ]
    unknown = sorted(set(chosen) - set(ALL_CONTENDERS))
    if unknown:
        print(f"bench: unknown contenders {unknown}; known: {', '.join(ALL_CONTENDERS)}", file=sys.stderr)
        return 2
    seed = int(os.environ.get("BENCH_SEED", "42"))
    do_extras = os.environ.get("BENCH_EXTRAS", "1") == "1"
    label = os.environ.get("BENCH_LABEL", "")
    state = (C.REPO_DIR / BENCH_STATE_DIR).absolute()
    notes: list[str] = []
    if any(c.startswith("pgcopydb") for c in chosen):
        found, how = ensure_pgcopydb()
        say(f"pgcopydb: {how}")
        if found is None:
            print(f"bench: {how}", file=sys.stderr)
            print("bench: pgcopydb is left out of this run", file=sys.stderr)
            notes.append(how)
            chosen = [c for c in chosen if not c.startswith("pgcopydb")]
    env = _setup(state)
    instance = _instance(env) if any(c.startswith("dualdb") for c in chosen) or do_extras else None
    attempts: list[Attempt] = []
    sources: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    date = dt.datetime.now(dt.UTC).date().isoformat()

    def save() -> dict[str, Path]:
        # After every attempt: an interrupted bench still leaves what it measured.
        return write_reports(
            attempts=[asdict(a) for a in attempts],
            sources=sources,
            extras=extra,
            labels=LABELS,
            repeats=repeats,
            notes=notes,
            label=label,
            results_dir=C.REPO_DIR / "bench" / "results",
            date=date,
        )

    for scale in scales:
        source = ensure_source(env.cluster["source"], scale, seed, say)
        say(
            f"source at scale {scale:g}: {source.table_bytes / 2**20:.0f} MiB of tables "
            f"({source.heap_bytes / 2**20:.0f} MiB without indexes), {source.embeddings} embeddings, "
            f"{source.rows} rows"
        )
        sources[f"{scale:g}"] = {k: v for k, v in asdict(source).items() if k != "url"}
        prep = C.prepare(
            source.url, C.load_routing(env.plan_file), env.state / "prep" / f"s{scale:g}", pg_bin()
        )
        expected = expected_from_source(source.url, C.load_routing(env.plan_file), prep.dir / "expected.json")
        selection = None
        if "dualdb_nobackup" in chosen:
            selection = _selection_without_backup(
                env, env.dagster_env(source.url, *recreate_targets(env.cluster))
            )
        for repeat in range(repeats):
            shift = repeat % len(chosen)
            for key in chosen[shift:] + chosen[:shift]:
                attempts.append(
                    run_contender(
                        key,
                        scale,
                        repeat,
                        env,
                        source,
                        prep,
                        expected,
                        state / "results",
                        selection,
                        instance,
                    )
                )
                save()
        if do_extras:
            extra[f"{scale:g}"] = extras(env, source, prep, expected, instance)
            save()
    recreate_targets(env.cluster)
    paths = save()
    if os.environ.get("BENCH_KEEP_SERVERS") != "1":
        say("stopping the bench's servers (BENCH_KEEP_SERVERS=1 keeps them; the sources stay cached)")
        env.cluster.down()
    print(paths["markdown"].read_text())
    say(f"results: {paths['json']} and {paths['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
