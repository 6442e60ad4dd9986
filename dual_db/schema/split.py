"""Split a full-database pg_dump schema into a core schema (never pgvector) and an AI schema.

This replaces the migration plan's Phase 4 `grep -v`/`re.sub` cleaning, which works on lines and text
patterns and so misses `halfvec`/`sparsevec`, other dimensions, `public.vector`, arrays, domains over
vector, multi-line statements, and leaves dangling objects (views over AI tables, sequences and
comments of AI tables, foreign keys between the two sides).

Here every statement of the dump is parsed by pglast (the PostgreSQL 18 parser) and described by what
it defines (tables, types, functions, sequences, indexes, constraints, ...), which table it belongs to,
and what it references (relations, types, functions, sequences named in `nextval('...'::regclass)`,
and what function bodies name: SQL bodies, PL/pgSQL bodies and their embedded statements).
The split is then a graph computation on those descriptions:

* core = every statement, minus the pgvector extension, everything belonging to the AI tables, hnsw/
  ivfflat indexes, foreign keys crossing the two sides (reported as soft references), anything using a
  pgvector type, and, transitively, anything depending on what was removed. A core *table* that would
  need something removed (a vector column, a domain over vector, an AI table's row type) is an error,
  never a silently dropped column.
* AI = `CREATE EXTENSION IF NOT EXISTS vector` first, then the AI tables with everything they
  reference that the dump defines (schemas, enums, domains, sequences, functions, ...), transitively,
  plus the free-standing objects core had to drop that can live in the AI database (views over AI
  tables, functions and domains using pgvector types).

Kept statements are emitted with their original text (sliced from the dump by the parser's statement
locations), in dump order, so pg_dump's dependency ordering, types, defaults and comments are kept
exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace

import pglast
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType
from pglast.parser import ParseError, scan
from pglast.stream import RawStream
from psycopg import sql

from dual_db.db.catalog import PGVECTOR_TYPES
from dual_db.db.names import TableName
from dual_db.db.references import SoftReference
from dual_db.schema.statements import Statement, is_set_config, render_script, statements_of

# pgvector's types. A name is taken as pgvector's when the dump does not define a type of that name
# itself (the extension's own objects are never in a dump), however it is qualified.
VECTOR_INDEX_METHODS = frozenset({"hnsw", "ivfflat"})
PGVECTOR_EXTENSION = "vector"

# Settings pg_dump writes that older servers reject ("unrecognized configuration parameter").
_SETTING_SINCE_MAJOR = {"transaction_timeout": 17}

# Post-data parts, in the order a caller applies them.
# Post-data parts in the order they are applied: vector indexes after the foreign keys, before triggers.
POST_PARTS = ("indexes", "foreign_keys", "vector_indexes", "triggers_and_other")

Key = tuple[str, ...]


# ---- errors and results ----------------------------------------------------------------------------
class SchemaSplitError(ValueError):
    """The schema cannot be split as asked; the message says what to change."""


class CoreTableHasVectorColumn(SchemaSplitError):
    """A table routed to core has a column of a pgvector type: it must be routed to the AI database."""

    def __init__(self, table: TableName, column: str, type_name: str) -> None:
        self.table = table
        self.column = column
        self.type_name = type_name
        super().__init__(
            f"core table {table.qualified} has column {column!r} of pgvector type {type_name}: "
            "route the table to the AI database (dropping the column would lose its data)"
        )


class TargetVersionError(SchemaSplitError):
    """The dump uses syntax the target server's major version does not accept."""


@dataclass(frozen=True)
class RemovedObject:
    """Something the core schema does not get, and why. `moved_to_ai` when the AI schema has it;
    `accepted` when it reaches across the split and the routing plan's `accept_across_split` lets it
    be left out (it is in neither database)."""

    kind: str
    name: str
    reason: str
    moved_to_ai: bool = False
    accepted: bool = False


@dataclass(frozen=True)
class AcceptedObject:
    """An object reaching across the split that the plan's `accept_across_split` let through: `detail`
    says what it references on the other side and what was done (left out, or copied into both)."""

    kind: str
    name: str
    detail: str
    # For an object of one table (trigger, policy, rule, index, constraint): the table and its own name,
    # so schema_parity expects it missing on the target.
    table: TableName | None = None
    own_name: str = ""


@dataclass(frozen=True)
class VectorIndex:
    """An hnsw/ivfflat index statement, to be built after the load with a large maintenance_work_mem."""

    name: str
    table: TableName
    method: str
    opclasses: tuple[str, ...]
    options: tuple[tuple[str, str], ...]
    sql: str
    # Statements to run right after this index (ALTER INDEX ... ATTACH PARTITION of a partitioned
    # index, comments): each comes after the last of the vector indexes it names.
    followed_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class PostData:
    """One side's post-data, in the order to apply it; each part is a self-contained script ("" if empty)."""

    indexes: str  # indexes and PRIMARY KEY/UNIQUE/EXCLUDE constraints (not hnsw/ivfflat)
    foreign_keys: str
    triggers_and_other: str  # triggers, rules, policies, NOT VALID checks, ...
    vector_indexes: str  # hnsw/ivfflat (always empty for core)

    def in_order(self) -> list[tuple[str, str]]:
        return [(part, getattr(self, part)) for part in POST_PARTS]


@dataclass(frozen=True)
class SchemaSplit:
    """The two schemas, each as pre-data (before the load) and post-data (after), plus the audit trail.

    Every script is self-contained (it carries pg_dump's SET lines) and "" when it has no statements.
    """

    core_pre: str
    core_post: str
    ai_pre: str
    ai_post: str  # all of the AI post-data, hnsw/ivfflat indexes included, in dump order
    removed: list[RemovedObject]  # what core does not get, and why
    soft_references: list[SoftReference]
    core_post_parts: PostData
    ai_post_parts: PostData
    ai_post_other: str  # ai_post without the hnsw/ivfflat indexes
    ai_vector_indexes: list[VectorIndex]
    # Statements of AI tables that cannot be created in the AI database (they need a core table).
    ai_skipped: list[RemovedObject] = field(default_factory=list)
    # Things an operator should know (objects copied into both databases, ...).
    notes: list[str] = field(default_factory=list)
    # What `accept_across_split` let through, one line each (left out, or a sequence copied into both):
    # to be logged at WARNING and named in the verification report.
    accepted: list[AcceptedObject] = field(default_factory=list)
    core_major: int = 18
    ai_major: int = 18

    @property
    def ai_post_vector_indexes(self) -> str:
        """The hnsw/ivfflat index statements: build them last, with a large maintenance_work_mem."""
        return self.ai_post_parts.vector_indexes


# ---- statement description -------------------------------------------------------------------------
@dataclass
class _ForeignKey:
    constraint: str
    table: TableName
    columns: tuple[str, ...]
    ref_table: TableName
    ref_columns: tuple[str, ...]


@dataclass
class _Stmt:
    idx: int
    section: str  # "pre" | "post"
    st: Statement
    kind: str = ""
    name: str = ""
    setting: str | None = None  # the parameter a SET / set_config statement sets
    defines: list[Key] = field(default_factory=list)
    schema: str | None = None  # schema of the object the statement creates
    refs: set[Key] = field(default_factory=set)
    owner_key: Key | None = None  # table (or index) the statement belongs to, before resolution
    owner: TableName | None = None
    typenames: list[ast.TypeName] = field(default_factory=list)
    vector_types: list[str] = field(default_factory=list)
    fks: list[_ForeignKey] = field(default_factory=list)
    inline_fk: bool = False
    multi_cmd: bool = False
    index_method: str | None = None
    comment_target: Key | None = None
    attachment: bool = False  # may follow the object it modifies into the AI schema
    category: str = "triggers_and_other"
    identity_sequence: Key | None = None
    owned_sequence: Key | None = None  # ALTER SEQUENCE s OWNED BY: the sequence s
    partition_child: TableName | None = None  # ALTER TABLE parent ATTACH PARTITION child
    body_unread: str | None = None  # why a function's body could not be read for its references

    @property
    def is_setting(self) -> bool:
        return self.setting is not None


def _names(nodes: Iterable[object] | None) -> list[str]:
    return [n.sval for n in nodes or () if isinstance(n, ast.String)]


def _qual(names: list[str]) -> tuple[str, str]:
    # pg_dump qualifies everything (it runs with search_path = ''); unqualified names in hand-written
    # SQL are taken as public, the default search_path's first writable schema.
    if len(names) == 1:
        return ("public", names[0])
    return (names[-2], names[-1])


def _ident(name: str) -> str:
    """An identifier quoted only where PostgreSQL needs it (display only: names in RemovedObject)."""
    # TableName.qualified applies the quoting rule to both parts; "x" never needs quoting.
    return TableName("x", name).qualified[2:]


def _display(schema: str, name: str) -> str:
    return TableName(schema, name).qualified


def _rel(rv: ast.RangeVar) -> Key:
    return ("rel", rv.schemaname or "public", rv.relname)


def _table(rv: ast.RangeVar) -> TableName:
    return TableName(rv.schemaname or "public", rv.relname)


def _type_display(tn: ast.TypeName) -> str:
    try:
        return str(RawStream()(tn))
    except Exception:  # display only: fall back to the bare name
        return ".".join(_names(tn.names))


def _walk(node: object) -> Iterator[ast.Node]:
    stack: list[object] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Node):
            yield current
            for attr in current:
                stack.append(getattr(current, attr))
        elif isinstance(current, (tuple, list)):
            stack.extend(current)


def _collect_refs(node: ast.Node, s: _Stmt) -> None:
    """Every object the statement names: relations, types, functions, regclass literals."""
    for n in _walk(node):
        if isinstance(n, ast.RangeVar):
            s.refs.add(_rel(n))
        elif isinstance(n, ast.TypeName):
            names = _names(n.names)
            if not names:
                continue
            if n.pct_type:
                # `table.column%TYPE`: a reference to the table.
                if len(names) >= 2:
                    s.refs.add(("rel", *_qual(names[:-1])))
                continue
            s.refs.add(("type", *_qual(names)))
            s.typenames.append(n)
        elif isinstance(n, ast.FuncCall):
            names = _names(n.funcname)
            if names:
                s.refs.add(("func", *_qual(names)))
        elif isinstance(n, ast.ObjectWithArgs):
            names = _names(n.objname)
            if names:
                s.refs.add(("func", *_qual(names)))
        elif isinstance(n, ast.CreateTrigStmt):
            names = _names(n.funcname)
            if names:
                s.refs.add(("func", *_qual(names)))
        elif isinstance(n, ast.TypeCast):
            # nextval('public.some_seq'::regclass): the sequence, named in a literal.
            target = _names(n.typeName.names) if n.typeName is not None else []
            if target and target[-1] == "regclass" and isinstance(n.arg, ast.A_Const):
                value = n.arg.val
                if isinstance(value, ast.String):
                    try:
                        table = TableName.parse(value.sval)
                    except ValueError:
                        continue
                    s.refs.add(("rel", table.schema, table.name))


# ---- function bodies -------------------------------------------------------------------------------
# A function body is a string the server reads only when the function runs, so the statements around
# it say nothing of what it touches: `INSERT INTO ai_events` in a core trigger's function is found only
# by parsing the body (an SQL body with the SQL parser, a PL/pgSQL body with pglast's PL/pgSQL parser,
# whose embedded statements are strings parsed again). `BEGIN ATOMIC` bodies are already parse trees.
_PLPGSQL_DEFAULT, _PLPGSQL_EXPR = 0, 2  # PLpgSQL_expr.parseMode (RawParseMode); 3-5: assignments
_ASSIGN_TOKENS = frozenset({"COLON_EQUALS", "ASCII_61"})  # `:=` and `=`


def _function_search_path(node: ast.CreateFunctionStmt) -> str | None:
    """The first schema of the function's own `SET search_path`, where unqualified names in its body
    resolve (None: the default, public)."""
    for opt in node.options or ():
        if not (isinstance(opt, ast.DefElem) and opt.defname == "set"):
            continue
        setting = opt.arg
        if not isinstance(setting, ast.VariableSetStmt) or (setting.name or "").lower() != "search_path":
            continue
        for arg in setting.args or ():
            value = getattr(getattr(arg, "val", None), "sval", None)
            if value and value not in ("$user", "pg_catalog", "pg_temp"):
                return str(value)
    return None


def _body_statements(text: str, mode: int) -> list[ast.Node]:
    """The parse trees of one embedded SQL text of a PL/pgSQL body (a statement, an expression, or an
    assignment `target := expression`)."""
    if mode == _PLPGSQL_EXPR:
        text = "SELECT " + text  # an expression: PL/pgSQL evaluates it as this very query
    elif mode != _PLPGSQL_DEFAULT:
        # An assignment: the expression is what follows the first `:=` or `=` token.
        token = next((t for t in scan(text) if t.name in _ASSIGN_TOKENS), None)
        if token is None:
            return []
        text = "SELECT " + text[token.end + 1 :]  # scan() gives character offsets
    return [raw.stmt for raw in pglast.parse_sql(text)]


def _plpgsql_sql(tree: object) -> Iterator[tuple[str, str, int]]:
    """What a parse_plpgsql tree names: ("sql", text, parse mode) for each embedded SQL text, and
    ("rowtype" | "type", declared name, 0) for each `tbl%ROWTYPE` / `tbl.col%TYPE` declaration."""
    stack = [tree]
    while stack:
        current = stack.pop()
        if isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict):
            expr = current.get("PLpgSQL_expr")
            if isinstance(expr, dict) and isinstance(expr.get("query"), str):
                yield "sql", expr["query"], int(expr.get("parseMode") or 0)
            typ = current.get("PLpgSQL_type")
            if isinstance(typ, dict) and isinstance(typ.get("typname"), str):
                name = typ["typname"]
                for suffix in ("%rowtype", "%type"):
                    if name.lower().endswith(suffix):
                        yield suffix[1:], name[: -len(suffix)], 0
                        break
            stack.extend(current.values())


def _declared_relation(text: str, drop_column: bool) -> Key | None:
    # `tbl%ROWTYPE` names a table; `tbl.col%TYPE` a table's column: parsed as a (column) reference.
    try:
        target = pglast.parse_sql("SELECT " + text)[0].stmt
    except ParseError:
        return None
    ref = next((n for n in _walk(target) if isinstance(n, ast.ColumnRef)), None)
    names = _names(ref.fields) if ref is not None else []
    if drop_column:
        names = names[:-1]
    return ("rel", *_qual(names)) if names else None


def _collect_body_refs(s: _Stmt, node: ast.CreateFunctionStmt) -> None:
    """Add what the function's body names to its references (`s.body_unread` says why it could not)."""
    if node.sql_body is not None:
        return  # BEGIN ATOMIC: a parse tree, walked with the statement
    language = (_defelem_names(node.options, "language") or ["sql"])[0].lower()
    body = _defelem_names(node.options, "as")
    if language not in ("sql", "plpgsql") or not body:
        return
    trees: list[ast.Node] = []
    try:
        if language == "sql":
            trees = [raw.stmt for raw in pglast.parse_sql(body[0])]
        else:
            for what, text, mode in _plpgsql_sql(pglast.parse_plpgsql(s.st.text)):
                if what == "sql":
                    trees.extend(_body_statements(text, mode))
                elif (key := _declared_relation(text, drop_column=what == "type")) is not None:
                    s.refs.add(key)
    except (ParseError, UnicodeError) as exc:
        s.body_unread = " ".join(str(exc).split())
        return
    search_path = _function_search_path(node)
    for tree in trees:
        if search_path is not None:
            for n in _walk(tree):
                if isinstance(n, ast.RangeVar) and n.schemaname is None:
                    n.schemaname = search_path
        _collect_refs(tree, s)


def _defelem_names(options: Iterable[object] | None, name: str) -> list[str] | None:
    for opt in options or ():
        if isinstance(opt, ast.DefElem) and opt.defname == name:
            arg = opt.arg
            if isinstance(arg, ast.String):
                return [arg.sval]
            if isinstance(arg, (tuple, list)):
                return _names(arg)
    return None


def _define(s: _Stmt, kind: str, schema: str, name: str, *keys: str) -> None:
    s.kind = kind
    s.name = _display(schema, name)
    s.schema = schema
    for key in keys:
        s.defines.append((key, schema, name))


def _describe(s: _Stmt) -> None:
    node = s.st.node
    if isinstance(node, ast.VariableSetStmt):
        s.kind, s.name, s.setting = "SET", node.name or "", node.name or ""
        return
    if is_set_config(node):
        s.kind, s.name, s.setting = "SET", "set_config", "set_config"
        return

    _collect_refs(node, s)
    if isinstance(node, ast.CreateSchemaStmt):
        s.kind, s.name, s.schema = "SCHEMA", _ident(node.schemaname), node.schemaname
        s.defines.append(("schema", node.schemaname))
    elif isinstance(node, ast.CreateExtensionStmt):
        s.kind, s.name = "EXTENSION", node.extname
        s.defines.append(("ext", node.extname))
        schema = _defelem_names(node.options, "schema")
        if schema:
            s.schema = schema[0]
            s.refs.add(("schema", schema[0]))
    elif isinstance(node, (ast.CreateStmt, ast.CreateForeignTableStmt)):
        base = node.base if isinstance(node, ast.CreateForeignTableStmt) else node
        table = _table(base.relation)
        _define(
            s,
            "TABLE" if isinstance(node, ast.CreateStmt) else "FOREIGN TABLE",
            table.schema,
            table.name,
            "rel",
            "type",
        )
        s.owner_key = _rel(base.relation)
        for elt in _walk(base.tableElts):
            if isinstance(elt, ast.Constraint) and elt.contype == ConstrType.CONSTR_FOREIGN:
                s.inline_fk = True
                s.fks.append(_fk(elt, table, elt.conname or "(unnamed)"))
    elif isinstance(node, ast.ViewStmt):
        table = _table(node.view)
        _define(s, "VIEW", table.schema, table.name, "rel", "type")
    elif isinstance(node, ast.CreateTableAsStmt):
        table = _table(node.into.rel)
        kind = "MATERIALIZED VIEW" if node.objtype == ObjectType.OBJECT_MATVIEW else "TABLE AS"
        _define(s, kind, table.schema, table.name, "rel", "type")
    elif isinstance(node, ast.CreateSeqStmt):
        table = _table(node.sequence)
        _define(s, "SEQUENCE", table.schema, table.name, "rel")
    elif isinstance(node, ast.AlterSeqStmt):
        seq = _table(node.sequence)
        s.kind, s.name = "SEQUENCE OWNED BY", seq.qualified
        s.owned_sequence = _rel(node.sequence)
        owned_by = _defelem_names(node.options, "owned_by")
        if owned_by and len(owned_by) >= 2:
            s.owner_key = ("rel", *_qual(owned_by[:-1]))
            s.refs.add(s.owner_key)
        s.attachment = True
    elif isinstance(node, ast.CompositeTypeStmt):
        table = _table(node.typevar)
        _define(s, "TYPE", table.schema, table.name, "type", "rel")
    elif isinstance(node, ast.CreateEnumStmt):
        _define(s, "TYPE", *_qual(_names(node.typeName)), "type")
    elif isinstance(node, ast.CreateRangeStmt):
        _define(s, "TYPE", *_qual(_names(node.typeName)), "type")
    elif isinstance(node, ast.CreateDomainStmt):
        _define(s, "DOMAIN", *_qual(_names(node.domainname)), "type")
    elif isinstance(node, ast.DefineStmt):
        names = _names(node.defnames)
        if names:
            key, kind = {
                ObjectType.OBJECT_TYPE: ("type", "TYPE"),
                ObjectType.OBJECT_AGGREGATE: ("func", "AGGREGATE"),
                ObjectType.OBJECT_OPERATOR: ("op", "OPERATOR"),
                ObjectType.OBJECT_COLLATION: ("collation", "COLLATION"),
            }.get(node.kind, ("object", str(node.kind.name).removeprefix("OBJECT_")))
            _define(s, kind, *_qual(names), key)
    elif isinstance(node, ast.CreateFunctionStmt):
        _define(s, "PROCEDURE" if node.is_procedure else "FUNCTION", *_qual(_names(node.funcname)), "func")
        _collect_body_refs(s, node)
    elif isinstance(node, ast.IndexStmt):
        table = _table(node.relation)
        s.kind, s.name, s.schema = "INDEX", _display(table.schema, node.idxname or ""), table.schema
        if node.idxname:
            s.defines.append(("rel", table.schema, node.idxname))
        s.owner_key = _rel(node.relation)
        s.index_method = (node.accessMethod or "btree").lower()
        s.category = "vector_indexes" if s.index_method in VECTOR_INDEX_METHODS else "indexes"
    elif isinstance(node, ast.CreateTrigStmt):
        _attached_to_table(s, "TRIGGER", "trigger", node.relation, node.trigname)
    elif isinstance(node, ast.CreatePolicyStmt):
        _attached_to_table(s, "POLICY", "policy", node.table, node.policy_name)
    elif isinstance(node, ast.RuleStmt):
        _attached_to_table(s, "RULE", "rule", node.relation, node.rulename)
    elif isinstance(node, ast.CreateStatsStmt):
        names = _names(node.defnames)
        if names:
            _define(s, "STATISTICS", *_qual(names), "statistics")
        relations = [r for r in node.relations or () if isinstance(r, ast.RangeVar)]
        if relations:
            s.owner_key = _rel(relations[0])
    elif isinstance(node, ast.AlterTableStmt):
        _describe_alter_table(s, node)
    elif isinstance(node, ast.CommentStmt):
        _describe_comment(s, node)
    elif isinstance(node, (ast.AlterDomainStmt, ast.AlterEnumStmt, ast.AlterFunctionStmt)):
        s.kind, s.attachment = type(node).__name__.removesuffix("Stmt").upper(), True
    else:
        s.kind = type(node).__name__.removesuffix("Stmt")
    if not s.name:
        s.name = s.kind
    if s.defines and s.schema and s.kind != "SCHEMA":
        # Every object needs its schema: this is how CREATE SCHEMA follows objects into the AI schema.
        s.refs.add(("schema", s.schema))
    s.refs -= set(s.defines)


def _fk(con: ast.Constraint, table: TableName, name: str) -> _ForeignKey:
    return _ForeignKey(
        constraint=name,
        table=table,
        columns=tuple(_names(con.fk_attrs)),
        ref_table=_table(con.pktable),
        ref_columns=tuple(_names(con.pk_attrs)),
    )


def _attached_to_table(s: _Stmt, kind: str, key: str, relation: ast.RangeVar, name: str) -> None:
    table = _table(relation)
    s.kind, s.name, s.schema = kind, f"{table.qualified}.{_ident(name)}", table.schema
    s.defines.append((key, table.schema, table.name, name))
    s.owner_key = _rel(relation)


def _describe_alter_table(s: _Stmt, node: ast.AlterTableStmt) -> None:
    table = _table(node.relation)
    s.owner_key = _rel(node.relation)
    s.kind, s.name = "ALTER TABLE", table.qualified
    if node.objtype == ObjectType.OBJECT_INDEX:
        # ALTER INDEX parent ATTACH PARTITION child: part of building the partitioned index, which
        # must be complete (valid) before a foreign key can rely on it.
        s.category = "indexes"
    cmds = [c for c in node.cmds or () if isinstance(c, ast.AlterTableCmd)]
    s.multi_cmd = len(cmds) > 1
    for cmd in cmds:
        if cmd.subtype == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            con = cmd.def_
            conname = con.conname or "(unnamed)"
            s.name = f"{table.qualified}.{_ident(conname)}"
            s.defines.append(("constraint", table.schema, table.name, conname))
            if con.contype in (
                ConstrType.CONSTR_PRIMARY,
                ConstrType.CONSTR_UNIQUE,
                ConstrType.CONSTR_EXCLUSION,
            ):
                s.kind, s.category = "CONSTRAINT", "indexes"
                s.defines.append(("rel", table.schema, conname))  # the constraint's index
            elif con.contype == ConstrType.CONSTR_FOREIGN:
                s.kind, s.category = "FK CONSTRAINT", "foreign_keys"
                s.fks.append(_fk(con, table, conname))
            else:
                s.kind = "CONSTRAINT"
        elif cmd.subtype == AlterTableType.AT_ColumnDefault:
            s.kind, s.name = "DEFAULT", f"{table.qualified}.{_ident(cmd.name or '')}"
        elif cmd.subtype == AlterTableType.AT_AddIdentity and isinstance(cmd.def_, ast.Constraint):
            seq = _defelem_names(cmd.def_.options, "sequence_name")
            if seq:
                schema, name = _qual(seq)
                s.kind, s.name = "SEQUENCE", _display(schema, name)
                s.identity_sequence = ("rel", schema, name)
                s.defines.append(s.identity_sequence)
        elif cmd.subtype == AlterTableType.AT_AttachPartition:
            s.kind = "ATTACH PARTITION"
            child = getattr(cmd.def_, "name", None)
            if isinstance(child, ast.RangeVar) and node.objtype == ObjectType.OBJECT_TABLE:
                s.partition_child = _table(child)
        elif cmd.subtype == AlterTableType.AT_ClusterOn and cmd.name:
            s.kind = "CLUSTER ON"
            s.refs.add(("rel", table.schema, cmd.name))
        elif cmd.subtype == AlterTableType.AT_ReplicaIdentity and getattr(cmd.def_, "name", None):
            s.kind = "REPLICA IDENTITY"
            s.refs.add(("rel", table.schema, cmd.def_.name))
    # An ALTER on a view/sequence/index (no table owns it) follows its object like a comment does.
    s.attachment = True


def _describe_comment(s: _Stmt, node: ast.CommentStmt) -> None:
    obj = node.object
    objtype = node.objtype
    target: Key | None = None
    s.attachment = True
    rel_types = (
        ObjectType.OBJECT_TABLE,
        ObjectType.OBJECT_VIEW,
        ObjectType.OBJECT_MATVIEW,
        ObjectType.OBJECT_SEQUENCE,
        ObjectType.OBJECT_INDEX,
        ObjectType.OBJECT_FOREIGN_TABLE,
    )
    on_table = {
        ObjectType.OBJECT_TABCONSTRAINT: "constraint",
        ObjectType.OBJECT_TRIGGER: "trigger",
        ObjectType.OBJECT_POLICY: "policy",
        ObjectType.OBJECT_RULE: "rule",
    }
    if objtype in rel_types and isinstance(obj, (tuple, list)):
        target = ("rel", *_qual(_names(obj)))
        s.owner_key = target
    elif objtype == ObjectType.OBJECT_COLUMN and isinstance(obj, (tuple, list)):
        names = _names(obj)
        target = ("rel", *_qual(names[:-1]))
        s.owner_key = target
    elif objtype in on_table and isinstance(obj, (tuple, list)):
        names = _names(obj)
        schema, table = _qual(names[:-1])
        target = (on_table[objtype], schema, table, names[-1])
        s.owner_key = ("rel", schema, table)
        s.refs.add(s.owner_key)
    elif objtype == ObjectType.OBJECT_SCHEMA and isinstance(obj, ast.String):
        target = ("schema", obj.sval)
    elif objtype == ObjectType.OBJECT_EXTENSION and isinstance(obj, ast.String):
        target = ("ext", obj.sval)
    elif isinstance(obj, ast.TypeName):
        target = ("type", *_qual(_names(obj.names)))
    elif isinstance(obj, ast.ObjectWithArgs):
        target = ("func", *_qual(_names(obj.objname)))
    s.kind = "COMMENT"
    what = str(objtype.name).removeprefix("OBJECT_")
    if isinstance(obj, (tuple, list)):
        s.name = f"{what} {'.'.join(_ident(n) for n in _names(obj))}"
    elif target is not None:
        s.name = f"{what} {'.'.join(_ident(n) for n in target[1:])}"
    else:
        s.name = what
    if target is not None:
        s.comment_target = target
        s.refs.add(target)


# ---- the split -----------------------------------------------------------------------------------
class _Graph:
    """The statements of both sections with their definitions resolved."""

    def __init__(self, pre_data: str, post_data: str) -> None:
        self._users: dict[int, list[int]] | None = None
        self.stmts: list[_Stmt] = []
        for section, text in (("pre", pre_data), ("post", post_data)):
            for st in statements_of(text):
                s = _Stmt(idx=len(self.stmts), section=section, st=st)
                _describe(s)
                self.stmts.append(s)
        self.defs: dict[Key, list[int]] = {}
        for s in self.stmts:
            for key in s.defines:
                self.defs.setdefault(key, []).append(s.idx)
        self.tables: dict[TableName, int] = {}
        for s in self.stmts:
            if s.kind in ("TABLE", "FOREIGN TABLE"):
                self.tables[TableName(*s.defines[0][1:])] = s.idx
        index_table: dict[Key, TableName] = {}
        for s in self.stmts:
            if s.owner_key is not None and s.kind in ("INDEX", "CONSTRAINT"):
                table = TableName(*s.owner_key[1:])
                for key in s.defines:
                    if key[0] == "rel":
                        index_table[key] = table
        for s in self.stmts:
            if s.owner_key is not None and s.owner_key[0] == "rel":
                table = TableName(*s.owner_key[1:])
                if table in self.tables:
                    s.owner = table
                elif s.owner_key in index_table:
                    s.owner = index_table[s.owner_key]
            for tn in s.typenames:
                schema, name = _qual(_names(tn.names))
                if name in PGVECTOR_TYPES and ("type", schema, name) not in self.defs:
                    s.vector_types.append(_type_display(tn))
        # Post-data grouping: a comment goes with what it comments on; anything touching an hnsw/
        # ivfflat index (CLUSTER ON, comments) must come after it, so it joins that part.
        for s in self.stmts:
            if (
                s.section != "post"
                or s.kind == "INDEX"
                or s.category not in ("triggers_and_other", "indexes")
            ):
                continue
            if s.category == "indexes" and s.kind != "ATTACH PARTITION":
                continue  # PRIMARY KEY / UNIQUE / EXCLUDE constraints stay with the indexes
            targets = [s.comment_target] if s.comment_target is not None else sorted(s.refs)
            for key in targets:
                cats = {
                    self.stmts[d].category for d in self.defs.get(key, ()) if self.stmts[d].section == "post"
                }
                if "vector_indexes" in cats:
                    s.category = "vector_indexes"
                elif s.comment_target is not None and cats:
                    s.category = next(c for c in POST_PARTS if c in cats)

    def resolve(self, key: Key) -> list[int]:
        return self.defs.get(key, [])

    def users(self) -> dict[int, list[int]]:
        """For each defining statement, the statements that reference what it defines."""
        if self._users is not None:
            return self._users
        out: dict[int, list[int]] = {}
        for s in self.stmts:
            for key in s.refs:
                for d in self.defs.get(key, ()):
                    if d != s.idx:
                        out.setdefault(d, []).append(s.idx)
        self._users = out
        return out


@dataclass
class _Removal:
    reason: str
    vector: bool = False
    accepted: bool = False


def split_schema(
    pre_data: str,
    post_data: str,
    ai_tables: Collection[TableName],
    *,
    core_major: int = 18,
    ai_major: int = 18,
    ai_extensions: Collection[str] | None = None,
    accept: Collection[str] = (),
) -> SchemaSplit:
    """Split a full-database schema dump (pg_dump `--section=pre-data` and `--section=post-data`).

    `ai_tables` go to the AI database; every other table to core. `core_major`/`ai_major` are the
    target servers' major versions (settings they do not know are dropped; PostgreSQL 18-only
    syntax is refused for older targets). `ai_extensions` limits which of the source's other
    extensions the AI schema creates (default: all of them, since AI tables may use their functions).

    A function, trigger, view, rule, policy (or any other object) that would reference a table on the
    other side, and so could be created in neither database as it is, is refused by name, as is a
    sequence drawn by a core and an AI table; unless `accept` (the plan's `accept_across_split`)
    names it: then it is left out (a sequence: copied into both) and listed in `accepted`.
    """
    graph = _Graph(pre_data, post_data)
    stmts = graph.stmts
    ai = _with_partitions(frozenset(ai_tables), stmts)
    _check_ai_tables(ai, graph)

    vector_ext = [s.idx for s in stmts if s.kind == "EXTENSION" and s.name == PGVECTOR_EXTENSION]
    vector_schema = next((stmts[i].schema for i in vector_ext if stmts[i].schema), "public")
    vector_comments = [s.idx for s in stmts if s.comment_target == ("ext", PGVECTOR_EXTENSION)]

    soft_refs, soft_idx = _soft_references(stmts, ai)
    for s in stmts:
        if (
            s.partition_child is not None
            and s.owner is not None
            and (s.owner in ai) != (s.partition_child in ai)
        ):
            raise SchemaSplitError(
                f"{s.partition_child.qualified} is a partition of {s.owner.qualified}: route a partitioned "
                "table and all its partitions to the same database"
            )

    removed, notes = _core_removals(graph, ai, vector_ext + vector_comments, soft_idx)
    excluded = set(vector_ext) | set(vector_comments) | soft_idx
    in_ai, ai_skipped = _ai_members(graph, ai, removed, excluded, ai_extensions)
    accepted, shared = _across_split(graph, ai, removed, in_ai, excluded, accept, notes)
    accepted_names = {
        (stmts[i].kind, stmts[i].name): removed[i].reason for i in removed if removed[i].accepted
    }
    ai_skipped = [
        replace(r, reason=accepted_names[(r.kind, r.name)], accepted=True)
        if (r.kind, r.name) in accepted_names
        else r
        for r in ai_skipped
    ]

    for s in stmts:
        if s.kind == "SEQUENCE" and s.idx in in_ai and s.idx not in removed and s.idx not in shared:
            notes.append(
                f"sequence {s.name} is copied into both databases (only one side draws from it): each "
                "copy hands out values independently after the cutover"
            )

    # ---- versions --------------------------------------------------------------------------------
    core_idx = [s.idx for s in stmts if s.idx not in removed]
    ai_idx = sorted(in_ai)
    _check_target_version(graph, core_idx, core_major, "core")
    _check_target_version(graph, ai_idx, ai_major, "AI")

    # ---- render ----------------------------------------------------------------------------------
    core_set = set(core_idx)
    core_pre = _render(graph, "pre", core_set, core_major, header=_header("core", "pre-data", core_major))
    core_post = _render(
        graph,
        "post",
        core_set,
        core_major,
        header=_header("core", "post-data", core_major),
        appendix=_refreshes(graph, core_set),
    )
    core_parts = _render_parts(graph, core_set, core_major, "core")

    prelude = _ai_prelude(vector_schema)
    skip_render = {
        s.idx for s in stmts if s.kind == "SCHEMA" and s.schema == vector_schema and s.idx in in_ai
    }
    ai_render = in_ai - skip_render
    ai_pre = _render(
        graph, "pre", ai_render, ai_major, header=_header("AI", "pre-data", ai_major), prelude=prelude
    )
    ai_refresh = _refreshes(graph, ai_render)
    ai_post = _render(
        graph, "post", ai_render, ai_major, header=_header("AI", "post-data", ai_major), appendix=ai_refresh
    )
    ai_parts = _render_parts(graph, ai_render, ai_major, "AI")
    ai_post_other = _render(
        graph,
        "post",
        {i for i in ai_render if stmts[i].category != "vector_indexes"},
        ai_major,
        header=_header("AI", "post-data without hnsw/ivfflat indexes", ai_major),
        appendix=ai_refresh,
    )
    ai_vector = _vector_index_list(graph, sorted(ai_render))

    removed_list = [
        RemovedObject(
            stmts[i].kind,
            stmts[i].name,
            removed[i].reason,
            moved_to_ai=i in in_ai,
            accepted=removed[i].accepted,
        )
        for i in sorted(removed)
    ]
    return SchemaSplit(
        core_pre=core_pre,
        core_post=core_post,
        ai_pre=ai_pre,
        ai_post=ai_post,
        removed=removed_list,
        soft_references=soft_refs,
        core_post_parts=core_parts,
        ai_post_parts=ai_parts,
        ai_post_other=ai_post_other,
        ai_vector_indexes=ai_vector,
        ai_skipped=ai_skipped,
        notes=notes,
        accepted=accepted,
        core_major=core_major,
        ai_major=ai_major,
    )


def _with_partitions(ai: frozenset[TableName], stmts: list[_Stmt]) -> frozenset[TableName]:
    """`ai` with every partition (at any depth) of a partitioned table in it: the plan routes a
    partitioned table by its name, and its partitions (ATTACH PARTITION in the dump) go with it."""
    children: dict[TableName, list[TableName]] = {}
    for s in stmts:
        if s.partition_child is not None and s.owner is not None:
            children.setdefault(s.owner, []).append(s.partition_child)
    result, pending = set(ai), list(ai)
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in result:
                result.add(child)
                pending.append(child)
    return frozenset(result)


def _core_removals(
    graph: _Graph, ai: frozenset[TableName], vector_ext: list[int], soft_idx: set[int]
) -> tuple[dict[int, _Removal], list[str]]:
    """What the core schema must not get, each with its reason; raises for core tables that need it."""
    stmts = graph.stmts
    removed: dict[int, _Removal] = {}
    for i in vector_ext:
        what = "comment on the pgvector extension" if stmts[i].kind == "COMMENT" else "the pgvector extension"
        removed[i] = _Removal(f"{what}: the core database must never have it", vector=True)
    for s in stmts:
        if s.idx in removed or s.is_setting:
            continue
        if s.idx in soft_idx:
            removed[s.idx] = _Removal(
                "foreign key between an AI table and a core table (now a soft reference)"
            )
        elif s.owner is not None and s.owner in ai:
            removed[s.idx] = _Removal(f"belongs to AI table {s.owner.qualified}")
        elif s.index_method in VECTOR_INDEX_METHODS:
            removed[s.idx] = _Removal(f"index uses the pgvector access method {s.index_method}", vector=True)

    notes: list[str] = []
    _remove_ai_owned_sequences(graph, ai, removed, notes)

    for s in stmts:
        if s.idx in removed or s.is_setting or not s.vector_types:
            continue
        if _is_core_structure(s, ai):
            _raise_core_table_needs(graph, s, f"pgvector type {s.vector_types[0]}", removed)
        removed[s.idx] = _Removal(f"uses pgvector type {s.vector_types[0]}", vector=True)

    users = graph.users()
    _propagate(graph, ai, removed, users, list(removed))
    # A schema whose every object left core goes too (e.g. an `extensions` schema holding only vector).
    emptied: list[int] = []
    for s in stmts:
        if s.kind != "SCHEMA" or s.idx in removed:
            continue
        members = [m.idx for m in stmts if m.schema == s.schema and m.idx != s.idx and m.defines]
        if members and all(m in removed for m in members):
            removed[s.idx] = _Removal("schema only held objects removed from core")
            emptied.append(s.idx)
    _propagate(graph, ai, removed, users, emptied)
    return removed, notes


def _ai_members(
    graph: _Graph,
    ai: frozenset[TableName],
    removed: dict[int, _Removal],
    excluded: set[int],
    ai_extensions: Collection[str] | None,
) -> tuple[set[int], list[RemovedObject]]:
    """The statements of the AI schema: the AI tables' own, and everything they need, transitively."""
    stmts = graph.stmts
    closure = _Closure(graph, ai, excluded)
    in_ai: set[int] = set()
    skipped: list[RemovedObject] = []
    for s in stmts:
        if s.is_setting or s.idx in excluded or s.owner is None or s.owner not in ai:
            continue
        members, blockers = closure(s.idx)
        if blockers and s.section == "pre" and s.kind != "COMMENT":
            # The AI table itself (or its defaults/identity) would be incomplete: refuse.
            raise SchemaSplitError(
                f"AI table {s.owner.qualified} needs {blockers[0]} ({s.kind} {s.name}), which stays in "
                "core: route both to the same database"
            )
        if blockers:
            skipped.append(RemovedObject(s.kind, s.name, f"needs {blockers[0]}, which stays in core"))
        else:
            in_ai |= members
    for s in stmts:
        wanted = ai_extensions is None or s.name in ai_extensions
        if s.kind == "EXTENSION" and s.idx not in excluded and wanted:
            members, blockers = closure(s.idx)
            if not blockers:
                in_ai |= members
    # What core had to drop and can live on its own in the AI database: views over AI tables,
    # functions, types and domains over pgvector types.
    for i in removed:
        s = stmts[i]
        if i in excluded or s.owner is not None or s.kind == "SCHEMA" or s.attachment or not s.defines:
            continue
        members, blockers = closure(i)
        if not blockers:
            in_ai |= members
    # Comments and ALTERs follow their object.
    for s in stmts:
        if s.idx in in_ai or s.idx in excluded or not s.attachment or s.is_setting:
            continue
        resolved = [d for key in s.refs for d in graph.resolve(key)]
        if resolved and all(d in in_ai for d in resolved):
            members, blockers = closure(s.idx)
            if not blockers:
                in_ai |= members
    return in_ai, skipped


# ---- objects reaching across the split ---------------------------------------------------------------
ACCEPT_KEY = "accept_across_split"  # the routing plan's key (routing.py)
# Statements that never stand alone: they follow (or are) what they modify, and are named through it.
_NOT_REFUSED_KINDS = frozenset({"COMMENT", "SCHEMA", "EXTENSION", "SEQUENCE OWNED BY"})


def _accept_name(name: str) -> str:
    # `public.` may be left out in the plan, as everywhere else in it.
    return name.removeprefix("public.")


def _path_to(graph: _Graph, start: int, target: Callable[[_Stmt], bool]) -> list[_Stmt] | None:
    """The shortest chain of references from `start` to a statement `target` accepts (both ends
    included), or None."""
    stmts = graph.stmts
    previous: dict[int, int | None] = {start: None}
    queue = [start]
    while queue:
        i = queue.pop(0)
        if i != start and target(stmts[i]):
            chain = [stmts[i]]
            while (p := previous[chain[-1].idx]) is not None:
                chain.append(stmts[p])
            return chain[::-1]
        for key in sorted(stmts[i].refs):
            for d in graph.resolve(key):
                if d not in previous:
                    previous[d] = i
                    queue.append(d)
    return None


def _crossing_line(graph: _Graph, s: _Stmt, side: str, other: Callable[[_Stmt], bool], why: str) -> str:
    """`TRIGGER public.orders.t (core) calls FUNCTION public.f, which uses AI table public.e`."""
    head = f"{s.kind} {s.name} ({side})"
    chain = _path_to(graph, s.idx, other)
    if not chain or chain[-1].owner is None:
        return f"{head} {why}"
    other_side = "AI" if side == "core" else "core"
    via = [
        c
        for c in chain[1:-1]
        if c.kind in ("FUNCTION", "PROCEDURE", "AGGREGATE", "VIEW", "MATERIALIZED VIEW")
    ]
    table = f"{other_side} table {chain[-1].owner.qualified}"
    if not via:
        return f"{head} uses {table}"
    return f"{head} uses " + ", which uses ".join(f"{c.kind} {c.name}" for c in via) + f", which uses {table}"


def _across_split(
    graph: _Graph,
    ai: frozenset[TableName],
    removed: dict[int, _Removal],
    in_ai: set[int],
    excluded: set[int],
    accept: Collection[str],
    notes: list[str],
) -> tuple[list[AcceptedObject], set[int]]:
    """Refuse, by name, what would be created in neither database (it needs tables on both sides)
    and sequences drawn from both; what `accept` names is left out (a sequence: copied into both).

    Returns one line per accepted object and the sequences both sides draw from."""
    stmts = graph.stmts
    wanted = {_accept_name(n) for n in accept}
    used: set[str] = set()
    refused: list[str] = []
    accepted: list[AcceptedObject] = []

    def on_core_table(s: _Stmt) -> bool:
        return s.owner is not None and s.owner not in ai

    def on_ai_table(s: _Stmt) -> bool:
        return s.owner is not None and s.owner in ai

    def decide(s: _Stmt, line: str, left_out: str) -> None:
        if _accept_name(s.name) in wanted:
            used.add(_accept_name(s.name))
            own = s.defines[0][-1] if s.owner is not None and s.defines else ""
            detail = f"{line}: {left_out} ({ACCEPT_KEY})"
            accepted.append(AcceptedObject(s.kind, s.name, detail, s.owner if own else None, own))
            if s.idx in removed:
                removed[s.idx] = replace(
                    removed[s.idx],
                    reason=f"accepted in the routing plan ({ACCEPT_KEY}): {line}",
                    accepted=True,
                )
        else:
            refused.append(line)

    for s in stmts:
        if s.is_setting or s.idx in excluded or s.idx in in_ai or s.kind in _NOT_REFUSED_KINDS:
            continue
        if s.attachment and not s.defines:
            continue  # an ALTER of an object that is itself left out
        if on_ai_table(s):
            # An AI table's own statement the AI database cannot have: it needs something of core.
            line = _crossing_line(graph, s, "AI", on_core_table, "needs an object that stays in core")
            decide(s, line, "left out of the AI database")
        elif s.idx in removed:
            if removed[s.idx].vector and _path_to(graph, s.idx, on_ai_table) is None:
                # Needs pgvector but nothing of the AI side (an ivfflat index over a core column cast
                # to vector): core may never have it, by design, and it would be so after any routing.
                notes.append(
                    f"{s.kind} {s.name} is left out of core ({removed[s.idx].reason}): "
                    "the core database never has pgvector"
                )
                continue
            line = _crossing_line(graph, s, "core", on_ai_table, removed[s.idx].reason)
            left_out = "left out of both databases"
            if s.kind == "POLICY":
                left_out += " (row-level security stays enabled: other roles may then see no rows)"
            decide(s, line, left_out)

    # A sequence both sides draw from: two copies hand out the same values after the switch.
    shared: set[int] = set()
    users = graph.users()
    for s in stmts:
        if s.kind != "SEQUENCE" or s.idx not in in_ai or s.idx in removed:
            continue
        drawers = [
            stmts[u]
            for u in users.get(s.idx, ())
            if stmts[u].kind != "COMMENT" and stmts[u].owned_sequence is None and not stmts[u].is_setting
        ]
        core_users = [u for u in drawers if u.idx not in removed]
        ai_users = [u for u in drawers if u.idx in in_ai]
        if not core_users or not ai_users:
            continue
        shared.add(s.idx)
        core_user, ai_user = core_users[0], ai_users[0]

        def user(u: _Stmt, side: str) -> str:
            return f"{side} table {u.owner.qualified}" if u.owner is not None else f"{side} {u.kind} {u.name}"

        line = (
            f"{s.kind} {s.name} (core and AI) is drawn by {user(core_user, 'core')} and "
            f"{user(ai_user, 'AI')}: two copies would hand out the same values"
        )
        decide(s, line, "copied into both databases, each handing out values on its own")

    for s in stmts:
        if s.body_unread is not None and (s.idx not in removed or s.idx in in_ai):
            notes.append(
                f"{s.kind} {s.name}: its body could not be read ({s.body_unread}), so what it references "
                "is not checked against the split"
            )
    for name in sorted(wanted - used):
        notes.append(f"{ACCEPT_KEY} names {name}, which does not reach across the split: nothing to accept")
    if refused:
        raise SchemaSplitError(
            f"{len(refused)} object(s) would reference the other database and cannot be copied as they are: "
            + "; ".join(refused)
            + f". Change or drop them in the source, route what they use to the same database, or list "
            f"them by name under {ACCEPT_KEY} in the routing plan (an accepted object is left out; a "
            "shared sequence is copied into both)"
        )
    return accepted, shared


def _check_ai_tables(ai: frozenset[TableName], graph: _Graph) -> None:
    missing = sorted(t for t in ai if t not in graph.tables)
    if not missing:
        return
    hints = []
    for t in missing:
        close = [
            k
            for k in graph.tables
            if k.schema.lower() == t.schema.lower() and k.name.lower() == t.name.lower()
        ]
        hints.append(t.qualified + (f" (did you mean {close[0].qualified}?)" if close else ""))
    raise SchemaSplitError(f"AI tables not defined in the schema dump: {', '.join(hints)}")


def _soft_references(stmts: list[_Stmt], ai: frozenset[TableName]) -> tuple[list[SoftReference], set[int]]:
    refs: list[SoftReference] = []
    idx: set[int] = set()
    for s in stmts:
        for fk in s.fks:
            if (fk.table in ai) == (fk.ref_table in ai):
                continue
            if s.inline_fk or s.multi_cmd:
                # pg_dump always writes foreign keys as their own ALTER TABLE; a hand-written script
                # that does not cannot be cut without rewriting statements.
                raise SchemaSplitError(
                    f"foreign key {fk.constraint} on {fk.table.qualified} crosses core and AI but is part "
                    f"of a larger statement ({s.kind} {s.name}); write it as its own "
                    "ALTER TABLE ... ADD CONSTRAINT"
                )
            idx.add(s.idx)
            refs.append(
                SoftReference(
                    name=fk.constraint,
                    from_table=fk.table,
                    from_columns=fk.columns,
                    to_table=fk.ref_table,
                    to_columns=fk.ref_columns,
                    from_database="ai" if fk.table in ai else "core",
                    definition=s.st.sql,
                )
            )
    return refs, idx


def _remove_ai_owned_sequences(
    graph: _Graph, ai: frozenset[TableName], removed: dict[int, _Removal], notes: list[str]
) -> None:
    """Sequences OWNED BY an AI table leave core, unless a core table's default still uses one."""
    for s in graph.stmts:
        if s.owned_sequence is None or s.owner is None or s.owner not in ai:
            continue
        seq_defs = graph.resolve(s.owned_sequence)
        users = [
            graph.stmts[u]
            for d in seq_defs
            for u in graph.users().get(d, ())
            if u != s.idx
            and u not in removed
            and (graph.stmts[u].owner is None or graph.stmts[u].owner not in ai)
        ]
        if users:
            notes.append(
                f"sequence {s.name} is owned by AI table {s.owner.qualified} but used by "
                f"{users[0].kind} {users[0].name}: core keeps it (not owned)"
            )
            continue
        for d in seq_defs:
            removed.setdefault(d, _Removal(f"sequence owned by AI table {s.owner.qualified}"))


def _is_core_structure(s: _Stmt, ai: frozenset[TableName]) -> bool:
    """A pre-data statement shaping a core table (CREATE TABLE, defaults, identity, partitions).

    Those cannot be dropped without changing the table, so needing something removed is an error.
    """
    return s.owner is not None and s.owner not in ai and s.section == "pre" and s.kind != "COMMENT"


def _raise_core_table_needs(graph: _Graph, s: _Stmt, what: str, removed: dict[int, _Removal]) -> None:
    node = s.st.node
    if isinstance(node, (ast.CreateStmt, ast.CreateForeignTableStmt)) and s.owner is not None:
        base = node.base if isinstance(node, ast.CreateForeignTableStmt) else node
        for elt in base.tableElts or ():
            if not isinstance(elt, ast.ColumnDef) or elt.typeName is None:
                continue
            names = _names(elt.typeName.names)
            if not names:
                continue
            schema, name = _qual(names)
            display = _type_display(elt.typeName)
            if name in PGVECTOR_TYPES and ("type", schema, name) not in graph.defs:
                raise CoreTableHasVectorColumn(s.owner, elt.colname, display)
            type_defs = graph.resolve(("type", schema, name))
            if type_defs and all(d in removed and removed[d].vector for d in type_defs):
                raise CoreTableHasVectorColumn(s.owner, elt.colname, f"{display} (built on pgvector)")
    table = s.owner.qualified if s.owner else s.name
    raise SchemaSplitError(
        f"core table {table} needs {what} ({s.kind} {s.name}), which cannot be in the core database: "
        "route the table to the AI database or change the schema"
    )


def _propagate(
    graph: _Graph,
    ai: frozenset[TableName],
    removed: dict[int, _Removal],
    users: dict[int, list[int]],
    start: list[int],
) -> None:
    """Remove, transitively, everything that references only removed definitions."""
    stmts = graph.stmts
    queue = list(start)
    while queue:
        d = queue.pop()
        for u in users.get(d, ()):
            s = stmts[u]
            if u in removed or s.is_setting:
                continue
            cause: _Stmt | None = None
            for key in s.refs:
                defs = graph.resolve(key)
                if defs and all(x in removed for x in defs):
                    cause = stmts[defs[0]]
                    break
            if cause is None:
                continue
            vector = removed[cause.idx].vector
            if _is_core_structure(s, ai):
                _raise_core_table_needs(
                    graph, s, f"{cause.kind} {cause.name} ({removed[cause.idx].reason})", removed
                )
            verb = "comment on" if s.kind == "COMMENT" else "depends on"
            removed[u] = _Removal(f"{verb} removed {cause.kind} {cause.name}", vector=vector)
            queue.append(u)


class _Closure:
    """What one statement needs in the AI database: the definitions it references, transitively.

    Blocked when that reaches a core table (or anything belonging to one): such a statement cannot be
    created in the AI database.
    """

    def __init__(self, graph: _Graph, ai: frozenset[TableName], excluded: set[int]) -> None:
        self.graph = graph
        self.ai = ai
        self.excluded = excluded

    def __call__(self, start: int) -> tuple[set[int], list[str]]:
        stmts = self.graph.stmts
        seen: set[int] = set()
        blockers: list[str] = []
        stack = [start]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            s = stmts[i]
            if i in self.excluded:
                blockers.append(f"{s.kind} {s.name}")
                continue
            if s.owner is not None and s.owner not in self.ai:
                blockers.append(f"core table {s.owner.qualified}")
                continue
            for key in s.refs:
                stack.extend(self.graph.resolve(key))
        return seen, blockers


def _pg18_only(s: _Stmt) -> list[str]:
    """Constructs pg_dump 18 writes that PostgreSQL 16/17 reject (found by parse-tree inspection)."""
    found: list[str] = []
    node = s.st.node
    if isinstance(node, ast.CreateStmt):
        for elt in node.tableElts or ():
            if isinstance(elt, ast.Constraint) and elt.contype == ConstrType.CONSTR_NOTNULL:
                found.append("table-level NOT NULL constraint")
    if isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            con = getattr(cmd, "def_", None)
            if isinstance(con, ast.Constraint) and con.contype == ConstrType.CONSTR_NOTNULL:
                found.append("ALTER TABLE ... ADD CONSTRAINT ... NOT NULL")
    for n in _walk(node):
        if not isinstance(n, ast.Constraint):
            continue
        if n.contype == ConstrType.CONSTR_NOTNULL and n.is_no_inherit:
            found.append("NOT NULL NO INHERIT")
        elif n.contype == ConstrType.CONSTR_GENERATED and n.generated_kind == "v":
            found.append("virtual generated column")
        elif n.contype == ConstrType.CONSTR_ATTR_NOT_ENFORCED or (
            n.contype in (ConstrType.CONSTR_CHECK, ConstrType.CONSTR_FOREIGN) and not n.is_enforced
        ):
            found.append("NOT ENFORCED constraint")
        if n.without_overlaps or n.fk_with_period or n.pk_with_period:
            found.append("temporal (WITHOUT OVERLAPS / PERIOD) constraint")
    return sorted(set(found))


def _check_target_version(graph: _Graph, idx: list[int], major: int, side: str) -> None:
    if major >= 18:
        return
    problems = []
    for i in idx:
        s = graph.stmts[i]
        for construct in _pg18_only(s):
            problems.append(f"{s.kind} {s.name}: {construct}")
    if problems:
        raise TargetVersionError(
            f"the {side} schema uses PostgreSQL 18 syntax that PostgreSQL {major} rejects: "
            + "; ".join(problems)
            + f". Use a PostgreSQL 18 {side} server or change these objects in the source first."
        )


def _setting_ok(s: _Stmt, major: int) -> bool:
    since = _SETTING_SINCE_MAJOR.get((s.setting or "").lower())
    return since is None or major >= since


def _header(side: str, what: str, major: int) -> str:
    return f"-- dual-db: {side} schema, {what}, for PostgreSQL {major}. Generated from a pg_dump schema dump."


def _render(
    graph: _Graph,
    section: str,
    keep: set[int],
    major: int,
    *,
    header: str,
    prelude: list[Statement] | None = None,
    appendix: list[Statement] | None = None,
) -> str:
    out: list[Statement] = []
    real = 0
    pending = list(prelude or [])
    for s in graph.stmts:
        if s.section != section:
            continue
        if s.is_setting:
            if _setting_ok(s, major):
                out.append(s.st)
            continue
        if s.idx not in keep:
            continue
        if pending:
            # The prelude (schema + CREATE EXTENSION vector) goes after pg_dump's SET block, before
            # the first object.
            out.extend(pending)
            pending = []
        out.append(s.st)
        real += 1
    if prelude and pending:
        out.extend(pending)
        real += len(pending)
    if appendix:
        out.extend(appendix)
        real += len(appendix)
    if not real:
        return ""
    return render_script(out, header=header)


def _refreshes(graph: _Graph, keep: set[int]) -> list[Statement]:
    """REFRESH MATERIALIZED VIEW for every materialized view kept, in dump order (pg_dump orders a
    matview after those it reads). A schema-only dump creates them WITH NO DATA, and the application's
    first query of an unpopulated one fails ("has not been populated"); run after the data and the
    indexes, these populate them from the copied rows."""
    texts = [
        sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(*s.defines[0][1:])).as_string(None)
        for s in graph.stmts
        if s.kind == "MATERIALIZED VIEW" and s.idx in keep and s.defines
    ]
    if not texts:
        return []
    statements = statements_of(";\n".join(texts) + ";")
    statements[0] = replace(
        statements[0], leading="-- dual-db: populate the materialized views from the copied rows"
    )
    return statements


def _render_parts(graph: _Graph, keep: set[int], major: int, side: str) -> PostData:
    parts = {}
    refresh = _refreshes(graph, keep)
    for part in POST_PARTS:
        selected = {i for i in keep if graph.stmts[i].section == "post" and graph.stmts[i].category == part}
        parts[part] = _render(
            graph,
            "post",
            selected,
            major,
            header=_header(side, f"post-data ({part})", major),
            appendix=refresh if part == "triggers_and_other" else None,
        )
    return PostData(**parts)


def _ai_prelude(vector_schema: str) -> list[Statement]:
    # Built with psycopg.sql (identifiers quoted by the library) and parsed back, so the prelude is
    # exactly as checked as the dump's own statements.
    texts = []
    if vector_schema != "public":
        texts.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(vector_schema)))
    texts.append(
        sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}").format(
            sql.Identifier(PGVECTOR_EXTENSION), sql.Identifier(vector_schema)
        )
    )
    script = ";\n".join(t.as_string(None) for t in texts) + ";"
    prelude = statements_of(script)
    return [
        Statement(
            text=st.text, node=st.node, leading="-- pgvector first: the AI tables' column types need it"
        )
        if n == len(prelude) - 1
        else st
        for n, st in enumerate(prelude)
    ]


def _vector_index(s: _Stmt) -> VectorIndex:
    node = s.st.node
    assert isinstance(node, ast.IndexStmt)
    opclasses = tuple(
        ".".join(_names(p.opclass))
        for p in node.indexParams or ()
        if isinstance(p, ast.IndexElem) and p.opclass
    )
    options = []
    for opt in node.options or ():
        if isinstance(opt, ast.DefElem):
            arg = opt.arg
            value = getattr(arg, "sval", None) or str(getattr(arg, "ival", getattr(arg, "fval", "")))
            options.append((opt.defname, str(value)))
    return VectorIndex(
        name=node.idxname or "",
        table=_table(node.relation),
        method=(node.accessMethod or "").lower(),
        opclasses=opclasses,
        options=tuple(options),
        sql=s.st.sql,
    )


def _vector_index_list(graph: _Graph, idx: list[int]) -> list[VectorIndex]:
    stmts = graph.stmts
    order = [i for i in idx if stmts[i].index_method in VECTOR_INDEX_METHODS]
    followers: dict[int, list[str]] = {i: [] for i in order}
    for i in idx:
        s = stmts[i]
        if s.section != "post" or s.category != "vector_indexes" or i in followers:
            continue
        named = [d for key in s.refs for d in graph.resolve(key) if d in followers]
        if named:
            followers[max(named, key=order.index)].append(s.st.sql)
    return [replace(_vector_index(stmts[i]), followed_by=tuple(followers[i])) for i in order]


def vector_indexes(source: SchemaSplit | str) -> list[VectorIndex]:
    """The hnsw/ivfflat index statements of a split's AI post-data, or of any script."""
    if isinstance(source, SchemaSplit):
        return list(source.ai_vector_indexes)
    graph = _Graph("", source)
    return _vector_index_list(graph, [s.idx for s in graph.stmts])


__all__ = [
    "ACCEPT_KEY",
    "POST_PARTS",
    "VECTOR_INDEX_METHODS",
    "AcceptedObject",
    "CoreTableHasVectorColumn",
    "PostData",
    "RemovedObject",
    "SchemaSplit",
    "SchemaSplitError",
    "SoftReference",
    "TargetVersionError",
    "VectorIndex",
    "split_schema",
    "vector_indexes",
]
