"""The routing plan: which source table goes to the core database and which to the AI database.

The plan is a YAML file (default `routing_plan.yaml` at the repository root, or `$DUAL_DB_PLAN_FILE`):

    ai: [ai_kb_documents, ai_memories, ai_feedback]
    core: [users, portfolios, ...]
    exclude: []          # tables deliberately left behind (they fail nothing, but are listed)
    soft_references:     # references between the two databases that no foreign key can enforce
      - {from: ai_feedback, columns: [message_id], to: agent_messages, to_columns: [id]}
    vector_tables: [ai_kb_documents]   # optional: the tables with a pgvector column (`plan --discover`)
    owners:              # optional: who answers for each database's tables (an email or team:<name>)
      core: [team:platform]
      ai: [team:ml]
    accept_across_split: # optional: objects reaching across the split, accepted by name
      - public.orders.orders_to_ai     # a trigger on a core table whose function writes an AI table
      - public.order_events            # a view joining a core and an AI table

`vector_tables` and `owners` only label the table assets in the Dagster UI (tags `has_vectors` and
`class`, owners).

`accept_across_split` is the explicit decision for what the schema split would otherwise refuse: a
function, trigger, view, materialized view, rule or policy whose definition (a function's body
included) references a table routed to the other database, so that neither database can have it as
it is, and a sequence drawn by both a core and an AI table. Each is refused by name until it is
listed here (as the refusal spells it; `public.` may be left out). A listed object is left out of the
targets and recorded as removed, with the reason (it is never created broken); a listed sequence is
copied into both databases, each copy then handing out values on its own. Both are logged at WARNING
and named in the verification report's summary line.

Dagster's asset definitions are built from this file when the code location loads, without touching a
database. `dual-db plan --discover` reads the live source catalog and writes the file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import yaml

from dual_db.db import env
from dual_db.db.catalog import list_tables, primary_key, regclass_literal, table_columns
from dual_db.db.names import TableName
from dual_db.db.references import SoftReference

REPO_ROOT = Path(__file__).resolve().parents[1]
PLAN_FILE_ENV = "DUAL_DB_PLAN_FILE"
DEFAULT_PLAN_FILE = REPO_ROOT / "routing_plan.yaml"

TARGETS = ("core", "ai")


class RoutingPlanError(ValueError):
    pass


def plan_path() -> Path:
    """`$DUAL_DB_PLAN_FILE`, else `routing_plan.yaml`. Refuses a value `.env` silently replaced."""
    configured = env.get(PLAN_FILE_ENV)
    return Path(configured) if configured else DEFAULT_PLAN_FILE


@dataclass
class RoutingPlan:
    core: list[TableName] = field(default_factory=list)
    ai: list[TableName] = field(default_factory=list)
    exclude: list[TableName] = field(default_factory=list)
    soft_references: list[SoftReference] = field(default_factory=list)
    # Tables with a pgvector column, as `discover` found them; None when the plan does not say.
    vector_tables: list[TableName] | None = None
    # Dagster owners (an email or `team:<name>`) of each target's tables.
    owners: dict[str, list[str]] = field(default_factory=dict)
    # Objects reaching across the split that the schema split may leave out (a sequence: copy into
    # both), by name: the explicit decision instead of a refusal (module docstring).
    accept_across_split: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None = None) -> RoutingPlan:
        path = path or plan_path()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise RoutingPlanError(
                f"routing plan {path} not found: run `dual-db plan --discover` to write one"
            ) from None
        except UnicodeDecodeError as exc:
            raise RoutingPlanError(
                f"routing plan {path} is not UTF-8 text (byte {exc.start}): is it the right file? "
                "Rewrite it with `dual-db plan --discover`"
            ) from None
        except OSError as exc:
            raise RoutingPlanError(f"routing plan {path} cannot be read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise RoutingPlanError(f"routing plan {path} is not valid YAML: {_yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise RoutingPlanError(f"routing plan {path}: expected a mapping with 'core' and 'ai' lists")
        unknown = set(data) - {
            "core",
            "ai",
            "exclude",
            "soft_references",
            "vector_tables",
            "owners",
            "accept_across_split",
        }
        if unknown:
            raise RoutingPlanError(f"routing plan {path}: unknown key(s) {sorted(unknown)}")

        def names(key: str) -> list[TableName]:
            value = data.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RoutingPlanError(f"routing plan {path}: '{key}' must be a list of table names")
            try:
                return [TableName.parse(v) for v in value]
            except ValueError as exc:
                raise RoutingPlanError(f"routing plan {path}: {exc}") from None

        return cls(
            core=names("core"),
            ai=names("ai"),
            exclude=names("exclude"),
            soft_references=_soft_references(path, data.get("soft_references") or []),
            vector_tables=names("vector_tables") if "vector_tables" in data else None,
            owners=_owners(path, data.get("owners") or {}),
            accept_across_split=_accepted(path, data.get("accept_across_split") or []),
        )

    def save(self, path: Path | None = None) -> Path:
        path = path or plan_path()
        header = (
            "# dual-db routing plan: every source table is listed exactly once.\n"
            "# ai: tables that move to the AI database (pgvector); core: the core database;\n"
            "# exclude: tables deliberately left behind. Rewrite with `dual-db plan --discover`.\n"
            "# soft_references: references between the two databases that no foreign key can enforce;\n"
            "# the foreign_keys_valid check counts their orphans.\n"
            "# vector_tables: the tables with a pgvector column; owners (optional): per database, who\n"
            "# answers for its tables (an email or team:<name>). Both only label the assets in the UI.\n"
            "# accept_across_split (optional): objects the schema split refuses because they reference\n"
            "# the other database (functions, triggers, views, rules, policies; sequences both sides draw\n"
            "# from), accepted by name: left out of the targets (a sequence: copied into both), logged at\n"
            "# WARNING and named in the verification report.\n"
        )
        body = {
            "ai": [t.display for t in self.ai],
            "core": [t.display for t in self.core],
            "exclude": [t.display for t in self.exclude],
        }
        if self.soft_references:
            body["soft_references"] = [
                {
                    "from": ref.from_table.display,
                    "columns": list(ref.from_columns),
                    "to": ref.to_table.display,
                    "to_columns": list(ref.to_columns),
                }
                for ref in self.soft_references
            ]
        if self.vector_tables is not None:
            body["vector_tables"] = [t.display for t in self.vector_tables]
        if self.owners:
            body["owners"] = {target: list(owners) for target, owners in self.owners.items()}
        if self.accept_across_split:
            body["accept_across_split"] = list(self.accept_across_split)
        path.write_text(header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
        return path

    def tables(self, target: str) -> list[TableName]:
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}")
        return list(getattr(self, target))

    def target_of(self, table: TableName) -> str | None:
        for key in ("core", "ai", "exclude"):
            if table in getattr(self, key):
                return key
        return None

    def table_tags(self, table: TableName) -> dict[str, str]:
        """Labels a user filters the table assets by: `target` (core/ai), `class` (`vector`: an AI
        table with a pgvector column; `ai_companion`: an AI table without one, there because it belongs
        with them; `core`), `has_vectors` (when the plan lists its vector tables) and `soft_reference`
        (`holder`: its columns point into the other database; `referenced`; or both)."""
        target = self.target_of(table) or "exclude"
        tags = {"target": target}
        if self.vector_tables is not None:
            has_vectors = table in self.vector_tables
            tags["has_vectors"] = "true" if has_vectors else "false"
            tags["class"] = "core" if target != "ai" else ("vector" if has_vectors else "ai_companion")
        else:
            tags["class"] = target
        holder = any(ref.from_table == table for ref in self.soft_references)
        referenced = any(ref.to_table == table for ref in self.soft_references)
        if holder or referenced:
            tags["soft_reference"] = (
                "holder_and_referenced" if holder and referenced else ("holder" if holder else "referenced")
            )
        return tags

    def routed_twice(self) -> list[TableName]:
        counts = Counter([*self.core, *self.ai, *self.exclude])
        return sorted(t for t, n in counts.items() if n > 1)

    def problems(
        self, source_tables: Iterable[TableName], partitions: Mapping[TableName, TableName] | None = None
    ) -> list[str]:
        """Every way the plan and the source disagree, each naming the table. `partitions` maps the
        source's partitions to their partitioned table: the plan routes the table, never a partition."""
        source = set(source_tables)
        planned = {*self.core, *self.ai, *self.exclude}
        partitions = partitions or {}
        problems = [f"{t} is in the source but not in the routing plan" for t in sorted(source - planned)]
        problems += [
            f"{t} is a partition of {partitions[t]}: route {partitions[t]} (with all its partitions) instead"
            if t in partitions
            else f"{t} is in the routing plan but not in the source"
            for t in sorted(planned - source)
        ]
        for table in self.routed_twice():
            places = [k for k in ("core", "ai", "exclude") if table in getattr(self, k)]
            problems.append(f"{table} is routed more than once ({', '.join(places)})")
        for table in sorted(set(self.vector_tables or ()) - set(self.ai) - set(self.exclude)):
            problems.append(
                f"{table} is listed in vector_tables but not routed to ai: core never gets pgvector"
            )
        return problems


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _soft_references(path: Path, items: object) -> list[SoftReference]:
    if not isinstance(items, list):
        raise RoutingPlanError(f"routing plan {path}: 'soft_references' must be a list")
    result = []
    for item in items:
        keys = {"from", "columns", "to", "to_columns"}
        if not isinstance(item, dict) or set(item) != keys:
            raise RoutingPlanError(
                f"routing plan {path}: each soft reference needs exactly {sorted(keys)}, got {item!r}"
            )
        try:
            from_table, to_table = TableName.parse(item["from"]), TableName.parse(item["to"])
            columns, to_columns = ", ".join(item["columns"]), ", ".join(item["to_columns"])
            ref = SoftReference(
                name=f"{from_table}({columns}) -> {to_table}({to_columns})",
                from_table=from_table,
                from_columns=tuple(item["columns"]),
                to_table=to_table,
                to_columns=tuple(item["to_columns"]),
            )
        except (ValueError, TypeError) as exc:
            raise RoutingPlanError(f"routing plan {path}: soft reference {item!r}: {exc}") from None
        result.append(ref)
    return result


def _accepted(path: Path, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RoutingPlanError(
            f"routing plan {path}: 'accept_across_split' must be a list of object names, as the schema "
            "split's refusal spells them (e.g. public.orders.orders_to_ai)"
        )
    return [v.strip() for v in value]


def _owners(path: Path, value: object) -> dict[str, list[str]]:
    """`owners: {core: [...], ai: [...]}`, each an email or `team:<name>` (what Dagster accepts)."""
    if not isinstance(value, dict) or not set(value) <= set(TARGETS):
        raise RoutingPlanError(f"routing plan {path}: 'owners' must map core and/or ai to lists of owners")
    result: dict[str, list[str]] = {}
    for target, owners in value.items():
        if not isinstance(owners, list) or not all(isinstance(o, str) for o in owners):
            raise RoutingPlanError(f"routing plan {path}: owners of {target} must be a list")
        for owner in owners:
            name, at, domain = owner.partition("@")
            is_email = bool(at and name and "." in domain and " " not in owner)
            if not is_email and not (owner.startswith("team:") and len(owner) > len("team:")):
                raise RoutingPlanError(
                    f"routing plan {path}: owner {owner!r} of {target} is neither an email nor team:<name>"
                )
        result[target] = list(owners)
    return result


def discover(conn: psycopg.Connection, existing: RoutingPlan | None = None) -> tuple[RoutingPlan, list[str]]:
    """A plan for the live source: existing routing kept, new tables routed, vanished ones dropped.

    A new table with a pgvector column goes to AI (core must never have pgvector types); any other new
    table goes to core. Returns the plan and a list of human-readable changes.
    """
    existing = existing or RoutingPlan()
    source_tables = [info.table for info in list_tables(conn)]
    plan = RoutingPlan(
        soft_references=list(existing.soft_references), vector_tables=[], owners=existing.owners
    )
    plan.accept_across_split = list(existing.accept_across_split)
    changes: list[str] = []
    for table in source_tables:
        previous = existing.target_of(table)
        has_vector = any(c.vector_type for c in table_columns(conn, table))
        if has_vector:
            plan.vector_tables.append(table)  # type: ignore[union-attr]
        if previous is None:
            target = "ai" if has_vector else "core"
            changes.append(f"added {table} → {target}" + (" (has a pgvector column)" if has_vector else ""))
        elif previous == "core" and has_vector:
            target = "ai"
            changes.append(f"moved {table} core → ai: it has a pgvector column")
        else:
            target = previous
        getattr(plan, target).append(table)
    for table in sorted({*existing.core, *existing.ai, *existing.exclude} - set(source_tables)):
        changes.append(f"removed {table}: not in the source")
    return plan, changes


# The rule `discover` applies on its own; everything else it only proposes.
DISCOVERY_RULE = (
    "a table with a pgvector column goes to AI (core must never have pgvector); every other new table "
    "goes to core; tables that belong with the AI tables and references that would cross the split are "
    "proposed, not applied (--accept applies them)"
)

# Partitions' clones of a partitioned table's key (conparentid <> 0) are the same decision.
_FOREIGN_KEYS_SQL = """
SELECT fn.nspname, f.relname, tn.nspname, t.relname,
       array(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       array(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i),
       k.conname
FROM pg_constraint k
JOIN pg_class f ON f.oid = k.conrelid JOIN pg_namespace fn ON fn.oid = f.relnamespace
JOIN pg_class t ON t.oid = k.confrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE k.contype = 'f' AND k.conparentid = 0
ORDER BY fn.nspname, f.relname, k.conname
"""


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key of the source, by its constraint name."""

    name: str
    table: TableName
    columns: tuple[str, ...]
    ref_table: TableName
    ref_columns: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.table}({', '.join(self.columns)}) -> {self.ref_table}({', '.join(self.ref_columns)})"

    def as_soft_reference(self, from_database: str | None = None) -> SoftReference:
        return SoftReference(
            name=self.name,
            from_table=self.table,
            from_columns=self.columns,
            to_table=self.ref_table,
            to_columns=self.ref_columns,
            from_database=from_database,
        )


def source_foreign_keys(conn: psycopg.Connection) -> list[ForeignKey]:
    return [
        ForeignKey(str(r[6]), TableName(r[0], r[1]), tuple(r[4]), TableName(r[2], r[3]), tuple(r[5]))
        for r in conn.execute(_FOREIGN_KEYS_SQL)
    ]


_LEAF_PARTITIONS_SQL = """
SELECT n.nspname, c.relname FROM pg_partition_tree(%(rel)s::regclass) p
JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.isleaf
"""


def sides_of(
    conn: psycopg.Connection, side: dict[TableName, str], tables: Iterable[TableName]
) -> dict[TableName, str]:
    """`side` (table → "core"/"ai") extended to partitioned tables the plan does not list itself: a
    partitioned table's key is declared once, on it, and it lives where all its routed leaves go."""
    out = dict(side)
    for table in set(tables) - set(side):
        leaves = {
            side.get(TableName(r[0], r[1]))
            for r in conn.execute(_LEAF_PARTITIONS_SQL, {"rel": regclass_literal(table)})
        }
        leaves.discard(None)
        if len(leaves) == 1:
            out[table] = str(leaves.pop())
    return out


def declares(plan: RoutingPlan, fk: ForeignKey) -> bool:
    """The plan lists `fk` under soft_references: same tables, same column pairs (in any order)."""
    pairs = sorted(zip(fk.columns, fk.ref_columns, strict=True))
    return any(
        ref.from_table == fk.table
        and ref.to_table == fk.ref_table
        and sorted(zip(ref.from_columns, ref.to_columns, strict=True)) == pairs
        for ref in plan.soft_references
    )


@dataclass(frozen=True)
class Proposal:
    """A table `discover` routed to core that likely belongs with the AI tables, and why."""

    table: TableName
    reason: str


def _prefix(name: str) -> str | None:
    head, sep, _ = name.partition("_")
    return head + sep if sep and head else None


def propose(
    conn: psycopg.Connection, plan: RoutingPlan, existing: RoutingPlan | None = None
) -> tuple[list[Proposal], list[SoftReference]]:
    """What the user should confirm: core tables that belong with the AI tables (a foreign key into
    one, or the AI tables' name prefix, e.g. `ai_`), and every reference that crosses the split (a
    foreign key, named by its constraint, or an `<x>_id` column naming a table on the other side by its
    key) as a soft reference.

    A table `existing` (the plan before `discover`) already routes to core stays there: that was a
    decision, and its foreign keys into AI are proposed as soft references instead of a move.
    """
    ai = set(plan.ai)
    kept = set(existing.core) if existing is not None else set()
    foreign_keys = source_foreign_keys(conn)
    prefixes = {p for t in ai if (p := _prefix(t.name))}
    proposals: dict[TableName, str] = {}
    for fk in foreign_keys:
        if fk.table in plan.core and fk.table not in kept and fk.ref_table in ai:
            proposals.setdefault(
                fk.table,
                f"it has a foreign key to the AI table {fk.ref_table}: {fk.name}, {fk.describe()}",
            )
    for table in plan.core:
        prefix = _prefix(table.name)
        if prefix in prefixes and table not in proposals and table not in kept:
            proposals[table] = f"its name shares the prefix {prefix!r} with the AI tables"

    side = {t: "ai" for t in (*ai, *proposals)} | {t: "core" for t in plan.core if t not in proposals}
    candidates: dict[tuple[TableName, tuple[str, ...]], SoftReference] = {}
    fk_side = sides_of(conn, side, [t for fk in foreign_keys for t in (fk.table, fk.ref_table)])
    for fk in foreign_keys:
        if fk.table in fk_side and fk.ref_table in fk_side and fk_side[fk.table] != fk_side[fk.ref_table]:
            candidates[(fk.table, fk.columns)] = fk.as_soft_reference(fk_side[fk.table])
    keys = {t: key[0] for t in side if len(key := primary_key(conn, t)) == 1}

    def named_by(stem: str, table: TableName) -> bool:
        # `message_id` names `messages`, `message` or `agent_messages`; `user_id` names `users`.
        return any(table.name == n or table.name.endswith("_" + n) for n in (stem, stem + "s"))

    for table in side:
        for column in table_columns(conn, table):
            if not column.name.endswith("_id") or (table, (column.name,)) in candidates:
                continue
            stem = column.name[: -len("_id")]
            for other, key in keys.items():
                if side[other] != side[table] and named_by(stem, other):
                    candidates[(table, (column.name,))] = SoftReference(
                        name=f"{table}({column.name}) -> {other}({key})",
                        from_table=table,
                        from_columns=(column.name,),
                        to_table=other,
                        to_columns=(key,),
                        from_database=side[table],
                    )
    return [Proposal(t, r) for t, r in sorted(proposals.items())], list(candidates.values())


def accept(plan: RoutingPlan, proposals: list[Proposal], references: list[SoftReference]) -> RoutingPlan:
    """`plan` with the proposed tables moved to AI and the candidate references recorded."""
    moved = {p.table for p in proposals}
    known = {(r.from_table, tuple(r.from_columns)) for r in plan.soft_references}
    return RoutingPlan(
        core=[t for t in plan.core if t not in moved],
        ai=[*plan.ai, *sorted(moved)],
        exclude=list(plan.exclude),
        vector_tables=plan.vector_tables,
        owners=plan.owners,
        accept_across_split=list(plan.accept_across_split),
        soft_references=[
            *plan.soft_references,
            *(r for r in references if (r.from_table, tuple(r.from_columns)) not in known),
        ],
    )
