"""Independent verification of a contender's result: plain SQL of the bench's own, no dual-db check.

For every target (core, AI) it compares with the source:
- the set of tables (the plan's tables there, no other);
- per table, the row count and a content checksum: count(*) and the sum of a 64-bit hash of each
  row's text form (`hashtextextended(row::text, 0)`), independent of row order;
- index definitions (`pg_indexes.indexdef`, by table and index name);
- constraints: primary keys, UNIQUE, CHECK, EXCLUDE and foreign keys (`pg_get_constraintdef`);
- sequences: `last_value` and `is_called` of every sequence owned by a table of that target (a
  sequence no table owns is expected in core);
- the extension rule: core has no `vector` extension, AI has it.

A contender passes when the list of failures is empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from pglast.parser import ParseError, parse_sql_json
from psycopg import sql

from dual_db.db.urls import DatabaseUrl

TARGETS = ("core", "ai")


@dataclass
class SideFacts:
    """What one database holds of a set of tables."""

    tables: dict[str, tuple[int, str]] = field(default_factory=dict)  # table -> (rows, checksum)
    indexes: dict[str, str] = field(default_factory=dict)  # "table.index" -> indexdef
    constraints: dict[str, str] = field(default_factory=dict)  # "table.name" -> definition
    sequences: dict[str, tuple[int | None, bool | None]] = field(default_factory=dict)  # name -> state
    extensions: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    target: str
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def _strip_casts(node: object) -> object:
    if isinstance(node, dict):
        if set(node) == {"TypeCast"}:
            return _strip_casts(node["TypeCast"]["arg"])
        return {
            k: _strip_casts(v) for k, v in node.items() if k not in ("location", "list_start", "list_end")
        }
    if isinstance(node, list):
        return [_strip_casts(v) for v in node]
    return node


def same_definition(a: str, b: str) -> bool:
    """Equal constraint definitions; a CHECK expression is compared without its casts.

    A dump and restore deparses `col IN ('a', 'b')` on a varchar column differently
    (`(ARRAY['a'::varchar, ...])::text[]` becomes `ARRAY[('a'::varchar)::text, ...]`): the same
    constraint. Both are parsed (pglast) and their syntax trees compared with every cast removed.
    """
    if a == b:
        return True
    if not (a.startswith("CHECK ") and b.startswith("CHECK ")):
        return False
    try:
        trees = [json.loads(parse_sql_json(f"SELECT 1 WHERE {d[len('CHECK ') :]}")) for d in (a, b)]
    except ParseError:
        return False
    return _strip_casts(trees[0]["stmts"]) == _strip_casts(trees[1]["stmts"])


def _connect(url: DatabaseUrl) -> psycopg.Connection:
    return psycopg.connect(url.conninfo(), autocommit=True, application_name="dual-db bench verifier")


def table_checksum(conn: psycopg.Connection, table: str) -> tuple[int, str]:
    """(rows, checksum) of public.`table`: count(*) and the sum of 64-bit hashes of each row's text."""
    query = sql.SQL(
        "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text FROM ONLY {} AS t"
    ).format(sql.Identifier("public", table))
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def _public_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


def _catalog_facts(conn: psycopg.Connection, tables: list[str], facts: SideFacts) -> None:
    for table, index, definition in conn.execute(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        " AND tablename = ANY(%s)",
        (tables,),
    ).fetchall():
        facts.indexes[f"{table}.{index}"] = str(definition)
    for table, name, definition in conn.execute(
        "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
        " JOIN pg_class r ON r.oid = c.conrelid"
        " WHERE r.relnamespace = 'public'::regnamespace AND r.relname = ANY(%s)"
        " AND c.contype IN ('p', 'u', 'c', 'x', 'f')",
        (tables,),
    ).fetchall():
        facts.constraints[f"{table}.{name}"] = str(definition)
    facts.extensions = sorted(str(r[0]) for r in conn.execute("SELECT extname FROM pg_extension").fetchall())


def _sequence_states(
    conn: psycopg.Connection, names: Iterable[str]
) -> dict[str, tuple[int | None, bool | None]]:
    states: dict[str, tuple[int | None, bool | None]] = {}
    for name in names:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'public."{name}"',)).fetchone()
        if not exists or not exists[0]:
            states[name] = (None, None)
            continue
        row = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier("public", name))
        ).fetchone()
        assert row is not None
        states[name] = (int(row[0]), bool(row[1]))
    return states


def _sequence_routing(conn: psycopg.Connection, routing: dict[str, str]) -> dict[str, str]:
    """Source sequence -> target: the target of the table owning it; core when no table owns it."""
    rows = conn.execute(
        "SELECT s.relname, t.relname FROM pg_class s"
        " LEFT JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass"
        "  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')"
        " LEFT JOIN pg_class t ON t.oid = d.refobjid"
        " WHERE s.relkind = 'S' AND s.relnamespace = 'public'::regnamespace"
    ).fetchall()
    return {str(seq): routing.get(str(owner), "core") if owner else "core" for seq, owner in rows}


@dataclass
class Expected:
    """The source's facts, split by target (computed once per source and cached in a file)."""

    routing: dict[str, str]  # table -> target
    facts: dict[str, SideFacts]  # target -> facts

    def to_json(self) -> str:
        return json.dumps({"routing": self.routing, "facts": {k: asdict(v) for k, v in self.facts.items()}})

    @classmethod
    def from_json(cls, text: str) -> Expected:
        data = json.loads(text)
        facts = {}
        for target, raw in data["facts"].items():
            facts[target] = SideFacts(
                tables={k: (int(v[0]), str(v[1])) for k, v in raw["tables"].items()},
                indexes=raw["indexes"],
                constraints=raw["constraints"],
                sequences={k: (v[0], v[1]) for k, v in raw["sequences"].items()},
                extensions=raw["extensions"],
            )
        return cls(routing=data["routing"], facts=facts)


def expected_from_source(source: DatabaseUrl, routing: dict[str, str], cache: Path | None = None) -> Expected:
    if cache is not None and cache.exists():
        return Expected.from_json(cache.read_text())
    facts = {target: SideFacts() for target in TARGETS}
    with _connect(source) as conn:
        for target in TARGETS:
            tables = [t for t, where in routing.items() if where == target]
            _catalog_facts(conn, tables, facts[target])
            # Foreign keys pointing into the other database cannot exist there; none expected.
            facts[target].constraints = {
                k: v
                for k, v in facts[target].constraints.items()
                if not _references_other(v, routing, target)
            }
        seq_routing = _sequence_routing(conn, routing)
        for target in TARGETS:
            names = sorted(s for s, where in seq_routing.items() if where == target)
            facts[target].sequences = _sequence_states(conn, names)
        facts["core"].extensions = [e for e in facts["core"].extensions if e != "vector"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        sums = dict(zip(routing, pool.map(lambda t: _checksum_one(source, t), routing), strict=True))
    for table, where in routing.items():
        facts[where].tables[table] = sums[table]
    expected = Expected(routing=dict(routing), facts=facts)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(expected.to_json())
    return expected


def _references_other(definition: str, routing: dict[str, str], target: str) -> bool:
    if not definition.startswith("FOREIGN KEY"):
        return False
    referenced = definition.split(" REFERENCES ", 1)[1].split("(", 1)[0].strip().split(".")[-1].strip('"')
    return routing.get(referenced, target) != target


def _checksum_one(url: DatabaseUrl, table: str) -> tuple[int, str]:
    with _connect(url) as conn:
        return table_checksum(conn, table)


def verify_target(target: str, url: DatabaseUrl, expected: Expected, workers: int = 2) -> Verdict:
    want = expected.facts[target]
    failures: list[str] = []
    try:
        conn = _connect(url)
    except psycopg.Error as exc:
        return Verdict(target, [f"cannot connect: {exc}".splitlines()[0]])
    with conn:
        present = _public_tables(conn)
        got = SideFacts()
        _catalog_facts(conn, list(want.tables), got)
        got.sequences = _sequence_states(conn, want.sequences)
    missing = sorted(set(want.tables) - set(present))
    extra = sorted(set(present) - set(want.tables))
    if missing:
        failures.append(f"tables missing: {', '.join(missing)}")
    if extra:
        failures.append(f"tables that belong elsewhere: {', '.join(extra)}")
    tables = [t for t in want.tables if t in present]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sums = dict(zip(tables, pool.map(lambda t: _checksum_one(url, t), tables), strict=True))
    for table in tables:
        (want_rows, want_sum), (rows, checksum) = want.tables[table], sums[table]
        if rows != want_rows:
            failures.append(f"{table}: {rows} rows, source has {want_rows}")
        elif checksum != want_sum:
            failures.append(f"{table}: content checksum differs from the source")
    for kind, want_map, got_map in (
        ("index", want.indexes, got.indexes),
        ("constraint", want.constraints, got.constraints),
    ):
        for key, definition in sorted(want_map.items()):
            if key not in got_map:
                failures.append(f"{kind} missing: {key}")
            elif not same_definition(got_map[key], definition):
                failures.append(f"{kind} {key} differs: {got_map[key]!r}, source {definition!r}")
        for key in sorted(set(got_map) - set(want_map)):
            failures.append(f"{kind} not in the source: {key}")
    for name, state in sorted(want.sequences.items()):
        have = got.sequences.get(name, (None, None))
        if have == (None, None):
            failures.append(f"sequence missing: {name}")
        elif tuple(have) != tuple(state):
            failures.append(
                f"sequence {name}: last_value={have[0]} is_called={have[1]}, "
                f"source last_value={state[0]} is_called={state[1]}"
            )
    if target == "core" and "vector" in got.extensions:
        failures.append("core has the vector extension")
    if target == "ai" and "vector" not in got.extensions:
        failures.append("AI has no vector extension")
    return Verdict(target, failures)


def verify(core: DatabaseUrl, ai: DatabaseUrl, expected: Expected) -> list[Verdict]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(verify_target, t, u, expected, 1) for t, u in (("core", core), ("ai", ai))]
        return [f.result() for f in futures]
