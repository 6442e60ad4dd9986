"""The contenders, each a shell script run into empty core and AI databases.

Everything a contender needs that is not part of what it does (the source's schema split into the
two targets' files, the lists of tables, pgcopydb's filter files) is prepared once per source,
before any clock starts (`prepare`). Scripts reach the servers through a libpq passfile: no
password on a command line. What is timed is the script, start to end.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.servers import connect
from dual_db.db.names import TableName
from dual_db.db.sql_files import sql_file
from dual_db.db.urls import DatabaseUrl
from dual_db.demo.source import CORE_TABLES
from dual_db.schema.dump import dump_schema_sections
from dual_db.schema.split import split_schema

BENCH_DIR = Path(__file__).resolve().parent
# The runbook's own list of core tables (it leaves out alembic_version, which it re-creates by hand).
PLAN_CORE_TABLES = [t for t in CORE_TABLES if t != "alembic_version"]
REPO_DIR = BENCH_DIR.parent


@dataclass(frozen=True)
class Prepared:
    """Per-source files under `dir`, and the tables of each target, largest first."""

    dir: Path
    core_tables: list[str]
    ai_tables: list[str]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_routing(plan_file: Path) -> dict[str, str]:
    import yaml

    plan = yaml.safe_load(plan_file.read_text())
    routing = {str(t): "core" for t in plan.get("core") or []}
    routing.update({str(t): "ai" for t in plan.get("ai") or []})
    return routing


def prepare(source: DatabaseUrl, routing: dict[str, str], prep_dir: Path, bin_dir: Path) -> Prepared:
    prep_dir.mkdir(parents=True, exist_ok=True)
    with connect(source) as conn:
        sizes = dict(
            conn.execute(
                "SELECT relname, pg_table_size(oid) FROM pg_class"
                " WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
            ).fetchall()
        )
        objects: dict[str, dict[str, list[str]]] = {t: {} for t in ("core", "ai")}
        for target in objects:
            tables = sorted(t for t, where in routing.items() if where == target)
            objects[target]["tables"] = tables
            objects[target]["indexes"] = [
                str(r[0])
                for r in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY(%s)",
                    (tables,),
                ).fetchall()
            ]
            objects[target]["sequences"] = [
                str(r[0])
                for r in conn.execute(
                    "SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid"
                    " AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass"
                    " AND d.deptype IN ('a', 'i') JOIN pg_class t ON t.oid = d.refobjid"
                    " WHERE s.relkind = 'S' AND t.relname = ANY(%s)",
                    (tables,),
                ).fetchall()
            ]
    (prep_dir / "objects.json").write_text(json.dumps(objects, indent=1))

    def by_size(target: str) -> list[str]:
        return sorted((t for t, w in routing.items() if w == target), key=lambda t: -int(sizes.get(t, 0)))

    core_tables, ai_tables = by_size("core"), by_size("ai")
    # dual-db's own schema split (pglast), for the floor's pre-data and post-data.
    sections = dump_schema_sections(source, bin_dir=bin_dir)
    split = split_schema(sections.pre_data, sections.post_data, [TableName("public", t) for t in ai_tables])
    for name, text in (
        ("core_pre.sql", split.core_pre),
        ("core_post.sql", split.core_post),
        ("ai_pre.sql", split.ai_pre),
        ("ai_post.sql", split.ai_post),
    ):
        (prep_dir / name).write_text(text)
    # The floor's copy commands: one pipe per table, source to target, binary COPY.
    for target, tables, var in (("core", core_tables, "CORE"), ("ai", ai_tables, "AI")):
        lines = []
        for table in tables:
            qualified = f"public.{_quote_ident(table)}"
            out = shlex.quote(f"\\copy {qualified} TO STDOUT (FORMAT binary)")
            into = shlex.quote(f"\\copy {qualified} FROM STDIN (FORMAT binary)")
            lines.append(
                f'psql -X -q -d "$SRC" -c {out} | psql -X -q -v ON_ERROR_STOP=1 -d "${var}" -c {into}'
            )
        (prep_dir / f"floor_{target}_copy.txt").write_text("\n".join(lines) + "\n")
        # pgcopydb 0.10's filter file: the tables of this target only.
        (prep_dir / f"pgcopydb_{target}.ini").write_text(
            "[include-only-table]\n" + "".join(f"public.{t}\n" for t in tables)
        )
    # Every sequence's position, as setval() statements that skip a sequence the target lacks.
    (prep_dir / "setval_query.sql").write_text(
        "SELECT format('SELECT pg_catalog.setval(to_regclass(%L), %s, %s);',"
        " quote_ident(schemaname) || '.' || quote_ident(sequencename),"
        " coalesce(last_value, start_value), (last_value IS NOT NULL)::text)"
        " FROM pg_sequences WHERE schemaname = 'public';\n"
    )
    return Prepared(prep_dir, core_tables, ai_tables)


# ---- the scripts -------------------------------------------------------------------------------------
_HEADER = """#!/bin/bash
# Generated by bench/contenders.py: {label}
cd "$WORK"
"""

_WAIT_ALL = """
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ "$status" = 0 ] || exit 1
pids=()
"""


def floor_script(prep: Prepared) -> str:
    """The floor: raw binary COPY pipes (psql to psql), 2 tables at a time per target, core and AI at
    once, after the pre-data; then sequence positions, then the post-data (indexes, constraints, the
    HNSW index) with maintenance_work_mem = 1GB, both targets at once."""
    p = prep.dir
    return (
        _HEADER.format(label="floor")
        + f"""set -uo pipefail
pids=()
psql -X -q -v ON_ERROR_STOP=1 -d "$CORE" -f {p}/core_pre.sql > /dev/null & pids+=($!)
psql -X -q -v ON_ERROR_STOP=1 -d "$AI" -f {p}/ai_pre.sql > /dev/null & pids+=($!)
{_WAIT_ALL}
xargs -d '\\n' -P 2 -n 1 bash -o pipefail -c < {p}/floor_core_copy.txt & pids+=($!)
xargs -d '\\n' -P 2 -n 1 bash -o pipefail -c < {p}/floor_ai_copy.txt & pids+=($!)
{_WAIT_ALL}
psql -X -q -At -v ON_ERROR_STOP=1 -d "$SRC" -f {p}/setval_query.sql > setval.sql || exit 1
psql -X -q -v ON_ERROR_STOP=1 -d "$CORE" -f setval.sql > /dev/null & pids+=($!)
psql -X -q -v ON_ERROR_STOP=1 -d "$AI" -f setval.sql > /dev/null & pids+=($!)
{_WAIT_ALL}
export PGOPTIONS="-c maintenance_work_mem=1GB"
psql -X -q -v ON_ERROR_STOP=1 -d "$CORE" -f {p}/core_post.sql > /dev/null & pids+=($!)
psql -X -q -v ON_ERROR_STOP=1 -d "$AI" -f {p}/ai_post.sql > /dev/null & pids+=($!)
{_WAIT_ALL}
"""
    )


def pgcopydb_script(prep: Prepared, workaround: bool = True) -> str:
    """pgcopydb 0.10 (Debian's), one run per target with a filter file, both targets at once, 2 table
    jobs and 2 index jobs each. Core skips extensions (else it installs pgvector there).

    As is (`workaround=False`), 0.10 fails both runs while restoring the pre-data, because its table
    filter does not filter everything that belongs to an excluded table:
    - core: `COMMENT ON COLUMN public.ai_feedback.message_id` (a comment on an excluded AI table);
    - AI: `ALTER TABLE public.batch_run_tracking ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY`
      (the identity sequence of an excluded core table).
    The workaround timed: core with `--no-comments` (the comments are lost); AI with its pre-data
    done by hand (`CREATE EXTENSION vector`, `pg_dump --section=pre-data -t <the AI tables> | psql`),
    then `pgcopydb copy data` (COPY, indexes, constraints, sequences) with the same filter.
    Each pgcopydb runs under `setsid`: when it fails it kills its whole process group.
    """
    p = prep.dir
    ai_tables = " ".join(f"-t {shlex.quote(t)}" for t in prep.ai_tables)
    if workaround:
        core_extra = "--skip-extensions --no-comments"
        ai = f"""(psql -X -q -v ON_ERROR_STOP=1 -d "$AI" -c "CREATE EXTENSION vector" \
  && pg_dump -d "$SRC" --section=pre-data --no-owner --no-acl {ai_tables} \
     | psql -X -q -v ON_ERROR_STOP=1 -d "$AI" > /dev/null \
  && setsid pgcopydb copy data --source "$SRC" --target "$AI" --dir "$WORK/pgcopydb-ai" \
     --filters {p}/pgcopydb_ai.ini --table-jobs 2 --index-jobs 2) \\
  > "$LOGS/pgcopydb-ai.log" 2>&1 & pids+=($!)"""
    else:
        core_extra = "--skip-extensions"
        ai = f"""setsid pgcopydb clone --source "$SRC" --target "$AI" --dir "$WORK/pgcopydb-ai" \
    --filters {p}/pgcopydb_ai.ini "${{common[@]}}" > "$LOGS/pgcopydb-ai.log" 2>&1 & pids+=($!)"""
    return (
        _HEADER.format(label="pgcopydb" + (" (0.10 workaround)" if workaround else " as is"))
        + f"""set -uo pipefail
pids=()
common=(--table-jobs 2 --index-jobs 2 --no-owner --no-acl)
setsid pgcopydb clone --source "$SRC" --target "$CORE" --dir "$WORK/pgcopydb-core" \
    --filters {p}/pgcopydb_core.ini {core_extra} "${{common[@]}}" \\
    > "$LOGS/pgcopydb-core.log" 2>&1 & pids+=($!)
{ai}
status=0
for pid in "${{pids[@]}}"; do wait "$pid" || status=1; done
grep -a -h -E "ERROR|FATAL" "$LOGS/pgcopydb-core.log" "$LOGS/pgcopydb-ai.log" | head -20
exit $status
"""
    )


def pgdump_script(prep: Prepared) -> str:
    """`pg_dump -Fd -j2` of the source, then `pg_restore -j2` into each target at once, each restoring
    only its own objects through a filtered table of contents (`pg_restore -l` / `-L`). A per-target
    `pg_dump -t` cannot do it: it leaves out the enum types and functions the tables depend on."""
    p = prep.dir
    py = shlex.quote(sys.executable)
    return (
        _HEADER.format(label="pg_dump -j2 / pg_restore -j2")
        + f"""set -uo pipefail
pids=()
pg_dump -d "$SRC" -Fd -j 2 --no-owner --no-acl -f "$WORK/dump" || exit 1
pg_restore -l "$WORK/dump" > toc.list || exit 1
{py} -I {BENCH_DIR}/toc_filter.py core {p}/objects.json < toc.list > core.list || exit 1
{py} -I {BENCH_DIR}/toc_filter.py ai {p}/objects.json < toc.list > ai.list || exit 1
pg_restore -d "$CORE" -j 2 -L core.list --no-owner --no-acl --exit-on-error "$WORK/dump" & pids+=($!)
pg_restore -d "$AI" -j 2 -L ai.list --no-owner --no-acl --exit-on-error "$WORK/dump" & pids+=($!)
{_WAIT_ALL}
"""
    )


# The runbook's step re-creating alembic_version: shell text, the revision read with `psql -t`
# (which keeps the leading space of the aligned output) and put into the INSERT by the shell.
_RUNBOOK_ALEMBIC = """LATEST_REV=$(psql -X -d "$SRC" -t -c "SELECT version_num FROM alembic_version;")
psql -X -d "$CORE" -c "
CREATE TABLE IF NOT EXISTS alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version (version_num) VALUES ('$LATEST_REV');
"
"""


def runbook_script(prep: Prepared, plan_core_tables: list[str]) -> str:
    """The hand-run runbook the project replaces, step by step, as an operator would type it:

    1. a full plain-SQL backup of the source, and a schema-only dump "for reference";
    2. two plain data-only dumps: the core tables (named one by one with --table; the runbook's list
       leaves out alembic_version) and the three AI tables;
    3. pgvector enabled on the AI database;
    4. core schema: a schema-only dump without the AI tables, cleaned with `grep -v` of the lines that
       mention the vector extension, vector(1536) columns or hnsw/ivfflat indexes, loaded with psql;
       then alembic_version re-created by hand with the revision read through `psql -t`;
    5. AI schema: the hand-written AI schema file (sql/create_ai_schema.sql), HNSW index included,
       loaded before the data;
    6. the data: `SET session_replication_role` in its own psql session (it does not reach the load's
       session), the core data file, the AI data file.
    psql runs without ON_ERROR_STOP, as in the runbook: errors scroll by and the load carries on.
    """
    core_args = " ".join(f"--table={shlex.quote(t)}" for t in plan_core_tables)
    ai_args = " ".join(f"--table={t}" for t in ("ai_kb_documents", "ai_memories", "ai_feedback"))
    excludes = " ".join(f"--exclude-table={t}" for t in ("ai_kb_documents", "ai_memories", "ai_feedback"))
    ai_schema = sql_file("create_ai_schema.sql")
    return (
        _HEADER.format(label="the runbook")
        + f"""set -u
pg_dump -d "$SRC" --no-owner --no-acl --format=plain --file=full_database_backup.sql
pg_dump -d "$SRC" --schema-only --no-owner --file=schema_only.sql
pg_dump -d "$SRC" --no-owner --no-acl --format=plain --data-only {core_args} --file=core_tables_data.sql
pg_dump -d "$SRC" --no-owner --no-acl --format=plain --data-only {ai_args} --file=ai_tables_data.sql
psql -X -d "$AI" -c "CREATE EXTENSION IF NOT EXISTS vector;"
pg_dump -d "$SRC" --schema-only --no-owner --no-acl {excludes} > full_schema.sql
grep -v -E "(CREATE EXTENSION.*vector|vector\\(1536\\)|USING (ivfflat|hnsw).*vector)" \\
    full_schema.sql > core_schema_clean.sql
psql -X -d "$CORE" -f core_schema_clean.sql > core_schema.out 2>&1
{_RUNBOOK_ALEMBIC}psql -X -d "$AI" -f {ai_schema} > ai_schema.out 2>&1
psql -X -d "$CORE" -c "SET session_replication_role = 'replica';"
psql -X -d "$CORE" -f core_tables_data.sql > core_data.out 2>&1
psql -X -d "$CORE" -c "SET session_replication_role = 'origin';"
psql -X -d "$AI" -f ai_tables_data.sql > ai_data.out 2>&1
echo "psql errors: $(cat core_schema.out ai_schema.out core_data.out ai_data.out | grep -c ERROR)"
grep -h ERROR core_schema.out ai_schema.out core_data.out ai_data.out | sort | uniq -c | head -20
exit 0
"""
    )


def dualdb_script(dagster: str, selection: str | None) -> str:
    """dual-db `migrate` from the command line; with `selection`, the same assets but the backup."""
    if selection is None:
        command = f"exec {shlex.quote(dagster)} job execute -m dual_db.definitions -j migrate"
        label = "dual-db migrate"
    else:
        command = (
            f"exec {shlex.quote(dagster)} asset materialize -m dual_db.definitions "
            f"--select {shlex.quote(selection)}"
        )
        label = "dual-db migrate without the backup"
    return _HEADER.format(label=label) + command + "\n"


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    script: Callable[[], str]
    dualdb: bool = False
