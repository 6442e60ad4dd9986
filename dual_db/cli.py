"""`dual-db`: the embedded servers, the demo source and the routing plan.

    dual-db up | down | status          embedded source/core/ai/instance servers under .dual_db/
    dual-db demo-source [--scale N]     build the SigmaSight-like demo source
    dual-db plan --discover             write the routing plan from the live source catalog
    dual-db reset-demo-targets          empty the embedded core and AI databases (the demo only)
    dual-db traffic [--rounds N]        traffic that acts as the application, after the cutover
    dual-db cleanup-replication         drop dual-db's subscriptions, slots and publications

The migration itself runs in Dagster: `dagster job execute -m dual_db.definitions -j migrate`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dual_db.db.connect import DatabaseUnreachable
from dual_db.db.env import EnvironmentConflict, MissingVariable, get, load_env_file, require
from dual_db.db.urls import DatabaseUrl, DatabaseUrlError
from dual_db.embedded import DEFAULT_STATE_DIR, ROLE_DATABASES, EmbeddedCluster, write_env_file

if TYPE_CHECKING:
    from dual_db.routing import RoutingPlan

ENV_FILE = Path(".env")


def _source_url() -> DatabaseUrl:
    # `.env` fills in what the shell does not set; a value that differs from the shell's is refused,
    # as under `dagster` (see dual_db.db.env).
    load_env_file(ENV_FILE)
    return DatabaseUrl.parse(require("SOURCE_DATABASE_URL", "DATABASE_URL"))


def cmd_up(args: argparse.Namespace) -> int:
    cluster = EmbeddedCluster(args.state_dir)
    started = cluster.up()
    write_env_file(ENV_FILE, cluster.env())
    for role, did_start in started.items():
        server = cluster[role]
        print(
            f"{role:9} {'started' if did_start else 'running'}  {server.url(ROLE_DATABASES[role]).masked()}"
        )
    print(f"wrote {ENV_FILE} (URLs with passwords: keep it private)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    cluster = EmbeddedCluster(args.state_dir)
    for role, stopped in cluster.down().items():
        print(f"{role:9} {'stopped' if stopped else 'not running'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cluster = EmbeddedCluster(args.state_dir)
    for role, server in cluster.servers.items():
        if not server.initialized:
            print(f"{role:9} not initialized (run `dual-db up`)")
            continue
        pid = server.pid()
        state = f"running pid {pid}" if pid else "stopped"
        size_mb = server.data_size_bytes() / 1e6
        print(
            f"{role:9} {state:18} PostgreSQL {server.version}  {size_mb:8.1f} MB  "
            f"{server.url(ROLE_DATABASES[role]).masked()}"
        )
    return 0


def cmd_demo_source(args: argparse.Namespace) -> int:
    from dual_db.demo import DemoSourceExists, build_demo_source

    url = _source_url()
    started = time.monotonic()
    try:
        summary = build_demo_source(
            url,
            scale=args.scale,
            seed=args.seed,
            reset=args.reset,
            progress=lambda line: print(line, flush=True),
        )
    except (DemoSourceExists, ValueError) as exc:
        print(f"dual-db: {exc}", file=sys.stderr)
        return 2
    print(
        f"built demo source in {url.masked()}: {len(summary.row_counts)} tables, {summary.total_rows} rows, "
        f"{summary.total_bytes / 1e6:.1f} MB in {time.monotonic() - started:.1f}s"
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from dual_db.db.connect import connection
    from dual_db.routing import DISCOVERY_RULE, RoutingPlan, accept, discover, plan_path, propose
    from dual_db.split_hazards import split_hazards

    load_env_file(ENV_FILE)  # before plan_path(): `.env` may name the plan file
    path = Path(args.file) if args.file else plan_path()
    if not args.discover:
        plan = RoutingPlan.load(path)
        print(f"{path}: {len(plan.core)} core, {len(plan.ai)} ai, {len(plan.exclude)} excluded")
        return 0
    existing = RoutingPlan.load(path) if path.exists() else None
    url = _source_url()
    with connection(url, read_only=True, application_name="dual-db plan") as conn:
        plan, changes = discover(conn, existing)
        proposals, references = propose(conn, plan, existing)
        print(f"rule: {DISCOVERY_RULE}")
        for change in changes:
            print(change)
        for proposal in proposals:
            print(f"{'moved' if args.accept else 'proposed'}: {proposal.table} → ai ({proposal.reason})")
        for reference in references:
            # A foreign key's reference carries its constraint name; a column's, its description.
            via = f" (foreign key {reference.name})" if reference.name != reference.describe() else ""
            print(f"{'recorded' if args.accept else 'proposed'} soft reference: {reference.describe()}{via}")
        if args.accept:
            plan = accept(plan, proposals, references)
        elif proposals or references:
            print("to apply the proposals: dual-db plan --discover --accept (or edit the plan file)")
        # What `migrate` would refuse with this plan (routing_complete), said now.
        for problem in split_hazards(conn, plan):
            print(f"migrate refuses until decided: {problem}")
    plan.save(path)
    print(f"wrote {path}: {len(plan.core)} core, {len(plan.ai)} ai, {len(plan.exclude)} excluded")
    refusal = _split_refusal(url, plan)
    if refusal:
        print(f"the schema split refuses this plan: {refusal}", file=sys.stderr)
        return 1
    return 0


def _split_refusal(url: DatabaseUrl, plan: RoutingPlan) -> str | None:
    """What the schema split would refuse (objects reaching across it, ...), found now rather than by
    `migrate`: the source's schema is dumped (read-only) and split with the plan. None when it splits,
    or when the schema cannot be dumped here (`migrate` says why)."""
    from dual_db.schema.dump import PgToolError, dump_schema_sections, resolve_pg_bin_dir
    from dual_db.schema.split import SchemaSplitError, TargetVersionError, split_schema
    from dual_db.schema.statements import SchemaParseError

    try:
        sections = dump_schema_sections(url, bin_dir=resolve_pg_bin_dir())
    except PgToolError as exc:
        print(f"schema not checked against the plan: {exc}")
        return None
    try:
        split = split_schema(
            sections.pre_data, sections.post_data, set(plan.ai), accept=plan.accept_across_split
        )
    except (TargetVersionError, SchemaParseError):
        return None  # the target servers' versions, a dump pglast cannot read: `migrate` says
    except SchemaSplitError as exc:
        return str(exc)
    for accepted in split.accepted:
        print(f"accepted in the plan: {accepted.detail}")
    return None


def cmd_reset_demo_targets(args: argparse.Namespace) -> int:
    """The demo's targets, fresh: after a demo cutover they are the "application's", and dual-db
    refuses to migrate into them again. Only the embedded servers under --state-dir are touched."""
    cluster = EmbeddedCluster(args.state_dir)
    for role in ("core", "ai"):
        server = cluster[role]
        if not server.initialized or not server.running:
            print(f"dual-db: the embedded {role} server is not running (run `dual-db up`)", file=sys.stderr)
            return 2
        server.drop_database(ROLE_DATABASES[role])
        server.ensure_database(ROLE_DATABASES[role])
        print(f"{role:9} emptied    {server.url(ROLE_DATABASES[role]).masked()}")
    return 0


def _latest_switch_file(state_dir: Path) -> Path | None:
    files = sorted(
        (state_dir / "dumps" / "cutover").glob("*/switch.env"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    return files[0] if files else None


def cmd_traffic(args: argparse.Namespace) -> int:
    """Rounds of what the application does, against the databases the cutover switched it to."""
    from dotenv import dotenv_values

    from dual_db.app.settings import AppSettings
    from dual_db.demo.traffic import run_traffic

    switch = Path(args.switch_file) if args.switch_file else _latest_switch_file(args.state_dir)
    if switch is None or not switch.is_file():
        print(
            "dual-db: no cutover switch file: materialize `cutover` first (or pass --switch-file)",
            file=sys.stderr,
        )
        return 2
    values = {k: v for k, v in dotenv_values(switch).items() if v}
    settings = AppSettings.from_environment(values)
    summary = run_traffic(settings, rounds=args.rounds, seconds=args.seconds)
    print(
        f"traffic to {settings.core_database_url.masked()} and {settings.ai_database_url.masked()}: "
        f"{summary.rounds} rounds, {summary.batch_statements} batch statements, {summary.rag_queries} RAG "
        f"queries, {summary.messages_written} messages, {summary.feedback_written} feedback rows in "
        f"{summary.seconds:.1f}s"
    )
    return 0


def cmd_cleanup_replication(args: argparse.Namespace) -> int:
    """Drop every subscription (on the targets set), slot and publication (on the source) that dual-db
    created, after an interrupted catch-up too. Objects not named by dual-db are never touched."""
    from dual_db.db.connect import connection
    from dual_db.replication.cleanup import CleanupError, cleanup_source, cleanup_target

    source = _source_url()
    targets = {role: get(f"{role.upper()}_DATABASE_URL") for role in ("core", "ai")}
    try:
        # The targets first: a subscription still streaming keeps its slot busy on the source.
        for role, raw in targets.items():
            if raw is None:
                continue
            url = DatabaseUrl.parse(raw)
            with connection(url, autocommit=True, application_name="dual-db cleanup") as conn:
                for name in cleanup_target(conn):
                    print(f"dropped subscription {name} on {role} {url.masked()}")
        with connection(source, autocommit=True, application_name="dual-db cleanup") as conn:
            done = cleanup_source(conn)
    except CleanupError as exc:
        print(f"dual-db: {exc}", file=sys.stderr)
        return 1
    for name in done.slots:
        print(f"dropped replication slot {name} on source {source.masked()}")
    for name in done.publications:
        print(f"dropped publication {name} on source {source.masked()}")
    if not any(targets.values()):
        print("no CORE_DATABASE_URL or AI_DATABASE_URL set: only the source was cleaned")
    print(
        f"{len(done.slots)} slot(s) and {len(done.publications)} publication(s) dropped; nothing else touched"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dual-db", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="embedded servers' directory"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the embedded servers and write .env").set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the embedded servers").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show the embedded servers").set_defaults(func=cmd_status)
    demo = sub.add_parser("demo-source", help="build the SigmaSight-like demo source database")
    demo.add_argument("--scale", type=float, default=1.0, help="size: 1 ≈ 100 MB, linear")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--reset", action="store_true", help="drop and rebuild an existing demo source")
    demo.set_defaults(func=cmd_demo_source)
    plan = sub.add_parser("plan", help="show or discover the routing plan")
    plan.add_argument("--discover", action="store_true", help="write the plan from the source catalog")
    plan.add_argument("--file", help="plan file (default: $DUAL_DB_PLAN_FILE or routing_plan.yaml)")
    plan.add_argument(
        "--accept", action="store_true", help="with --discover: apply the proposed moves and soft references"
    )
    plan.set_defaults(func=cmd_plan)
    sub.add_parser(
        "reset-demo-targets", help="empty the embedded core and AI databases (after a demo cutover)"
    ).set_defaults(func=cmd_reset_demo_targets)
    traffic = sub.add_parser("traffic", help="traffic that acts as the application, after the cutover")
    traffic.add_argument("--rounds", type=int, default=20)
    traffic.add_argument("--seconds", type=float, default=60.0, help="stop after this long at the most")
    traffic.add_argument("--switch-file", help="the cutover's switch.env (default: the latest one)")
    traffic.set_defaults(func=cmd_traffic)
    sub.add_parser(
        "cleanup-replication",
        help="drop the subscriptions, slots and publications dual-db created (and nothing else)",
    ).set_defaults(func=cmd_cleanup_replication)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dual_db.app.settings import AppSettingsError
    from dual_db.routing import RoutingPlanError

    try:
        return int(args.func(args))
    except (
        DatabaseUrlError,
        DatabaseUnreachable,
        EnvironmentConflict,
        MissingVariable,
        RoutingPlanError,
        AppSettingsError,
    ) as exc:
        # What the user must fix, on one line; the message names the server masked, never a password.
        print(f"dual-db: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
