"""Demo source builder: a SigmaSight-like database to split, of any size, identical for a given seed.

The migration plan splits one production database into core and AI databases. Nobody may hand us that
production database, so `dual-db demo-source` builds a stand-in with the same shape: the plan's 39 core
tables, `alembic_version`, and the three pgvector AI tables, with a real foreign-key graph, the AI
tables' cross-database *soft* references, identity/bigserial sequences, enums, jsonb, text[], bytea,
TOAST-sized and non-ASCII text, and an HNSW index. The mix exists to catch what a split can lose.

Content depends only on (seed, scale): every value comes from a seeded generator and fixed base dates,
so two builds can be compared byte for byte and a benchmark run is reproducible. Size grows linearly
with scale (scale 1 is roughly 100 MB of relations, scale 10 roughly 1 GB).

Loading follows pg_restore's order for the same reason pg_restore uses it: bare tables (with primary
keys, UNIQUE and CHECK constraints), COPY, then foreign keys, secondary indexes and the HNSW index,
sequence positions and ANALYZE. All of it runs in one transaction, so an interrupted build leaves
nothing half-made behind.
"""

from __future__ import annotations

import json
import math
import operator
import random
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from dual_db.db.connect import connection
from dual_db.db.sql_files import sql_file
from dual_db.db.urls import DatabaseUrl

SCHEMA_FILE = sql_file("demo_source", "schema.sql")
# Built once the rows are in: foreign keys, secondary indexes, the HNSW index.
POST_LOAD_FILE = SCHEMA_FILE.with_name("post_load.sql")

CORE_TABLES: tuple[str, ...] = (
    "users",
    "portfolios",
    "positions",
    "tags",
    "tags_v2",
    "position_tags",
    "portfolio_target_prices",
    "position_greeks",
    "position_factor_exposures",
    "position_market_betas",
    "position_volatility",
    "position_interest_rate_betas",
    "correlation_calculations",
    "pairwise_correlations",
    "correlation_clusters",
    "correlation_cluster_positions",
    "factor_correlations",
    "factor_exposures",
    "factor_definitions",
    "portfolio_snapshots",
    "stress_test_scenarios",
    "stress_test_results",
    "market_risk_scenarios",
    "market_data_cache",
    "company_profiles",
    "benchmarks_sector_weights",
    "fund_holdings",
    "batch_jobs",
    "batch_job_schedules",
    "batch_run_tracking",
    "export_history",
    "modeling_session_snapshots",
    "equity_changes",
    "position_realized_events",
    "income_statements",
    "balance_sheets",
    "cash_flows",
    "agent_conversations",
    "agent_messages",
    "alembic_version",
)
AI_TABLES: tuple[str, ...] = ("ai_kb_documents", "ai_memories", "ai_feedback")
# Non-table objects of SCHEMA_FILE, dropped on reset. The `vector` extension stays: other databases'
# objects may use it and CREATE EXTENSION IF NOT EXISTS reuses it.
ENUM_TYPES: tuple[str, ...] = ("position_type", "tag_type", "batch_status")
TRIGGER_FUNCTIONS: tuple[str, ...] = ("set_updated_at",)

# A plausible Alembic head. Fixed (not seeded): the plan copies it verbatim to the core database.
ALEMBIC_REVISION = "c7f3a91e2b4d"
EMBEDDING_DIM = 1536
# The day the plan was written. All dates count back from it, so content never depends on the clock.
BASE_DAY = date(2025, 12, 19)

# Rows per scale unit for the entities everything else hangs off; each child table has a fixed
# number of rows per parent, which is what keeps total size linear in scale.
_PER_SCALE = {"users": 64, "symbols": 160, "kb_documents": 3000, "batch_jobs": 800, "batch_runs": 200}
# Floors that keep every table populated (and the FK graph exercised) at tiny test scales.
_MINIMUM = {"users": 4, "symbols": 16, "kb_documents": 40, "batch_jobs": 10, "batch_runs": 6}

_MARKET_DAYS = 250  # one trading year of bars per symbol
_SNAPSHOT_DAYS = 60
_POSITION_CALC_DAYS = 5  # greeks, volatility and market betas per position
_FACTOR_CALC_DAYS = 2  # position factor exposures (positions x factors x days: the largest fan-out)
_PORTFOLIO_FACTOR_DAYS = 10
_IR_BETA_DAYS = 4
_MAX_CORRELATED_POSITIONS = 15
_OPTION_MULTIPLIER = 100
_PORTFOLIOS_PER_USER = (1, 2, 1, 3, 1, 2, 1, 2)


class DemoSourceError(RuntimeError):
    """The demo source could not be built."""


class DemoSourceExists(DemoSourceError):
    """The target database already holds demo tables and `reset` was not requested."""


@dataclass(frozen=True)
class DemoSourceSummary:
    """What a build produced: rows and bytes per table (bytes = pg_total_relation_size)."""

    scale: float
    seed: int
    row_counts: dict[str, int]
    table_bytes: dict[str, int]
    total_bytes: int
    seconds: float

    @property
    def total_rows(self) -> int:
        return sum(self.row_counts.values())


def demo_table_names() -> tuple[list[str], list[str]]:
    """(core tables including alembic_version, AI tables), as the plan distributes them."""
    return list(CORE_TABLES), list(AI_TABLES)


def build_demo_source(
    url: DatabaseUrl,
    *,
    scale: float = 1.0,
    seed: int = 42,
    reset: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DemoSourceSummary:
    """Build the demo source in the database at `url` and return what was built.

    Raises `DemoSourceExists` when demo tables are already there and `reset` is false: adding a second
    generation of rows would silently break uniqueness and every row-count comparison downstream.
    With `reset`, the demo objects (tables, enum types, trigger function) are dropped first; other
    objects in the database are left alone. `progress`, if given, receives one line per step.
    """
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    before_load, after_load = _schema_parts()
    say = progress or (lambda _line: None)
    started = time.monotonic()
    with connection(url, autocommit=True, application_name="dual-db demo-source") as conn:
        existing = _existing_demo_objects(conn)
        if existing and not reset:
            shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
            raise DemoSourceExists(
                f"{url.masked()} already has {len(existing)} demo object(s) ({shown}); "
                "pass --reset (reset=True) to drop and rebuild them"
            )
        data = _DemoData(seed=seed, scale=scale)
        row_counts: dict[str, int] = {}
        with conn.transaction():
            # The schema file names objects unqualified; a "$user" schema must not capture them.
            conn.execute("SET LOCAL search_path = public")
            if reset:
                _drop_demo_objects(conn)
                say("dropped existing demo objects")
            conn.execute(before_load)
            # The vector type exists only now (CREATE EXTENSION above), inside this transaction.
            register_vector(conn)
            for load in data.loads():
                table_started = time.monotonic()
                row_counts[load.table] = _copy_rows(conn, load)
                say(f"{load.table}: {row_counts[load.table]} rows ({time.monotonic() - table_started:.1f}s)")
            # HNSW builds fastest when the whole graph fits in maintenance_work_mem (about 1 GB for
            # 150k 1536-dim vectors); LOCAL keeps the setting to this build.
            conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
            index_started = time.monotonic()
            conn.execute(after_load)
            say(f"foreign keys and indexes ({time.monotonic() - index_started:.1f}s)")
            _advance_sequences(conn)
            for table in (*CORE_TABLES, *AI_TABLES):
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
            say("sequences advanced, tables analyzed")
        table_bytes = _table_sizes(conn)
    missing = [t for t in (*CORE_TABLES, *AI_TABLES) if t not in row_counts]
    if missing:
        raise DemoSourceError(f"internal error: no rows generated for {', '.join(missing)}")
    return DemoSourceSummary(
        scale=float(scale),
        seed=seed,
        row_counts=row_counts,
        table_bytes=table_bytes,
        total_bytes=sum(table_bytes.values()),
        seconds=time.monotonic() - started,
    )


# ---- database steps ---------------------------------------------------------------------------------


def _schema_parts() -> tuple[str, str]:
    try:
        return SCHEMA_FILE.read_text(encoding="utf-8"), POST_LOAD_FILE.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DemoSourceError(
            f"schema file {exc.filename} is missing: the installation lacks dual-db's sql/ files "
            "(reinstall with pip install .)"
        ) from None


def _existing_demo_objects(conn: psycopg.Connection) -> list[str]:
    """Demo tables, enum types and trigger functions already in `public`.

    Types and functions count too: a half-dropped demo would otherwise fail later with a bare
    "already exists" instead of the advice to reset.
    """
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'p') AND relname = ANY(%(tables)s)"
        " UNION ALL SELECT 'type ' || typname FROM pg_type WHERE typnamespace = 'public'::regnamespace"
        " AND typname = ANY(%(types)s)"
        " UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        " AND proname = ANY(%(functions)s)"
        " ORDER BY 1",
        {
            "tables": [*CORE_TABLES, *AI_TABLES],
            "types": list(ENUM_TYPES),
            "functions": list(TRIGGER_FUNCTIONS),
        },
    ).fetchall()
    return [str(row[0]) for row in rows]


def _drop_demo_objects(conn: psycopg.Connection) -> None:
    tables = sql.SQL(", ").join(sql.Identifier("public", t) for t in (*CORE_TABLES, *AI_TABLES))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(tables))
    types = sql.SQL(", ").join(sql.Identifier("public", t) for t in ENUM_TYPES)
    conn.execute(sql.SQL("DROP TYPE IF EXISTS {} CASCADE").format(types))
    for function in TRIGGER_FUNCTIONS:
        conn.execute(
            sql.SQL("DROP FUNCTION IF EXISTS {}() CASCADE").format(sql.Identifier("public", function))
        )


def _copy_rows(conn: psycopg.Connection, load: _TableLoad) -> int:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(load.table), sql.SQL(", ").join(sql.Identifier(c) for c in load.columns)
    )
    if load.binary_types:
        statement = sql.SQL("{} (FORMAT BINARY)").format(statement)
    count = 0
    with conn.cursor() as cur, cur.copy(statement) as copy:
        if load.binary_types:
            copy.set_types(list(load.binary_types))
        for row in load.rows():
            copy.write_row(row)
            count += 1
    return count


def _advance_sequences(conn: psycopg.Connection) -> None:
    """Move every owned sequence (bigserial and identity) past the ids COPY wrote explicitly.

    Without this the application's first INSERT would collide with row 1.
    """
    owned = conn.execute(
        "SELECT t.relname, a.attname, s.oid::regclass::text"
        " FROM pg_depend d"
        " JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
        " JOIN pg_class t ON t.oid = d.refobjid"
        " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid"
        " WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass"
        " AND d.deptype IN ('a', 'i') AND t.relnamespace = 'public'::regnamespace"
        " AND t.relname = ANY(%s)",
        ([*CORE_TABLES, *AI_TABLES],),
    ).fetchall()
    for table, column, sequence in owned:
        conn.execute(
            sql.SQL(
                "SELECT setval({seq}::regclass, COALESCE(m, 1), m IS NOT NULL)"
                " FROM (SELECT max({col}) AS m FROM {tbl}) AS x"
            ).format(seq=sql.Literal(sequence), col=sql.Identifier(column), tbl=sql.Identifier(table))
        )


def _table_sizes(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT t, pg_total_relation_size(to_regclass(format('public.%%I', t))) FROM unnest(%s::text[]) AS t",
        ([*CORE_TABLES, *AI_TABLES],),
    ).fetchall()
    return {str(name): int(size or 0) for name, size in rows}


# ---- data generation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TableLoad:
    table: str
    columns: tuple[str, ...]
    rows: Callable[[], Iterable[Sequence[object]]]
    # Set for binary COPY (vectors: their text form is ~4x larger and slow to format).
    binary_types: tuple[str, ...] | None = None


@dataclass
class _Symbol:
    ticker: str
    name: str
    sector: str
    industry: str
    exchange: str
    country: str
    is_etf: bool
    last_close: float
    volatility: float
    market_cap: float


@dataclass
class _Position:
    id: str
    portfolio_id: str
    user_id: str
    symbol: str
    underlying: str
    kind: str
    quantity: float
    entry_price: float
    entry_date: date
    last_price: float
    market_value: float
    closed_on: date | None


@dataclass
class _Portfolio:
    id: str
    user_id: str
    equity: float
    positions: list[_Position] = field(default_factory=list)


def _scaled(name: str, scale: float) -> int:
    return max(_MINIMUM[name], round(_PER_SCALE[name] * scale))


def _uuid(rng: random.Random) -> str:
    """A version-4 UUID from `rng` (uuid.uuid4() would read the OS entropy pool, breaking determinism)."""
    h = f"{rng.getrandbits(128):032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def _trading_days(count: int) -> list[date]:
    """The last `count` weekdays up to BASE_DAY, oldest first."""
    days: list[date] = []
    day = BASE_DAY
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day -= timedelta(days=1)
    days.reverse()
    return days


def _ts(day: date, rng: random.Random, start_hour: int = 0, hours: int = 24) -> str:
    second = rng.randrange(hours * 3600)
    h, rest = divmod(second, 3600)
    micros = rng.randrange(1_000_000)
    return f"{day.isoformat()} {start_hour + h:02d}:{rest // 60:02d}:{rest % 60:02d}.{micros:06d}+00"


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _money(value: float) -> str:
    return f"{value:.2f}"


def _n(value: float, places: int) -> str:
    return f"{value:.{places}f}"


_SECTORS: dict[str, tuple[str, ...]] = {
    "Technology": (
        "Semiconductors",
        "Software—Infrastructure",
        "Software—Application",
        "Consumer Electronics",
    ),
    "Communication Services": ("Internet Content & Information", "Entertainment", "Telecom Services"),
    "Consumer Cyclical": ("Internet Retail", "Auto Manufacturers", "Restaurants", "Travel Services"),
    "Consumer Defensive": ("Beverages—Non-Alcoholic", "Discount Stores", "Household & Personal Products"),
    "Healthcare": ("Drug Manufacturers—General", "Biotechnology", "Medical Devices"),
    "Financial Services": ("Banks—Diversified", "Asset Management", "Credit Services", "Insurance—Life"),
    "Industrials": ("Aerospace & Defense", "Railroads", "Specialty Industrial Machinery"),
    "Energy": ("Oil & Gas Integrated", "Oil & Gas E&P", "Uranium"),
    "Utilities": ("Utilities—Regulated Electric", "Utilities—Renewable"),
    "Real Estate": ("REIT—Industrial", "REIT—Residential", "Real Estate Services"),
    "Basic Materials": ("Specialty Chemicals", "Gold", "Steel"),
}
_REAL_EQUITIES: tuple[tuple[str, str, str], ...] = (
    ("AAPL", "Apple Inc.", "Technology"),
    ("MSFT", "Microsoft Corporation", "Technology"),
    ("NVDA", "NVIDIA Corporation", "Technology"),
    ("GOOGL", "Alphabet Inc.", "Communication Services"),
    ("AMZN", "Amazon.com, Inc.", "Consumer Cyclical"),
    ("META", "Meta Platforms, Inc.", "Communication Services"),
    ("TSLA", "Tesla, Inc.", "Consumer Cyclical"),
    ("JPM", "JPMorgan Chase & Co.", "Financial Services"),
    ("V", "Visa Inc.", "Financial Services"),
    ("JNJ", "Johnson & Johnson", "Healthcare"),
    ("XOM", "Exxon Mobil Corporation", "Energy"),
    ("PG", "The Procter & Gamble Company", "Consumer Defensive"),
    ("NFLX", "Netflix, Inc.", "Communication Services"),
    ("AMD", "Advanced Micro Devices, Inc.", "Technology"),
    ("CRM", "Salesforce, Inc.", "Technology"),
    ("NEE", "NextEra Energy, Inc.", "Utilities"),
    ("PLD", "Prologis, Inc.", "Real Estate"),
    ("LIN", "Linde plc", "Basic Materials"),
    ("CAT", "Caterpillar Inc.", "Industrials"),
    ("BRK.B", "Berkshire Hathaway Inc.", "Financial Services"),
    ("NVO", "Novo Nordisk A/S", "Healthcare"),
    ("TM", "Toyota Motor Corporation (トヨタ自動車)", "Consumer Cyclical"),
    ("SAP", "SAP SE", "Technology"),
    ("MC.PA", "LVMH Moët Hennessy Louis Vuitton", "Consumer Cyclical"),
)
_REAL_ETFS: tuple[tuple[str, str], ...] = (
    ("SPY", "SPDR S&P 500 ETF Trust"),
    ("QQQ", "Invesco QQQ Trust"),
    ("IWM", "iShares Russell 2000 ETF"),
    ("XLK", "Technology Select Sector SPDR Fund"),
    ("XLF", "Financial Select Sector SPDR Fund"),
    ("XLE", "Energy Select Sector SPDR Fund"),
    ("VTI", "Vanguard Total Stock Market ETF"),
    ("ARKK", "ARK Innovation ETF"),
    ("EWJ", "iShares MSCI Japan ETF"),
    ("TLT", "iShares 20+ Year Treasury Bond ETF"),
)
_NAME_PARTS = (
    (
        "Nordic",
        "Quantum",
        "Pacific",
        "Helios",
        "Atlas",
        "Crescent",
        "Zürich",
        "São Paulo",
        "Kyōto",
        "Vértice",
        "Aurora",
        "Meridian",
        "Summit",
        "Lumen",
        "Harbor",
        "Cobalt",
        "Evergreen",
        "Ørsted",
        "Blue Ridge",
        "Sakura",
    ),
    (
        "Robotics",
        "Therapeutics",
        "Energy",
        "Logistics",
        "Semiconductor",
        "Software",
        "Foods",
        "Materials",
        "Biosciences",
        "Networks",
        "Capital",
        "Motors",
        "Data",
        "Mining",
        "Pharma",
        "Retail",
        "Aerospace",
    ),
    ("Inc.", "Corp.", "Holdings", "plc", "AG", "S.A.", "N.V.", "K.K.", "Group", "Ltd.", "株式会社", "SE"),
)
_FIRST_NAMES = (
    "Emma",
    "Liam",
    "José",
    "Zoë",
    "Björn",
    "Chloé",
    "Mateo",
    "Søren",
    "Aarav",
    "Mei",
    "Hiroshi",
    "Amélie",
    "Noah",
    "Olivia",
    "Łukasz",
    "Ana",
    "François",
    "Siobhán",
    "Tomás",
    "Yuki",
    "Priya",
    "Kwame",
    "Ines",
    "小明",
    "太郎",
    "Jürgen",
    "Ngozi",
    "Renée",
    "Dmitri",
    "Fatima",
)
_LAST_NAMES = (
    "Smith",
    "Núñez",
    "Müller",
    "García",
    "O'Brien",
    "Nakamura",
    "Østergaard",
    "Kowalski",
    "Dubois",
    "Chen",
    "Patel",
    "Okafor",
    "Rossi",
    "Johansson",
    "Schäfer",
    "Lefèvre",
    "王",
    "田中",
    "Fernández",
    "Kim",
    "van der Berg",
    "Al-Sayed",
    "Novák",
    "Ivanova",
    "Brown",
)
_TIMEZONES = ("America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Paris", "Asia/Tokyo", None)
_ACCOUNTS = (
    ("Fidelity Brokerage", "taxable"),
    ("Schwab Individual", "taxable"),
    ("Vanguard Roth IRA", "roth_ira"),
    ("Interactive Brokers", "taxable"),
    ("E*TRADE IRA", "ira"),
    ("Company 401(k)", "401k"),
    ("Family Trust", "trust"),
    ("Robinhood", "other"),
)
_STRATEGIES = (
    "Growth Momentum",
    "Balanced Value",
    "Long/Short Tech",
    "Dividend Income",
    "Macro Hedge",
    "Quality Compounders",
    "Event Driven",
    "Global Opportunities 🌍",
    "AI Leaders 🚀",
    "Core Beta",
)
_TAG_NAMES = (
    "Core",
    "Hedge",
    "Income",
    "Speculative",
    "AI 🤖",
    "Dividendes",
    "成長株",
    "Momentum",
    "Value",
    "ESG 🌱",
    "Earnings play",
    "Long-term",
    "Trim candidate",
    "Watch ⚠️",
    "Pair trade",
    "Défensif",
)
_COLORS = ("#4A90D9", "#E94E77", "#50E3C2", "#F5A623", "#7ED321", "#9013FE", "#BD10E0", "#417505")
_FACTORS: tuple[tuple[str, str, str | None], ...] = (
    ("Market Beta", "style", "SPY"),
    ("Momentum", "style", "MTUM"),
    ("Value", "style", "VTV"),
    ("Growth", "style", "VUG"),
    ("Quality", "style", "QUAL"),
    ("Size", "style", "IWM"),
    ("Low Volatility", "style", "USMV"),
    ("Short Interest", "style", None),
    ("Interest Rate", "macro", "TLT"),
    ("Oil", "macro", "USO"),
    ("Technology Sector", "sector", "XLK"),
    ("Financials Sector", "sector", "XLF"),
)
_ACTIVE_POSITION_FACTORS = 8
_STRESS_SCENARIOS: tuple[tuple[str, str, str, str, dict[str, float]], ...] = (
    ("market_down_10", "Market Down 10%", "market", "moderate", {"Market Beta": -0.10}),
    ("market_down_20", "Market Down 20%", "market", "severe", {"Market Beta": -0.20}),
    ("market_crash_35", "Market Crash 35%", "market", "extreme", {"Market Beta": -0.35}),
    ("market_up_10", "Market Rally 10%", "market", "mild", {"Market Beta": 0.10}),
    ("rates_up_100bp", "Rates +100bp", "rates", "moderate", {"Interest Rate": 0.01}),
    ("rates_up_200bp", "Rates +200bp", "rates", "severe", {"Interest Rate": 0.02}),
    ("rates_down_100bp", "Rates -100bp", "rates", "mild", {"Interest Rate": -0.01}),
    ("value_rotation", "Growth→Value Rotation", "rotation", "moderate", {"Value": 0.08, "Growth": -0.08}),
    ("momentum_crash", "Momentum Crash", "rotation", "severe", {"Momentum": -0.15}),
    ("quality_flight", "Flight to Quality", "rotation", "mild", {"Quality": 0.05, "Size": -0.04}),
    ("vix_spike", "VIX Spike to 40", "volatility", "severe", {"Low Volatility": 0.06, "Market Beta": -0.12}),
    ("oil_shock", "Oil Supply Shock +40%", "macro", "moderate", {"Oil": 0.40}),
    ("gfc_2008", "2008 Financial Crisis Replay", "historical", "extreme", {"Market Beta": -0.45}),
    ("covid_2020", "COVID-19 Crash (Feb-Mar 2020)", "historical", "extreme", {"Market Beta": -0.34}),
    ("dotcom_2000", "Dot-com Bust", "historical", "extreme", {"Growth": -0.40, "Technology Sector": -0.5}),
    ("taper_2013", "Taper Tantrum 2013", "historical", "moderate", {"Interest Rate": 0.012}),
    ("yen_carry_2024", "Yen Carry Unwind (円キャリー)", "historical", "severe", {"Momentum": -0.09}),
    ("bank_run_2023", "Regional Bank Stress 2023", "historical", "moderate", {"Financials Sector": -0.2}),
)
_MARKET_RISK_TYPES = (
    ("market_up_5", 0.05),
    ("market_down_5", -0.05),
    ("market_up_10", 0.10),
    ("market_down_10", -0.10),
    ("rates_up_50bp", 0.005),
    ("rates_down_50bp", -0.005),
)
_BATCH_JOBS = (
    ("market_data_sync", "market_data", "0 21 * * 1-5"),
    ("portfolio_snapshots", "calculation", "30 21 * * 1-5"),
    ("greeks", "calculation", "45 21 * * 1-5"),
    ("factor_analysis", "calculation", "0 22 * * 1-5"),
    ("correlations", "calculation", "15 22 * * 1-5"),
    ("stress_testing", "calculation", "30 22 * * 1-5"),
    ("company_profiles", "market_data", "0 6 * * 6"),
    ("fundamentals_refresh", "market_data", "0 7 * * 6"),
)
_KB_SCOPES = ("global", "glossary", "methodology", "faq", "market_commentary", "portfolio_reports")


def _cols(names: str) -> tuple[str, ...]:
    """Whitespace-separated names (column lists read better as prose than one per line)."""
    return tuple(names.split())


_WORDS = _cols(
    "portfolio exposure beta volatility hedge drawdown factor momentum duration liquidity earnings "
    "guidance margin valuation correlation dispersion convexity premium skew yield spread rebalance "
    "allocation risk regime sector alpha the a of and with under across while because despite after "
    "before significantly modestly sharply quarter guidance options delta gamma theta"
)
# Non-ASCII on purpose (accents, CJK, Hangul, emoji, Greek): encodings must survive the split.
_UNICODE_FRAGMENTS = (
    "Résumé of the naïve café strategy",
    "Zürich and São Paulo desks",
    "株式市場の変動性",
    "收益率曲线倒挂",
    "포트폴리오 리스크",
    "📈 upside",
    "📉 downside",
    "🚀🚀",
    "€1.2bn",
    "¥150/$",
    "±2σ",  # noqa: RUF001
    "Δ-hedged",
    "θ decay",
    "señal de compra",
    "Ünternehmenswert",
    "naïve Bayes ≠ causal",
    "«prudence»",
    "Ω-ratio",
    "µ-cap",
)
_SUBJECTS = (
    "The portfolio",
    "Net exposure",
    "The technology sleeve",
    "Our short book",
    "Factor momentum",
    "The hedge ratio",
    "Realized volatility",
    "The options overlay",
    "Sector concentration",
    "Gross leverage",
    "The top five positions",
    "Interest-rate sensitivity",
    "Tail risk",
)
_VERBS = (
    "increased",
    "declined",
    "remained stable",
    "rotated",
    "diverged",
    "compressed",
    "widened",
    "outperformed",
    "lagged",
    "mean-reverted",
    "accelerated",
    "normalized",
)
_TAILS = (
    "versus the benchmark",
    "after the earnings season",
    "as rates moved higher",
    "on elevated implied volatility",
    "during the quarter",
    "relative to the 90-day window",
    "amid sector rotation",
    "following the Fed decision",
    "while breadth narrowed",
    "given the current factor regime",
    "in the last rebalance",
    "ahead of the expiration cycle",
)


class _DemoData:
    """All generated rows, table by table. Each table draws from its own generator seeded with
    (seed, table), so adding a column to one table never shifts another table's content."""

    def __init__(self, *, seed: int, scale: float) -> None:
        self.seed = seed
        self.scale = scale
        self.n_users = _scaled("users", scale)
        self.n_symbols = _scaled("symbols", scale)
        self.n_kb = _scaled("kb_documents", scale)
        self.n_batch_jobs = _scaled("batch_jobs", scale)
        self.n_batch_runs = _scaled("batch_runs", scale)
        self.market_days = _trading_days(_MARKET_DAYS)
        self.snapshot_days = self.market_days[-_SNAPSHOT_DAYS:]
        self.calc_days = self.market_days[-_POSITION_CALC_DAYS:]
        self.factor_days = self.market_days[-_FACTOR_CALC_DAYS:]
        self.portfolio_factor_days = self.market_days[-_PORTFOLIO_FACTOR_DAYS:]
        self.ir_days = self.market_days[-5 * _IR_BETA_DAYS :: 5]
        self.sentences = self._sentence_pool()
        # Filled as parent tables are generated; children (loaded later) read them.
        self.symbols: list[_Symbol] = []
        self.user_ids: list[str] = []
        self.portfolios: list[_Portfolio] = []
        self.positions: list[_Position] = []
        self.tag_ids_by_user: dict[str, list[str]] = {}
        self.factor_ids: list[str] = []
        self.scenario_ids: list[str] = []
        self.calculation_ids: list[tuple[str, _Portfolio, date]] = []
        self.cluster_ids: list[tuple[str, list[_Position]]] = []
        self.conversation_ids: list[tuple[str, str]] = []
        self.assistant_message_ids: list[str] = []
        self._make_symbols()

    def rng(self, table: str) -> random.Random:
        # String seeds hash with SHA-512 inside `random`: stable across runs and PYTHONHASHSEED.
        return random.Random(f"dual-db-demo/{self.seed}/{table}")

    # ---- shared vocabulary ------------------------------------------------------------------------

    def _sentence_pool(self) -> list[str]:
        rng = self.rng("sentences")
        pool = []
        for i in range(2000):
            words = " ".join(rng.choices(_WORDS, k=rng.randint(4, 12)))
            sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_TAILS)}; {words}"
            if i % 6 == 0:
                sentence += f" — {rng.choice(_UNICODE_FRAGMENTS)}"
            pool.append(sentence + f" ({rng.uniform(-25, 25):+.2f}%).")
        return pool

    def text(self, rng: random.Random, min_chars: int, max_chars: int) -> str:
        target = rng.randint(min_chars, max_chars)
        parts: list[str] = []
        length = 0
        while length < target:
            sentence = rng.choice(self.sentences)
            parts.append(sentence)
            length += len(sentence) + 1
            if rng.random() < 0.12:
                parts.append("\n\n")
        return " ".join(parts)[:target]

    def _make_symbols(self) -> None:
        rng = self.rng("symbols")
        n_etf = max(2, self.n_symbols // 10)
        n_equity = self.n_symbols - n_etf
        taken = {t for t, _, _ in _REAL_EQUITIES} | {t for t, _ in _REAL_ETFS}
        sectors = list(_SECTORS)

        def synthetic_ticker() -> str:
            while True:
                ticker = "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=rng.randint(3, 5)))
                if ticker not in taken:
                    taken.add(ticker)
                    return ticker

        for i in range(n_equity):
            if i < len(_REAL_EQUITIES):
                ticker, name, sector = _REAL_EQUITIES[i]
            else:
                ticker = synthetic_ticker()
                name = " ".join(rng.choice(part) for part in _NAME_PARTS)
                sector = rng.choice(sectors)
            self.symbols.append(
                _Symbol(
                    ticker=ticker,
                    name=name,
                    sector=sector,
                    industry=rng.choice(_SECTORS[sector]),
                    exchange=rng.choice(("NASDAQ", "NYSE", "NYSE", "AMEX", "XETRA", "TSE")),
                    country=rng.choice(("US", "US", "US", "US", "DE", "JP", "FR", "DK", "CA")),
                    is_etf=False,
                    last_close=round(math.exp(rng.uniform(math.log(4), math.log(900))), 2),
                    volatility=rng.uniform(0.12, 0.75),
                    market_cap=math.exp(rng.uniform(math.log(3e8), math.log(3.5e12))),
                )
            )
        for i in range(n_etf):
            if i < len(_REAL_ETFS):
                ticker, name = _REAL_ETFS[i]
            else:
                ticker = synthetic_ticker()
                name = f"{rng.choice(_NAME_PARTS[0])} {rng.choice(sectors)} ETF"
            self.symbols.append(
                _Symbol(
                    ticker=ticker,
                    name=name,
                    sector="ETF",
                    industry="Exchange Traded Fund",
                    exchange=rng.choice(("NYSE ARCA", "NASDAQ")),
                    country="US",
                    is_etf=True,
                    last_close=round(rng.uniform(20, 600), 2),
                    volatility=rng.uniform(0.08, 0.35),
                    market_cap=math.exp(rng.uniform(math.log(1e8), math.log(6e11))),
                )
            )

    @property
    def equities(self) -> list[_Symbol]:
        return [s for s in self.symbols if not s.is_etf]

    # ---- load order -------------------------------------------------------------------------------

    def loads(self) -> list[_TableLoad]:
        """Parents before children: a child's generator reads ids its parents' generators recorded."""
        return [
            _TableLoad("alembic_version", ("version_num",), lambda: [(ALEMBIC_REVISION,)]),
            _TableLoad("users", _USER_COLUMNS, self.users),
            _TableLoad("portfolios", _PORTFOLIO_COLUMNS, self.portfolios_rows),
            _TableLoad("company_profiles", _COMPANY_COLUMNS, self.company_profiles),
            _TableLoad("positions", _POSITION_COLUMNS, self.positions_rows),
            _TableLoad("tags", _TAG_COLUMNS, self.tags),
            _TableLoad("tags_v2", _TAG_V2_COLUMNS, self.tags_v2),
            _TableLoad("position_tags", _POSITION_TAG_COLUMNS, self.position_tags),
            _TableLoad("portfolio_target_prices", _TARGET_PRICE_COLUMNS, self.target_prices),
            _TableLoad("factor_definitions", _FACTOR_COLUMNS, self.factor_definitions),
            _TableLoad("position_greeks", _GREEK_COLUMNS, self.position_greeks),
            _TableLoad("position_factor_exposures", _PFE_COLUMNS, self.position_factor_exposures),
            _TableLoad("position_market_betas", _BETA_COLUMNS, self.position_market_betas),
            _TableLoad("position_volatility", _VOL_COLUMNS, self.position_volatility),
            _TableLoad("position_interest_rate_betas", _IR_COLUMNS, self.position_interest_rate_betas),
            _TableLoad("correlation_calculations", _CORR_CALC_COLUMNS, self.correlation_calculations),
            _TableLoad("pairwise_correlations", _PAIR_COLUMNS, self.pairwise_correlations),
            _TableLoad("correlation_clusters", _CLUSTER_COLUMNS, self.correlation_clusters),
            _TableLoad("correlation_cluster_positions", _CLUSTER_POS_COLUMNS, self.cluster_positions),
            _TableLoad("factor_correlations", _FACTOR_CORR_COLUMNS, self.factor_correlations),
            _TableLoad("factor_exposures", _FACTOR_EXPOSURE_COLUMNS, self.factor_exposures),
            _TableLoad("portfolio_snapshots", _SNAPSHOT_COLUMNS, self.portfolio_snapshots),
            _TableLoad("stress_test_scenarios", _SCENARIO_COLUMNS, self.stress_test_scenarios),
            _TableLoad("stress_test_results", _STRESS_RESULT_COLUMNS, self.stress_test_results),
            _TableLoad("market_risk_scenarios", _MARKET_RISK_COLUMNS, self.market_risk_scenarios),
            _TableLoad("market_data_cache", _MARKET_DATA_COLUMNS, self.market_data_cache),
            _TableLoad("benchmarks_sector_weights", _BENCHMARK_COLUMNS, self.benchmarks_sector_weights),
            _TableLoad("fund_holdings", _FUND_HOLDING_COLUMNS, self.fund_holdings),
            _TableLoad("batch_jobs", _BATCH_JOB_COLUMNS, self.batch_jobs),
            _TableLoad("batch_job_schedules", _SCHEDULE_COLUMNS, self.batch_job_schedules),
            _TableLoad("batch_run_tracking", _RUN_TRACKING_COLUMNS, self.batch_run_tracking),
            _TableLoad("export_history", _EXPORT_COLUMNS, self.export_history),
            _TableLoad("modeling_session_snapshots", _MODELING_COLUMNS, self.modeling_sessions),
            _TableLoad("equity_changes", _EQUITY_CHANGE_COLUMNS, self.equity_changes),
            _TableLoad("position_realized_events", _REALIZED_COLUMNS, self.position_realized_events),
            _TableLoad("income_statements", _INCOME_COLUMNS, self.income_statements),
            _TableLoad("balance_sheets", _BALANCE_COLUMNS, self.balance_sheets),
            _TableLoad("cash_flows", _CASH_FLOW_COLUMNS, self.cash_flows),
            _TableLoad("agent_conversations", _CONVERSATION_COLUMNS, self.agent_conversations),
            _TableLoad("agent_messages", _MESSAGE_COLUMNS, self.agent_messages),
            _TableLoad("ai_kb_documents", _KB_COLUMNS, self.ai_kb_documents, binary_types=_KB_TYPES),
            _TableLoad("ai_memories", _MEMORY_COLUMNS, self.ai_memories),
            _TableLoad("ai_feedback", _FEEDBACK_COLUMNS, self.ai_feedback),
        ]

    # ---- users & portfolios -------------------------------------------------------------------------

    def users(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("users")
        for i in range(self.n_users):
            uid = _uuid(rng)
            self.user_ids.append(uid)
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            local = "".join(
                ch for ch in f"{first}.{last}".lower() if ch.isascii() and (ch.isalnum() or ch == ".")
            )
            created = BASE_DAY - timedelta(days=rng.randint(30, 720))
            secret = "".join(
                rng.choices("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=53)
            )
            prefs = {
                "theme": rng.choice(("light", "dark", "system")),
                "currency": rng.choice(("USD", "USD", "EUR", "JPY")),
                "notifications": {"email": rng.random() < 0.7, "daily_digest": rng.random() < 0.4},
                "default_view": rng.choice(("positions", "risk", "performance")),
            }
            yield (
                uid,
                f"{local or 'user'}.{i}@{rng.choice(('sigmasight.io', 'example.com', 'fund.example.org'))}",
                f"$2b$12${secret}",
                f"{first} {last}",
                "t" if rng.random() < 0.95 else "f",
                "t" if i == 0 else "f",
                rng.choice(_TIMEZONES),
                _json(prefs),
                None if rng.random() < 0.15 else _ts(BASE_DAY - timedelta(days=rng.randint(0, 60)), rng),
                _ts(created, rng),
                _ts(created + timedelta(days=rng.randint(0, 25)), rng),
            )

    def portfolios_rows(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("portfolios")
        for index, user_id in enumerate(self.user_ids):
            # A fixed 1-3 cycle rather than a draw: portfolios drive most row counts, and a cycle keeps
            # them proportional to the number of users even at test scales of a few users.
            count = _PORTFOLIOS_PER_USER[index % len(_PORTFOLIOS_PER_USER)]
            for account_name, account_type in rng.sample(_ACCOUNTS, count):
                pid = _uuid(rng)
                equity = math.exp(rng.uniform(math.log(5e4), math.log(2.5e7)))
                self.portfolios.append(_Portfolio(pid, user_id, equity))
                created = BASE_DAY - timedelta(days=rng.randint(20, 700))
                yield (
                    pid,
                    user_id,
                    rng.choice(_STRATEGIES),
                    account_name,
                    account_type,
                    None if rng.random() < 0.4 else self.text(rng, 40, 300),
                    "USD",
                    _money(equity),
                    "t" if rng.random() < 0.97 else "f",
                    _ts(created, rng),
                    _ts(created + timedelta(days=rng.randint(0, 19)), rng),
                    None if rng.random() < 0.98 else _ts(BASE_DAY - timedelta(days=rng.randint(1, 15)), rng),
                )

    def positions_rows(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("positions")
        equities = self.equities
        etfs = [s for s in self.symbols if s.is_etf]
        counter = 0
        for portfolio in self.portfolios:
            wanted = rng.randint(15, 35)
            # Tiny test universes have fewer symbols than a portfolio holds: repeat (extra lots) then,
            # rather than shrink portfolios, so that row counts stay proportional to scale.
            picks = (
                rng.sample(equities, wanted) if wanted <= len(equities) else rng.choices(equities, k=wanted)
            )
            for symbol in picks:
                if rng.random() < 0.1:
                    symbol = rng.choice(etfs)
                counter += 1
                entry_date = BASE_DAY - timedelta(days=rng.randint(20, 700))
                # Every 12th position is closed: enough to populate realized events at any scale.
                closed_on = entry_date + timedelta(days=rng.randint(1, 19)) if counter % 12 == 5 else None
                option = rng.random() < 0.2
                if option:
                    kind = rng.choice(("LC", "LP", "SC", "SP"))
                    strike = round(
                        symbol.last_close * rng.uniform(0.7, 1.3), 0 if symbol.last_close > 50 else 1
                    )
                    expiry = BASE_DAY + timedelta(days=rng.choice((7, 28, 63, 91, 182, 364)))
                    right = "C" if kind in ("LC", "SC") else "P"
                    root = symbol.ticker.replace(".", "")[:5]
                    ticker = f"{root}{expiry:%y%m%d}{right}{round(strike * 1000):08d}"
                    contracts = rng.randint(1, 60) * (1 if kind in ("LC", "LP") else -1)
                    entry_price = rng.uniform(0.3, 0.12 * symbol.last_close + 1)
                    last_price = max(0.01, entry_price * rng.uniform(0.2, 2.5))
                    quantity = float(contracts)
                    market_value = quantity * last_price * _OPTION_MULTIPLIER
                    underlying: str | None = symbol.ticker
                else:
                    kind = "SHORT" if rng.random() < 0.25 else "LONG"
                    ticker = symbol.ticker
                    strike, expiry, underlying = None, None, None
                    budget = portfolio.equity * rng.uniform(0.005, 0.06)
                    quantity = round(budget / symbol.last_close, rng.choice((0, 0, 0, 4)))
                    quantity = max(quantity, 1.0) * (-1 if kind == "SHORT" else 1)
                    entry_price = symbol.last_close * rng.uniform(0.55, 1.35)
                    last_price = symbol.last_close
                    market_value = quantity * last_price
                multiplier = _OPTION_MULTIPLIER if option else 1
                position = _Position(
                    id=_uuid(rng),
                    portfolio_id=portfolio.id,
                    user_id=portfolio.user_id,
                    symbol=ticker,
                    underlying=symbol.ticker,
                    kind=kind,
                    quantity=quantity,
                    entry_price=entry_price,
                    entry_date=entry_date,
                    last_price=last_price,
                    market_value=market_value,
                    closed_on=closed_on,
                )
                portfolio.positions.append(position)
                self.positions.append(position)
                exit_price = last_price * rng.uniform(0.9, 1.1) if closed_on else None
                yield (
                    position.id,
                    portfolio.id,
                    ticker,
                    kind,
                    _n(quantity, 4),
                    _n(entry_price, 4),
                    entry_date.isoformat(),
                    None if exit_price is None else _n(exit_price, 4),
                    None if closed_on is None else closed_on.isoformat(),
                    underlying,
                    None if strike is None else _n(strike, 4),
                    None if expiry is None else expiry.isoformat(),
                    _n(last_price, 4),
                    _money(market_value),
                    _money((last_price - entry_price) * quantity * multiplier),
                    _money((exit_price - entry_price) * quantity * multiplier) if exit_price else None,
                    "OPTIONS" if option else rng.choice(("PUBLIC", "PUBLIC", "PUBLIC", "PRIVATE")),
                    self.text(rng, 20, 200) if rng.random() < 0.12 else None,
                    _ts(entry_date, rng, 13, 8),
                    _ts(closed_on or BASE_DAY - timedelta(days=rng.randint(0, 10)), rng),
                    _ts(BASE_DAY - timedelta(days=rng.randint(0, 30)), rng) if rng.random() < 0.02 else None,
                )

    def tags(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("tags")
        for user_id in self.user_ids:
            for name in rng.sample(_TAG_NAMES, rng.randint(2, 6)):
                created = BASE_DAY - timedelta(days=rng.randint(200, 700))
                yield (
                    _uuid(rng),
                    user_id,
                    name,
                    "STRATEGY" if rng.random() < 0.3 else "REGULAR",
                    None if rng.random() < 0.5 else f"Legacy tag: {name}",
                    rng.choice(_COLORS) if rng.random() < 0.8 else None,
                    _ts(created, rng),
                    _ts(created, rng),
                )

    def tags_v2(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("tags_v2")
        for user_id in self.user_ids:
            ids = self.tag_ids_by_user.setdefault(user_id, [])
            for order, name in enumerate(rng.sample(_TAG_NAMES, rng.randint(4, 9))):
                tag_id = _uuid(rng)
                ids.append(tag_id)
                archived = rng.random() < 0.1
                created = BASE_DAY - timedelta(days=rng.randint(10, 400))
                yield (
                    tag_id,
                    user_id,
                    name,
                    rng.choice(_COLORS),
                    None if rng.random() < 0.6 else self.text(rng, 20, 120),
                    order,
                    "t" if archived else "f",
                    _ts(created + timedelta(days=5), rng) if archived else None,
                    (user_id if rng.random() < 0.8 else None) if archived else None,
                    _ts(created, rng),
                    _ts(created + timedelta(days=rng.randint(0, 9)), rng),
                )

    def position_tags(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("position_tags")
        for position in self.positions:
            tags = self.tag_ids_by_user[position.user_id]
            for tag_id in rng.sample(tags, min(len(tags), rng.choice((0, 1, 1, 2, 3)))):
                yield (
                    _uuid(rng),
                    position.id,
                    tag_id,
                    _ts(position.entry_date + timedelta(days=rng.randint(0, 15)), rng),
                    position.user_id if rng.random() < 0.7 else None,
                )

    def target_prices(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("portfolio_target_prices")
        for portfolio in self.portfolios:
            picked = [p for p in portfolio.positions if rng.random() < 0.3]
            entries: list[_Position | None] = [*picked, None] if rng.random() < 0.5 else list(picked)
            for position in entries:
                price = position.last_price if position else rng.uniform(10, 400)
                target = price * rng.uniform(0.7, 1.6)
                yield (
                    _uuid(rng),
                    portfolio.id,
                    position.id if position else None,
                    position.symbol if position else rng.choice(self.symbols).ticker,
                    position.kind if position else None,
                    _n(target, 4),
                    _n(target * rng.uniform(0.95, 1.3), 4) if rng.random() < 0.6 else None,
                    _n(price * rng.uniform(0.5, 0.95), 4) if rng.random() < 0.5 else None,
                    _n(price, 4),
                    _n((target / price - 1) * 100, 4),
                    self.text(rng, 30, 180) if rng.random() < 0.25 else None,
                    portfolio.user_id,
                    _ts(BASE_DAY - timedelta(days=rng.randint(5, 120)), rng),
                    _ts(BASE_DAY - timedelta(days=rng.randint(0, 4)), rng),
                )

    # ---- calculation results ----------------------------------------------------------------------

    def factor_definitions(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("factor_definitions")
        for order, (name, factor_type, proxy) in enumerate(_FACTORS):
            fid = _uuid(rng)
            self.factor_ids.append(fid)
            yield (
                fid,
                name,
                f"{name} factor ({factor_type}), regressed on the {proxy or 'long/short'} proxy.",
                factor_type,
                "ETF-proxy regression" if proxy else "long-short spread",
                proxy,
                order,
                "t" if order < len(_FACTORS) - 1 else "f",
                _ts(date(2025, 1, 6), rng),
                _ts(date(2025, 6, 2), rng),
            )

    def position_greeks(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("position_greeks")
        for position in self.positions:
            if position.kind in ("LONG", "SHORT"):
                continue
            sign = 1 if position.kind in ("LC", "SP") else -1
            for day in self.calc_days:
                delta = sign * rng.uniform(0.05, 0.95)
                gamma = rng.uniform(0.001, 0.08)
                scale = position.quantity * _OPTION_MULTIPLIER
                yield (
                    _uuid(rng),
                    position.id,
                    day.isoformat(),
                    _n(delta, 6),
                    _n(gamma, 6),
                    _n(-rng.uniform(0.01, 1.5), 4),
                    _n(rng.uniform(0.01, 2.0), 4),
                    _n(rng.uniform(-0.5, 0.5), 4),
                    _n(rng.uniform(0.12, 1.4), 6),
                    _money(delta * scale * position.last_price),
                    _money(gamma * scale * position.last_price),
                    _ts(day, rng, 22, 2),
                    _ts(day, rng, 22, 2),
                )

    def position_factor_exposures(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("position_factor_exposures")
        factors = self.factor_ids[:_ACTIVE_POSITION_FACTORS]
        flags = ("full_history", "full_history", "full_history", "limited_history", None)
        for position in self.positions:
            flag = rng.choice(flags)
            for day in self.factor_days:
                created = _ts(day, rng, 22, 2)
                for factor_id in factors:
                    yield (
                        _uuid(rng),
                        position.id,
                        factor_id,
                        day.isoformat(),
                        _n(rng.gauss(0, 0.8), 6),
                        flag,
                        created,
                    )

    def position_market_betas(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("position_market_betas")
        for position in self.positions:
            beta0 = rng.uniform(-0.3, 2.2)
            for day in self.calc_days:
                r2 = rng.uniform(0.05, 0.85)
                yield (
                    _uuid(rng),
                    position.portfolio_id,
                    position.id,
                    day.isoformat(),
                    _n(beta0 + rng.gauss(0, 0.03), 6),
                    _n(rng.gauss(0, 0.001), 6),
                    _n(r2, 4),
                    _n(rng.uniform(0.01, 0.3), 6),
                    _n(rng.uniform(0, 0.2) if r2 > 0.2 else rng.uniform(0, 1), 8),
                    rng.randint(60, 90),
                    90,
                    "OLS_SIMPLE",
                    "SPY",
                    _ts(day, rng, 22, 2),
                )

    def position_volatility(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("position_volatility")
        trends = ("increasing", "decreasing", "stable", None)
        for position in self.positions:
            vol = rng.uniform(0.1, 0.8)
            for day in self.calc_days:
                v21 = max(0.01, vol + rng.gauss(0, 0.03))
                created = _ts(day, rng, 22, 2)
                yield (
                    _uuid(rng),
                    position.id,
                    day.isoformat(),
                    _n(v21, 6),
                    _n(max(0.01, vol + rng.gauss(0, 0.02)), 6),
                    _n(max(0.01, v21 * rng.uniform(0.8, 1.2)), 6) if rng.random() < 0.85 else None,
                    rng.choice(trends),
                    _n(rng.uniform(0, 1), 4),
                    rng.randint(21, 63),
                    _n(rng.uniform(0, 0.6), 4) if rng.random() < 0.85 else None,
                    created,
                    created,
                )

    def position_interest_rate_betas(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("position_interest_rate_betas")
        for position in self.positions:
            for day in self.ir_days:
                yield (
                    _uuid(rng),
                    position.id,
                    _n(rng.gauss(0, 0.4), 6),
                    _n(rng.uniform(0, 0.4), 4) if rng.random() < 0.9 else None,
                    day.isoformat(),
                    _ts(day, rng, 22, 2),
                )

    def correlation_calculations(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("correlation_calculations")
        day = self.calc_days[-1]
        for portfolio in self.portfolios:
            for duration in (90, 180):
                cid = _uuid(rng)
                self.calculation_ids.append((cid, portfolio, day))
                included = min(_MAX_CORRELATED_POSITIONS, len(portfolio.positions))
                at = _ts(day, rng, 22, 2)
                yield (
                    cid,
                    portfolio.id,
                    duration,
                    at,
                    _n(rng.uniform(0.05, 0.7), 6),
                    _n(rng.uniform(0, 1), 6),
                    _n(rng.uniform(2, included), 4),
                    rng.choice(("full", "limited", "insufficient")),
                    _money(rng.uniform(1000, 10000)),
                    _n(rng.uniform(0.001, 0.02), 6),
                    rng.choice(("both", "value_only", "weight_only")),
                    _n(0.7, 6),
                    included,
                    len(portfolio.positions) - included,
                    at,
                )

    def pairwise_correlations(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("pairwise_correlations")
        for cid, portfolio, day in self.calculation_ids:
            symbols = [p.symbol for p in portfolio.positions[:_MAX_CORRELATED_POSITIONS]]
            created = _ts(day, rng, 22, 2)
            for i, first in enumerate(symbols):
                for second in symbols[i + 1 :]:
                    value = max(-1.0, min(1.0, rng.gauss(0.35, 0.3)))
                    yield (
                        _uuid(rng),
                        cid,
                        first,
                        second,
                        _n(value, 6),
                        rng.randint(60, 180),
                        _n(rng.uniform(0, 0.1), 6) if rng.random() < 0.8 else None,
                        created,
                    )

    def correlation_clusters(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("correlation_clusters")
        nicknames = (
            "Tech Momentum",
            "Rate Sensitive",
            "Defensive Income",
            "Energy & Materials",
            "Mega-cap Growth",
            "Cyclicals",
            "高相関クラスター",
            "Hedges 🛡️",
        )
        for cid, portfolio, day in self.calculation_ids:
            members = portfolio.positions[:_MAX_CORRELATED_POSITIONS]
            n_clusters = max(1, min(len(members) // 4, rng.randint(2, 4)))
            total = sum(abs(p.market_value) for p in portfolio.positions) or 1.0
            for number in range(n_clusters):
                group = members[number::n_clusters]
                value = sum(abs(p.market_value) for p in group)
                kid = _uuid(rng)
                self.cluster_ids.append((kid, group))
                yield (
                    kid,
                    cid,
                    number + 1,
                    rng.choice(nicknames),
                    _n(rng.uniform(0.7, 0.95), 6),
                    _money(value),
                    _n(min(value / total, 1.0), 6),
                    _ts(day, rng, 22, 2),
                )

    def cluster_positions(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("correlation_cluster_positions")
        day = self.calc_days[-1]
        for kid, group in self.cluster_ids:
            total = sum(abs(p.market_value) for p in group) or 1.0
            for position in group:
                yield (
                    _uuid(rng),
                    kid,
                    position.id,
                    position.symbol,
                    _money(abs(position.market_value)),
                    _n(abs(position.market_value) / total, 6),
                    _n(rng.uniform(0.5, 1.0), 6) if rng.random() < 0.9 else None,
                    _ts(day, rng, 22, 2),
                )

    def factor_correlations(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("factor_correlations")
        for day in self.ir_days:
            for i, first in enumerate(self.factor_ids):
                for j, second in enumerate(self.factor_ids):
                    if i == j:
                        continue
                    yield (
                        _uuid(rng),
                        first,
                        second,
                        _n(max(-1.0, min(1.0, rng.gauss(0.1, 0.35))), 6),
                        day.isoformat(),
                        252,
                        "0.940",
                        rng.randint(200, 252),
                        _ts(day, rng, 22, 2),
                    )

    def factor_exposures(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("factor_exposures")
        for portfolio in self.portfolios:
            for day in self.portfolio_factor_days:
                created = _ts(day, rng, 22, 2)
                for factor_id in self.factor_ids:
                    value = rng.gauss(0.2, 0.6)
                    yield (
                        _uuid(rng),
                        portfolio.id,
                        factor_id,
                        day.isoformat(),
                        _n(value, 6),
                        _money(value * portfolio.equity) if rng.random() < 0.9 else None,
                        created,
                        created,
                    )

    def portfolio_snapshots(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("portfolio_snapshots")
        sectors = list(_SECTORS)
        for portfolio in self.portfolios:
            longs = sum(1 for p in portfolio.positions if p.quantity > 0)
            shorts = len(portfolio.positions) - longs
            value = portfolio.equity
            cumulative = 0.0
            for index, day in enumerate(self.snapshot_days):
                daily_return = rng.gauss(0.0004, 0.012)
                pnl = value * daily_return
                value += pnl
                cumulative += pnl
                long_value = value * rng.uniform(0.9, 1.4)
                short_value = -value * rng.uniform(0.0, 0.5)
                weights = {s: round(rng.uniform(0, 0.3), 4) for s in rng.sample(sectors, 6)}
                first = index == 0
                yield (
                    _uuid(rng),
                    portfolio.id,
                    day.isoformat(),
                    _money(value),
                    _money(value * rng.uniform(0, 0.1)),
                    _money(long_value),
                    _money(short_value),
                    _money(long_value - short_value),
                    _money(long_value + short_value),
                    None if first else _money(pnl),
                    None if first else _n(daily_return, 6),
                    _money(cumulative),
                    _money(rng.gauss(0, 5e4)),
                    _money(rng.gauss(0, 500)),
                    _money(-abs(rng.gauss(0, 800))),
                    _money(rng.gauss(0, 3000)),
                    longs + shorts,
                    longs,
                    shorts,
                    _n(rng.uniform(0.4, 1.6), 6),
                    _n(rng.uniform(0.4, 1.6), 6) if rng.random() < 0.7 else None,
                    _money(portfolio.equity),
                    _json(weights),
                    _ts(day, rng, 21, 3),
                )

    def stress_test_scenarios(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("stress_test_scenarios")
        for code, name, category, severity, shocks in _STRESS_SCENARIOS:
            sid = _uuid(rng)
            self.scenario_ids.append(sid)
            config = {"shocked_factors": shocks, "correlation_mode": "full", "horizon_days": 1}
            yield (
                sid,
                code,
                name,
                f"{name}: instantaneous shock of {', '.join(f'{k} {v:+.1%}' for k, v in shocks.items())}.",
                category,
                severity,
                _json(config),
                "t",
                _ts(date(2025, 3, 3), rng),
                _ts(date(2025, 9, 1), rng),
            )

    def stress_test_results(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("stress_test_results")
        factor_names = [name for name, _, _ in _FACTORS]
        for portfolio in self.portfolios:
            for day in self.calc_days[-2:]:
                for scenario_id in self.scenario_ids:
                    direct = portfolio.equity * rng.uniform(-0.4, 0.15)
                    correlated = direct * rng.uniform(0.8, 1.5)
                    impacts = (
                        {n: round(direct * rng.uniform(-0.5, 0.5), 2) for n in rng.sample(factor_names, 3)}
                        if rng.random() < 0.85
                        else None
                    )
                    yield (
                        _uuid(rng),
                        portfolio.id,
                        scenario_id,
                        day.isoformat(),
                        _money(direct),
                        _money(correlated),
                        _money(correlated - direct),
                        None if impacts is None else _json(impacts),
                        _json({"engine": "v2", "positions": len(portfolio.positions)})
                        if rng.random() < 0.5
                        else None,
                        _ts(day, rng, 22, 2),
                    )

    def market_risk_scenarios(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("market_risk_scenarios")
        for portfolio in self.portfolios:
            for day in self.ir_days:
                beta = rng.uniform(0.5, 1.5)
                for scenario_type, shock in _MARKET_RISK_TYPES:
                    yield (
                        _uuid(rng),
                        portfolio.id,
                        scenario_type,
                        _n(shock, 6),
                        _money(portfolio.equity * shock * beta),
                        day.isoformat(),
                        _ts(day, rng, 22, 2),
                    )

    # ---- market data ----------------------------------------------------------------------------

    def company_profiles(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("company_profiles")
        for symbol in self.symbols:
            ceo = None if symbol.is_etf else f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
            slug = "".join(ch for ch in symbol.ticker.lower() if ch.isalnum())
            aliases = [symbol.name.upper(), f"ticker:{symbol.ticker}"]
            if rng.random() < 0.2:
                aliases.append(rng.choice(("株式会社", 'Société "Anonyme"', "a,b {braces}", "back\\slash")))
            raw = {
                "symbol": symbol.ticker,
                "lastDiv": round(rng.uniform(0, 5), 2),
                "range": f"{symbol.last_close * 0.7:.2f}-{symbol.last_close * 1.2:.2f}",
                "isActivelyTrading": True,
                "cik": f"{rng.randrange(10**10):010d}" if symbol.country == "US" else None,
            }
            yield (
                symbol.ticker,
                symbol.name,
                symbol.sector,
                symbol.industry,
                symbol.exchange,
                symbol.country,
                "USD" if symbol.country == "US" else rng.choice(("EUR", "JPY", "DKK", "USD")),
                _money(symbol.market_cap),
                None if symbol.is_etf else rng.randint(40, 400_000),
                ceo,
                f"https://www.{slug}.example.com",
                (date(1980, 1, 1) + timedelta(days=rng.randint(0, 16000))).isoformat()
                if rng.random() < 0.8
                else None,
                "t" if symbol.is_etf else "f",
                _n(rng.uniform(0.3, 2.0), 6),
                _n(rng.uniform(5, 90), 4) if rng.random() < 0.85 else None,
                _n(rng.uniform(0, 0.06), 6) if rng.random() < 0.6 else None,
                self.text(rng, 300, 1500),
                aliases,
                _json(raw),
                _ts(date(2025, 2, 1) + timedelta(days=rng.randint(0, 100)), rng),
                _ts(BASE_DAY - timedelta(days=rng.randint(0, 14)), rng),
            )

    def market_data_cache(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("market_data_cache")
        next_id = 1
        days = self.market_days
        for symbol in self.symbols:
            # Walk back from the latest close so that positions' last_price matches the final bar.
            sigma = symbol.volatility / math.sqrt(252)
            closes = [symbol.last_close]
            for _ in range(len(days) - 1):
                closes.append(max(0.05, closes[-1] / math.exp(rng.gauss(0.0003, sigma))))
            closes.reverse()
            source = rng.choice(("polygon", "polygon", "fmp", "yfinance"))
            with_profile = rng.random() < 0.5
            for day, close in zip(days, closes, strict=True):
                open_ = close * math.exp(rng.gauss(0, sigma / 2))
                high = max(open_, close) * (1 + abs(rng.gauss(0, sigma / 2)))
                low = min(open_, close) * (1 - abs(rng.gauss(0, sigma / 2)))
                stamp = _ts(day, rng, 21, 2)
                yield (
                    next_id,
                    symbol.ticker,
                    day.isoformat(),
                    _n(open_, 4),
                    _n(high, 4),
                    _n(low, 4),
                    _n(close, 4),
                    int(symbol.market_cap / close * rng.uniform(0.001, 0.02)),
                    symbol.sector if with_profile else None,
                    symbol.industry if with_profile else None,
                    symbol.exchange if with_profile else None,
                    symbol.country if with_profile else None,
                    _money(symbol.market_cap) if with_profile else None,
                    source,
                    stamp,
                    stamp,
                )
                next_id += 1

    def benchmarks_sector_weights(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("benchmarks_sector_weights")
        month_ends = [date(2025, month, 1) - timedelta(days=1) for month in range(2, 13)] + [BASE_DAY]
        for code in ("SPY", "QQQ", "IWM"):
            for asof in month_ends:
                raw = [rng.uniform(0.01, 0.3) for _ in _SECTORS]
                total = sum(raw)
                for sector, weight in zip(_SECTORS, raw, strict=True):
                    stamp = _ts(asof + timedelta(days=1), rng, 6, 2)
                    yield (
                        _uuid(rng),
                        code,
                        asof.isoformat(),
                        sector,
                        _n(weight / total, 6),
                        _money(rng.uniform(1e11, 1.5e13)) if rng.random() < 0.9 else None,
                        rng.randint(5, 120),
                        "fmp",
                        stamp,
                        stamp,
                    )

    def fund_holdings(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("fund_holdings")
        equities = self.equities
        for fund in (s for s in self.symbols if s.is_etf):
            holdings = rng.sample(equities, min(len(equities), 25))
            raw = sorted((rng.paretovariate(1.2) for _ in holdings), reverse=True)
            total = sum(raw)
            fund_value = fund.market_cap
            for holding, weight in zip(holdings, raw, strict=True):
                share = weight / total
                stamp = _ts(BASE_DAY - timedelta(days=rng.randint(1, 30)), rng)
                yield (
                    _uuid(rng),
                    fund.ticker,
                    holding.ticker,
                    holding.name,
                    _n(share, 6),
                    int(fund_value * share / holding.last_close) if rng.random() < 0.9 else None,
                    _money(fund_value * share),
                    rng.choice(("fmp", "etfdb")),
                    stamp,
                    stamp,
                )

    # ---- system -----------------------------------------------------------------------------------

    def batch_jobs(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("batch_jobs")
        days = self.market_days
        statuses = ("completed",) * 16 + ("failed", "failed", "running", "cancelled")
        for i in range(self.n_batch_jobs):
            name, job_type, _ = _BATCH_JOBS[i % len(_BATCH_JOBS)]
            day = days[len(days) - 1 - (i // len(_BATCH_JOBS)) % len(days)]
            status = rng.choice(statuses) if i >= len(_BATCH_JOBS) else "completed"
            start_second = 21 * 3600 + rng.randrange(3 * 3600)
            started = datetime.combine(day, datetime.min.time(), UTC) + timedelta(seconds=start_second)
            duration = rng.uniform(0.5, 900)
            finished = started + timedelta(seconds=duration) if status != "running" else None
            yield (
                _uuid(rng),
                name,
                job_type,
                status,
                started.isoformat(sep=" "),
                None if finished is None else finished.isoformat(sep=" "),
                None if finished is None else _n(duration, 3),
                rng.randint(0, 50_000),
                f"Timeout after {rng.randint(30, 600)}s fetching {rng.choice(self.symbols).ticker}:\n"
                f'  provider said "429 Too Many Requests"\t(retry {rng.randint(1, 3)}/3)'
                if status == "failed"
                else None,
                _json(
                    {"trigger": rng.choice(("cron", "manual", "api")), "host": f"worker-{rng.randint(1, 4)}"}
                ),
                started.isoformat(sep=" "),
            )

    def batch_job_schedules(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("batch_job_schedules")
        for name, job_type, cron in _BATCH_JOBS:
            yield (
                _uuid(rng),
                name,
                job_type,
                cron,
                rng.choice(("00:30:00", "01:00:00", "00:10:00", "02:00:00")),
                rng.randint(0, 5),
                "t" if name != "fundamentals_refresh" else "f",
                _ts(BASE_DAY, rng, 21, 3),
                _ts(BASE_DAY + timedelta(days=3), rng, 21, 3),
                f"Runs {name.replace('_', ' ')} ({cron}).",
                _ts(date(2025, 1, 6), rng),
                _ts(date(2025, 10, 1), rng),
            )

    def batch_run_tracking(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("batch_run_tracking")
        phases = ("phase_1_market_data", "phase_2_snapshots", "phase_3_analytics", "phase_4_cleanup")
        days = self.market_days
        for i in range(1, self.n_batch_runs + 1):
            day = days[len(days) - 1 - ((i - 1) // len(phases)) % len(days)]
            status = rng.choice(("completed",) * 8 + ("failed", "running"))
            portfolio = rng.choice(self.portfolios) if rng.random() < 0.6 else None
            errors: list[str] | None = None
            if status == "failed":
                errors = [
                    f"{rng.choice(self.symbols).ticker}: no price for {day.isoformat()}",
                    'quote "stale", retried {3} times, gave up',
                    "upstream: 数据源超时 ⏱",
                ]
            started = _ts(day, rng, 21, 2)
            yield (
                i,
                day.isoformat(),
                phases[(i - 1) % len(phases)],
                portfolio.id if portfolio else None,
                status,
                started,
                None if status == "running" else _ts(day, rng, 23, 1),
                _json({p: round(rng.uniform(0.2, 120), 3) for p in phases[: rng.randint(1, 4)]}),
                rng.randint(0, len(self.portfolios)),
                rng.randint(0, len(self.symbols)),
                errors,
                started,
            )

    def export_history(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("export_history")
        by_user: dict[str, list[_Portfolio]] = {}
        for portfolio in self.portfolios:
            by_user.setdefault(portfolio.user_id, []).append(portfolio)
        for user_id in self.user_ids:
            for _ in range(rng.randint(0, 4)):
                portfolio = rng.choice(by_user[user_id]) if rng.random() < 0.85 else None
                export_type = rng.choice(("csv", "csv", "fix", "json", "pdf", "xlsx"))
                day = BASE_DAY - timedelta(days=rng.randint(0, 180))
                ip = (
                    f"203.0.113.{rng.randint(1, 254)}"
                    if rng.random() < 0.8
                    else f"2001:db8::{rng.randint(1, 0xFFFF):x}"
                )
                yield (
                    _uuid(rng),
                    user_id,
                    portfolio.id if portfolio else None,
                    export_type,
                    f"portfolio_{day:%Y%m%d}_{rng.randint(1000, 9999)}.{export_type}",
                    rng.randint(2_000, 5_000_000),
                    rng.randint(1, 5_000),
                    "\\x" + rng.randbytes(32).hex(),
                    ip if rng.random() < 0.9 else None,
                    _json({"include_closed": rng.random() < 0.3, "tags": rng.sample(_TAG_NAMES, 2)}),
                    _ts(day, rng),
                )

    def modeling_sessions(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("modeling_session_snapshots")
        for portfolio in self.portfolios:
            for _ in range(rng.choice((0, 1, 1, 2))):
                day = BASE_DAY - timedelta(days=rng.randint(0, 90))
                holdings = [
                    {"symbol": p.symbol, "qty": p.quantity, "price": round(p.last_price, 4)}
                    for p in portfolio.positions
                ]
                changes = [
                    {
                        "op": rng.choice(("add", "trim", "close")),
                        "symbol": rng.choice(holdings)["symbol"],
                        "qty": rng.randint(1, 500),
                    }
                    for _ in range(rng.randint(0, 5))
                ]
                status = rng.choice(("active", "completed", "completed", "cancelled"))
                yield (
                    _uuid(rng),
                    _uuid(rng),
                    portfolio.user_id,
                    portfolio.id,
                    f"What-if {rng.choice(('hedge', 'rebalance', 'de-risk'))} #{rng.randint(1, 99)}",
                    status,
                    _json({"positions": holdings, "equity": round(portfolio.equity, 2)}),
                    _json({"positions": holdings[: max(1, len(holdings) - 2)]}) if changes else None,
                    _json(changes),
                    _json({"beta_change": round(rng.gauss(0, 0.1), 4)}) if status == "completed" else None,
                    _ts(day, rng),
                    _ts(day + timedelta(days=1), rng) if status != "active" else None,
                    _ts(day + timedelta(days=7), rng) if rng.random() < 0.8 else None,
                )

    def equity_changes(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("equity_changes")
        for portfolio in self.portfolios:
            for _ in range(rng.randint(0, 5)):
                day = BASE_DAY - timedelta(days=rng.randint(0, 365))
                stamp = _ts(day, rng)
                yield (
                    _uuid(rng),
                    portfolio.id,
                    rng.choice(("CONTRIBUTION", "CONTRIBUTION", "WITHDRAWAL")),
                    _money(rng.uniform(500, portfolio.equity * 0.1)),
                    day.isoformat(),
                    self.text(rng, 15, 90) if rng.random() < 0.3 else None,
                    portfolio.user_id,
                    stamp,
                    stamp,
                    None if rng.random() < 0.97 else _ts(day + timedelta(days=2), rng),
                )

    def position_realized_events(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("position_realized_events")
        for position in self.positions:
            if position.closed_on is None and rng.random() > 0.04:
                continue
            day = position.closed_on or BASE_DAY - timedelta(days=rng.randint(0, 10))
            lots = rng.randint(1, 2)
            for _ in range(lots):
                closed = (
                    abs(position.quantity) / lots
                    if position.closed_on
                    else max(1.0, abs(position.quantity) / 4)
                )
                price = position.last_price * rng.uniform(0.9, 1.1)
                multiplier = 1 if position.kind in ("LONG", "SHORT") else _OPTION_MULTIPLIER
                direction = 1 if position.quantity > 0 else -1
                yield (
                    _uuid(rng),
                    position.id,
                    position.portfolio_id,
                    max(day, position.entry_date).isoformat(),
                    _n(max(closed, 0.0001), 4),
                    _n(price, 4),
                    _money((price - position.entry_price) * closed * multiplier * direction),
                    position.user_id if rng.random() < 0.8 else None,
                    _ts(day, rng, 14, 6),
                )

    # ---- fundamentals ----------------------------------------------------------------------------

    def _periods(self) -> list[tuple[date, str, int, int | None]]:
        quarters = [
            date(2023, 12, 31),
            date(2024, 3, 31),
            date(2024, 6, 30),
            date(2024, 9, 30),
            date(2024, 12, 31),
            date(2025, 3, 31),
            date(2025, 6, 30),
            date(2025, 9, 30),
        ]
        periods: list[tuple[date, str, int, int | None]] = [
            (d, "q", d.year, (d.month - 1) // 3 + 1) for d in quarters
        ]
        periods += [(date(2023, 12, 31), "a", 2023, None), (date(2024, 12, 31), "a", 2024, None)]
        return periods

    def _fundamental_rows(
        self, table: str, build: Callable[[random.Random, _Symbol, float], list[object]]
    ) -> Iterator[tuple[object, ...]]:
        rng = self.rng(table)
        for symbol in self.equities:
            revenue_base = symbol.market_cap * rng.uniform(0.05, 0.5) / 4
            for period_date, frequency, year, quarter in self._periods():
                revenue = revenue_base * (4 if frequency == "a" else 1) * rng.uniform(0.85, 1.15)
                stamp = _ts(period_date + timedelta(days=rng.randint(25, 60)), rng)
                yield (
                    _uuid(rng),
                    symbol.ticker,
                    period_date.isoformat(),
                    frequency,
                    year,
                    quarter,
                    "USD" if symbol.country == "US" else rng.choice(("EUR", "JPY", "USD")),
                    *build(rng, symbol, revenue),
                    "yahooquery",
                    stamp,
                    stamp,
                )

    def income_statements(self) -> Iterator[tuple[object, ...]]:
        def build(rng: random.Random, symbol: _Symbol, revenue: float) -> list[object]:
            cost = revenue * rng.uniform(0.3, 0.8)
            gross = revenue - cost
            rnd = revenue * rng.uniform(0, 0.2) if rng.random() < 0.7 else None
            sga = revenue * rng.uniform(0.05, 0.25)
            operating = gross - (rnd or 0) - sga
            interest = revenue * rng.uniform(0, 0.03)
            pretax = operating - interest
            tax = max(0.0, pretax * rng.uniform(0.1, 0.25))
            net = pretax - tax
            shares = symbol.market_cap / symbol.last_close
            return [
                _money(revenue),
                _money(cost),
                _money(gross),
                _n(gross / revenue, 6),
                None if rnd is None else _money(rnd),
                _money(sga),
                _money(operating),
                _n(operating / revenue, 6),
                _money(operating),
                _money(operating + revenue * 0.05),
                _money(interest),
                _money(pretax),
                _money(tax),
                _money(net),
                _n(net / revenue, 6),
                _n(net / shares, 4),
                _n(net / shares * 1.01, 4),
                int(shares),
            ]

        return self._fundamental_rows("income_statements", build)

    def balance_sheets(self) -> Iterator[tuple[object, ...]]:
        def build(rng: random.Random, symbol: _Symbol, revenue: float) -> list[object]:
            assets = revenue * rng.uniform(1.5, 6)
            current = assets * rng.uniform(0.2, 0.6)
            cash = current * rng.uniform(0.1, 0.6)
            liabilities = assets * rng.uniform(0.3, 0.8)
            current_liabilities = liabilities * rng.uniform(0.2, 0.5)
            debt = liabilities * rng.uniform(0.1, 0.6)
            equity = assets - liabilities
            return [
                _money(assets),
                _money(current),
                _money(cash),
                _money(current * rng.uniform(0, 0.2)) if rng.random() < 0.6 else None,
                _money(current * rng.uniform(0.05, 0.3)),
                _money(current * rng.uniform(0, 0.3)) if rng.random() < 0.7 else None,
                _money(liabilities),
                _money(current_liabilities),
                _money(debt * 0.8),
                _money(debt),
                _money(equity),
                _money(equity * rng.uniform(-0.5, 0.9)),
                int(symbol.market_cap / symbol.last_close),
                _money(current - current_liabilities),
                _money(debt - cash),
                _n(current / current_liabilities, 4),
                _n(debt / equity, 4),
            ]

        return self._fundamental_rows("balance_sheets", build)

    def cash_flows(self) -> Iterator[tuple[object, ...]]:
        def build(rng: random.Random, symbol: _Symbol, revenue: float) -> list[object]:
            operating = revenue * rng.uniform(-0.05, 0.35)
            capex = -revenue * rng.uniform(0.01, 0.15)
            return [
                _money(operating),
                _money(capex),
                _money(operating + capex),
                _money(-revenue * rng.uniform(0, 0.2)),
                _money(rng.uniform(-0.2, 0.1) * revenue),
                _money(-revenue * rng.uniform(0, 0.05)) if rng.random() < 0.5 else None,
                _money(-revenue * rng.uniform(0, 0.08)) if rng.random() < 0.5 else None,
                _money(revenue * rng.uniform(0, 0.06)),
                _money(revenue * rng.uniform(0.01, 0.08)),
                _money(rng.uniform(-0.1, 0.1) * revenue),
                _n((operating + capex) / revenue, 6),
            ]

        return self._fundamental_rows("cash_flows", build)

    # ---- chat / agent ------------------------------------------------------------------------------

    def agent_conversations(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("agent_conversations")
        by_user: dict[str, list[_Portfolio]] = {}
        for portfolio in self.portfolios:
            by_user.setdefault(portfolio.user_id, []).append(portfolio)
        for index, user_id in enumerate(self.user_ids):
            # The first user always talks to the agent, so tiny scales still have messages.
            for _ in range(max(rng.randint(2, 14), 2 if index == 0 else 0)):
                cid = _uuid(rng)
                day = BASE_DAY - timedelta(days=rng.randint(0, 120))
                self.conversation_ids.append((cid, day.isoformat()))
                portfolio = rng.choice(by_user[user_id]) if rng.random() < 0.8 else None
                yield (
                    cid,
                    user_id,
                    portfolio.id if portfolio else None,
                    rng.choice(("green", "blue", "indigo", "violet")),
                    self.text(rng, 10, 60) if rng.random() < 0.85 else None,
                    "openai",
                    f"resp_{rng.getrandbits(96):024x}" if rng.random() < 0.7 else None,
                    _json({"client": rng.choice(("web", "ios", "api")), "model": "gpt-4o"}),
                    _ts(day, rng),
                    _ts(day, rng),
                )

    def agent_messages(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("agent_messages")
        tools = (
            "get_portfolio_complete",
            "get_positions_details",
            "get_factor_exposures",
            "get_prices_historical",
        )
        assistant_count = 0
        for cid, day in self.conversation_ids:
            for turn in range(rng.randint(1, 6)):
                roles = ["user", "assistant"]
                if rng.random() < 0.25:
                    roles.insert(1, "tool")
                for role in roles:
                    mid = _uuid(rng)
                    tool_calls = None
                    tokens: tuple[int | None, int | None] = (None, None)
                    latency: tuple[int | None, int | None] = (None, None)
                    if role == "user":
                        content: str | None = self.text(rng, 20, 400)
                    elif role == "tool":
                        content = _json(
                            {
                                "tool": rng.choice(tools),
                                "rows": rng.randint(1, 50),
                                "summary": self.text(rng, 100, 1500),
                            }
                        )
                    else:
                        assistant_count += 1
                        # A quarter of the answers are long enough to be TOASTed.
                        long = rng.random() < 0.25
                        content = self.text(rng, 2500, 9000) if long else self.text(rng, 200, 1800)
                        if rng.random() < 0.02:
                            content = None  # interrupted stream
                        if rng.random() < 0.3:
                            tool_calls = _json(
                                [{"name": rng.choice(tools), "args": {"limit": rng.randint(5, 100)}}]
                            )
                        tokens = (rng.randint(300, 12000), rng.randint(50, 2500))
                        latency = (rng.randint(150, 2500), rng.randint(800, 30000))
                        if assistant_count % 8 == 1:
                            self.assistant_message_ids.append(mid)
                    yield (
                        mid,
                        cid,
                        role,
                        content,
                        tool_calls,
                        latency[0],
                        latency[1],
                        tokens[0],
                        tokens[1],
                        f"msg_{rng.getrandbits(96):024x}" if role == "assistant" else None,
                        _json({"code": "rate_limit", "retry": True})
                        if role == "assistant" and content is None
                        else None,
                        f"{day} {10 + turn:02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}+00",
                    )

    # ---- AI tables -------------------------------------------------------------------------------

    def _centroids(self, rng: random.Random) -> list[list[float]]:
        """One direction per scope, so that embeddings cluster the way real topic embeddings do."""
        centroids = []
        for _ in _KB_SCOPES:
            raw = [rng.gauss(0, 1) for _ in range(EMBEDDING_DIM)]
            norm = math.sqrt(math.fsum(x * x for x in raw))
            # Scaled to the noise's magnitude (int16 range) so the cluster is visible but loose.
            centroids.append([x / norm * 32768 * math.sqrt(EMBEDDING_DIM / 3) * 0.8 for x in raw])
        return centroids

    def ai_kb_documents(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("ai_kb_documents")
        centroids = self._centroids(rng)
        for i in range(self.n_kb):
            scope_index = rng.randrange(len(_KB_SCOPES))
            scope = _KB_SCOPES[scope_index]
            # Uniform int16 noise: ~100x faster than gauss() per component and just as good here.
            noise = array("h", rng.randbytes(2 * EMBEDDING_DIM))
            raw = list(map(operator.add, centroids[scope_index], noise))
            inv = 1.0 / math.sqrt(math.fsum(map(operator.mul, raw, raw)))
            # About 3% of documents are still waiting for their embedding.
            embedding = None if i % 33 == 7 else Vector([x * inv for x in raw])
            day = BASE_DAY - timedelta(days=rng.randint(0, 400))
            created = datetime.combine(day, datetime.min.time(), UTC) + timedelta(
                seconds=rng.randrange(86400)
            )
            chunk = rng.randint(0, 40)
            yield (
                uuid.UUID(_uuid(rng)),
                scope,
                f"{rng.choice(_SUBJECTS)} — {scope.replace('_', ' ')} note {i} (part {chunk + 1})",
                self.text(rng, 1500, 6500),
                Jsonb(
                    {
                        "source": rng.choice(("docs", "pdf", "web", "agent")),
                        "chunk_index": chunk,
                        "lang": rng.choice(("en", "en", "en", "fr", "ja")),
                        "tokens": rng.randint(400, 2000),
                    }
                ),
                embedding,
                created,
                created + timedelta(days=rng.randint(0, 30)),
            )

    def ai_memories(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("ai_memories")
        tenants = [_uuid(rng) for _ in range(max(2, self.n_users // 50))]
        for user_id in self.user_ids:
            for _ in range(rng.randint(0, 4)):
                day = BASE_DAY - timedelta(days=rng.randint(0, 200))
                yield (
                    _uuid(rng),
                    user_id if rng.random() < 0.95 else None,
                    rng.choice(tenants),
                    rng.choice(("user", "user", "portfolio", "global")),
                    self.text(rng, 30, 400),
                    _json({"kind": rng.choice(("preference", "rule", "fact")), "pinned": rng.random() < 0.2}),
                    _ts(day, rng),
                )

    def ai_feedback(self) -> Iterator[tuple[object, ...]]:
        rng = self.rng("ai_feedback")
        for message_id in self.assistant_message_ids:
            rating = "up" if rng.random() < 0.75 else "down"
            yield (
                _uuid(rng),
                message_id,
                rating,
                self.text(rng, 100, 800) if rating == "down" and rng.random() < 0.3 else None,
                rng.choice(
                    ("Très utile 👍", "Wrong beta, check SPY", "数字が違う", "Great summary!", "Too long")
                )
                if rng.random() < 0.4
                else None,
                _ts(BASE_DAY - timedelta(days=rng.randint(0, 100)), rng),
            )


_USER_COLUMNS = _cols(
    "id email hashed_password full_name is_active is_admin timezone preferences last_login_at "
    "created_at updated_at"
)
_PORTFOLIO_COLUMNS = _cols(
    "id user_id name account_name account_type description currency equity_balance is_active "
    "created_at updated_at deleted_at"
)
_POSITION_COLUMNS = _cols(
    "id portfolio_id symbol position_type quantity entry_price entry_date exit_price exit_date "
    "underlying_symbol strike_price expiration_date last_price market_value unrealized_pnl "
    "realized_pnl investment_class notes created_at updated_at deleted_at"
)
_TAG_COLUMNS = ("id", "user_id", "name", "tag_type", "description", "color", "created_at", "updated_at")
_TAG_V2_COLUMNS = _cols(
    "id user_id name color description display_order is_archived archived_at archived_by created_at "
    "updated_at"
)
_POSITION_TAG_COLUMNS = ("id", "position_id", "tag_id", "assigned_at", "assigned_by")
_TARGET_PRICE_COLUMNS = _cols(
    "id portfolio_id position_id symbol position_type target_price_eoy target_price_next_year "
    "downside_target_price current_price expected_return_eoy notes created_by created_at updated_at"
)
_FACTOR_COLUMNS = _cols(
    "id name description factor_type calculation_method etf_proxy display_order is_active created_at "
    "updated_at"
)
_GREEK_COLUMNS = _cols(
    "id position_id calculation_date delta gamma theta vega rho implied_volatility delta_dollars "
    "gamma_dollars created_at updated_at"
)
_PFE_COLUMNS = _cols("id position_id factor_id calculation_date exposure_value quality_flag created_at")
_BETA_COLUMNS = _cols(
    "id portfolio_id position_id calc_date beta alpha r_squared std_error p_value observations "
    "window_days method market_index created_at"
)
_VOL_COLUMNS = _cols(
    "id position_id calculation_date realized_vol_21d realized_vol_63d expected_vol_21d vol_trend "
    "vol_percentile observations model_r_squared created_at updated_at"
)
_IR_COLUMNS = ("id", "position_id", "ir_beta", "r_squared", "calculation_date", "created_at")
_CORR_CALC_COLUMNS = _cols(
    "id portfolio_id duration_days calculation_date overall_correlation "
    "correlation_concentration_score effective_positions data_quality min_position_value "
    "min_portfolio_weight filter_mode correlation_threshold positions_included positions_excluded "
    "created_at"
)
_PAIR_COLUMNS = _cols(
    "id correlation_calculation_id symbol_1 symbol_2 correlation_value data_points "
    "statistical_significance created_at"
)
_CLUSTER_COLUMNS = _cols(
    "id correlation_calculation_id cluster_number nickname avg_correlation total_value "
    "portfolio_percentage created_at"
)
_CLUSTER_POS_COLUMNS = _cols(
    "id cluster_id position_id symbol value portfolio_percentage correlation_to_cluster created_at"
)
_FACTOR_CORR_COLUMNS = _cols(
    "id factor_1_id factor_2_id correlation calculation_date lookback_days decay_factor data_points "
    "created_at"
)
_FACTOR_EXPOSURE_COLUMNS = _cols(
    "id portfolio_id factor_id calculation_date exposure_value exposure_dollar created_at updated_at"
)
_SNAPSHOT_COLUMNS = _cols(
    "id portfolio_id snapshot_date total_value cash_value long_value short_value gross_exposure "
    "net_exposure daily_pnl daily_return cumulative_pnl portfolio_delta portfolio_gamma "
    "portfolio_theta portfolio_vega num_positions num_long_positions num_short_positions "
    "beta_calculated_90d beta_provider_1y equity_balance sector_exposure created_at"
)
_SCENARIO_COLUMNS = _cols(
    "id scenario_id name description category severity shock_config active created_at updated_at"
)
_STRESS_RESULT_COLUMNS = _cols(
    "id portfolio_id scenario_id calculation_date direct_pnl correlated_pnl correlation_effect "
    "factor_impacts calculation_metadata created_at"
)
_MARKET_RISK_COLUMNS = _cols(
    "id portfolio_id scenario_type scenario_value predicted_pnl calculation_date created_at"
)
_COMPANY_COLUMNS = _cols(
    "symbol company_name sector industry exchange country currency market_cap employees ceo website "
    "ipo_date is_etf beta pe_ratio dividend_yield description aliases raw_profile created_at "
    "updated_at"
)
_MARKET_DATA_COLUMNS = _cols(
    "id symbol date open high low close volume sector industry exchange country market_cap "
    "data_source created_at updated_at"
)
_BENCHMARK_COLUMNS = _cols(
    "id benchmark_code asof_date sector weight market_cap num_constituents data_source created_at updated_at"
)
_FUND_HOLDING_COLUMNS = _cols(
    "id fund_symbol holding_symbol name weight shares market_value data_source created_at updated_at"
)
_BATCH_JOB_COLUMNS = _cols(
    "id job_name job_type status started_at completed_at duration_seconds records_processed "
    "error_message job_metadata created_at"
)
_SCHEDULE_COLUMNS = _cols(
    "id job_name job_type cron_expression timeout retry_count is_active last_run_at next_run_at "
    "description created_at updated_at"
)
_RUN_TRACKING_COLUMNS = _cols(
    "id run_date phase portfolio_id status started_at completed_at phase_durations "
    "portfolios_processed symbols_fetched errors created_at"
)
_EXPORT_COLUMNS = _cols(
    "id user_id portfolio_id export_type file_name file_size_bytes row_count sha256 client_ip filters "
    "created_at"
)
_MODELING_COLUMNS = _cols(
    "id session_id user_id portfolio_id name status base_snapshot modified_snapshot changes "
    "impact_summary created_at completed_at expires_at"
)
_EQUITY_CHANGE_COLUMNS = _cols(
    "id portfolio_id change_type amount change_date notes created_by_user_id created_at updated_at deleted_at"
)
_REALIZED_COLUMNS = _cols(
    "id position_id portfolio_id trade_date quantity_closed closing_price realized_pnl created_by created_at"
)
_FUNDAMENTAL_HEAD = ("id", "symbol", "period_date", "frequency", "fiscal_year", "fiscal_quarter", "currency")
_FUNDAMENTAL_TAIL = ("data_source", "created_at", "updated_at")
_INCOME_COLUMNS = (
    *_FUNDAMENTAL_HEAD,
    *_cols(
        "total_revenue cost_of_revenue gross_profit gross_margin research_and_development "
        "selling_general_and_administrative operating_income operating_margin ebit ebitda "
        "interest_expense pretax_income tax_provision net_income net_margin diluted_eps basic_eps "
        "diluted_average_shares"
    ),
    *_FUNDAMENTAL_TAIL,
)
_BALANCE_COLUMNS = (
    *_FUNDAMENTAL_HEAD,
    *_cols(
        "total_assets current_assets cash_and_equivalents short_term_investments accounts_receivable "
        "inventory total_liabilities current_liabilities long_term_debt total_debt total_equity "
        "retained_earnings shares_outstanding working_capital net_debt current_ratio debt_to_equity"
    ),
    *_FUNDAMENTAL_TAIL,
)
_CASH_FLOW_COLUMNS = (
    *_FUNDAMENTAL_HEAD,
    *_cols(
        "operating_cash_flow capital_expenditure free_cash_flow investing_cash_flow financing_cash_flow "
        "dividends_paid stock_repurchases stock_based_compensation depreciation_amortization "
        "net_change_in_cash fcf_margin"
    ),
    *_FUNDAMENTAL_TAIL,
)
_CONVERSATION_COLUMNS = _cols(
    "id user_id portfolio_id mode title provider provider_thread_id meta_data created_at updated_at"
)
_MESSAGE_COLUMNS = _cols(
    "id conversation_id role content tool_calls first_token_ms latency_ms prompt_tokens "
    "completion_tokens provider_message_id error created_at"
)
_KB_COLUMNS = ("id", "scope", "title", "content", "metadata", "embedding", "created_at", "updated_at")
_KB_TYPES = ("uuid", "varchar", "varchar", "text", "jsonb", "vector", "timestamptz", "timestamptz")
_MEMORY_COLUMNS = ("id", "user_id", "tenant_id", "scope", "content", "tags", "created_at")
_FEEDBACK_COLUMNS = ("id", "message_id", "rating", "edited_text", "comment", "created_at")


__all__ = [
    "AI_TABLES",
    "CORE_TABLES",
    "SCHEMA_FILE",
    "DemoSourceError",
    "DemoSourceExists",
    "DemoSourceSummary",
    "build_demo_source",
    "demo_table_names",
]
