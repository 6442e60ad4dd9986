-- SigmaSight-like demo source schema for dual-db.
--
-- One database holding what production holds before the split: the 39 core tables, alembic_version
-- and the three pgvector AI tables (ai_kb_documents, ai_memories, ai_feedback) from the migration
-- plan's Step 4.2. The column mix is deliberately varied (enums, numeric money, timestamptz, date,
-- jsonb, text[], bytea, inet, interval, identity and bigserial keys, a natural varchar key) because
-- the split must carry every one of them across unchanged.
--
-- This file is applied before the data: types, the trigger function, tables with their primary keys,
-- UNIQUE and CHECK constraints, comments. post_load.sql is applied after it: foreign keys, secondary
-- indexes and the HNSW index. Building these once over loaded tables is much cheaper than
-- maintaining them row by row during COPY, and adding the foreign keys afterwards validates every
-- reference in one pass (as pg_restore does).
-- The AI tables get no foreign keys at all: in the plan they reference core rows across databases
-- ("soft references"), so the source must not depend on constraints the AI database cannot have.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TYPE position_type AS ENUM ('LONG', 'SHORT', 'LC', 'LP', 'SC', 'SP');
CREATE TYPE tag_type AS ENUM ('REGULAR', 'STRATEGY');
CREATE TYPE batch_status AS ENUM ('pending', 'running', 'completed', 'failed', 'cancelled');

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Application code forgets to bump updated_at; the database does not.
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- ---------------------------------------------------------------------------------------------
-- User & portfolio data
-- ---------------------------------------------------------------------------------------------

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email varchar(255) NOT NULL,
    hashed_password varchar(255) NOT NULL,
    full_name varchar(255) NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    is_admin boolean NOT NULL DEFAULT false,
    timezone varchar(64),
    preferences jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_login_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_users_email UNIQUE (email),
    CONSTRAINT ck_users_email_shape CHECK (email LIKE '%_@_%')
);

CREATE TABLE portfolios (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    name varchar(255) NOT NULL,
    account_name varchar(100) NOT NULL,
    account_type varchar(20) NOT NULL,
    description text,
    currency char(3) NOT NULL DEFAULT 'USD',
    equity_balance numeric(16, 2),
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CONSTRAINT uq_portfolios_user_account UNIQUE (user_id, account_name),
    CONSTRAINT ck_portfolios_account_type
        CHECK (account_type IN ('taxable', 'ira', 'roth_ira', '401k', 'trust', 'other'))
);

CREATE TRIGGER trg_portfolios_updated_at
    BEFORE UPDATE ON portfolios
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE positions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id uuid NOT NULL,
    symbol varchar(20) NOT NULL,
    position_type position_type NOT NULL,
    quantity numeric(16, 4) NOT NULL,
    entry_price numeric(12, 4) NOT NULL,
    entry_date date NOT NULL,
    exit_price numeric(12, 4),
    exit_date date,
    underlying_symbol varchar(10),
    strike_price numeric(12, 4),
    expiration_date date,
    last_price numeric(12, 4),
    market_value numeric(16, 2),
    unrealized_pnl numeric(16, 2),
    realized_pnl numeric(16, 2),
    investment_class varchar(20),
    notes text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CONSTRAINT ck_positions_entry_price CHECK (entry_price >= 0),
    CONSTRAINT ck_positions_exit_after_entry CHECK (exit_date IS NULL OR exit_date >= entry_date),
    CONSTRAINT ck_positions_option_fields CHECK (
        position_type IN ('LONG', 'SHORT')
        OR (underlying_symbol IS NOT NULL AND strike_price IS NOT NULL AND expiration_date IS NOT NULL)
    )
);

CREATE TABLE tags (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    name varchar(50) NOT NULL,
    tag_type tag_type NOT NULL DEFAULT 'REGULAR',
    description varchar(255),
    color varchar(7),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_tags_user_name UNIQUE (user_id, name)
);

CREATE TABLE tags_v2 (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    name varchar(50) NOT NULL,
    color varchar(7) NOT NULL DEFAULT '#4A90D9',
    description text,
    display_order integer NOT NULL DEFAULT 0,
    is_archived boolean NOT NULL DEFAULT false,
    archived_at timestamptz,
    archived_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_tags_v2_user_name UNIQUE (user_id, name),
    CONSTRAINT ck_tags_v2_color CHECK (color ~ '^#[0-9A-Fa-f]{6}$')
);

CREATE TABLE position_tags (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    position_id uuid NOT NULL,
    tag_id uuid NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    assigned_by uuid,
    CONSTRAINT uq_position_tags_position_tag UNIQUE (position_id, tag_id)
);

CREATE TABLE portfolio_target_prices (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id uuid NOT NULL,
    position_id uuid,
    symbol varchar(20) NOT NULL,
    position_type position_type,
    target_price_eoy numeric(12, 4),
    target_price_next_year numeric(12, 4),
    downside_target_price numeric(12, 4),
    current_price numeric(12, 4) NOT NULL,
    expected_return_eoy numeric(10, 4),
    notes text,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_target_prices_portfolio_position UNIQUE (portfolio_id, position_id)
);

-- ---------------------------------------------------------------------------------------------
-- Calculation results
-- ---------------------------------------------------------------------------------------------

CREATE TABLE factor_definitions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name varchar(50) NOT NULL,
    description varchar(500),
    factor_type varchar(20) NOT NULL,
    calculation_method varchar(50),
    etf_proxy varchar(10),
    display_order integer NOT NULL DEFAULT 0,
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_factor_definitions_name UNIQUE (name),
    CONSTRAINT ck_factor_definitions_type CHECK (factor_type IN ('style', 'sector', 'macro'))
);

CREATE TABLE position_greeks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    position_id uuid NOT NULL,
    calculation_date date NOT NULL,
    delta numeric(12, 6),
    gamma numeric(12, 6),
    theta numeric(12, 4),
    vega numeric(12, 4),
    rho numeric(12, 4),
    implied_volatility numeric(8, 6),
    delta_dollars numeric(16, 2),
    gamma_dollars numeric(16, 2),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_position_greeks_position_date UNIQUE (position_id, calculation_date)
);

CREATE TABLE position_factor_exposures (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    position_id uuid NOT NULL,
    factor_id uuid NOT NULL,
    calculation_date date NOT NULL,
    exposure_value numeric(12, 6) NOT NULL,
    quality_flag varchar(20),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_position_factor_date UNIQUE (position_id, factor_id, calculation_date)
);

CREATE TABLE position_market_betas (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id uuid NOT NULL,
    position_id uuid NOT NULL,
    calc_date date NOT NULL,
    beta numeric(12, 6) NOT NULL,
    alpha numeric(12, 6),
    r_squared numeric(6, 4),
    std_error numeric(12, 6),
    p_value numeric(10, 8),
    observations integer NOT NULL,
    window_days integer NOT NULL DEFAULT 90,
    method varchar(32) NOT NULL DEFAULT 'OLS_SIMPLE',
    market_index varchar(10) NOT NULL DEFAULT 'SPY',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_position_market_betas UNIQUE (position_id, calc_date, method, window_days),
    CONSTRAINT ck_position_market_betas_r2 CHECK (r_squared IS NULL OR r_squared BETWEEN 0 AND 1)
);

CREATE TABLE position_volatility (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    position_id uuid NOT NULL,
    calculation_date date NOT NULL,
    realized_vol_21d numeric(10, 6),
    realized_vol_63d numeric(10, 6),
    expected_vol_21d numeric(10, 6),
    vol_trend varchar(20),
    vol_percentile numeric(6, 4),
    observations integer,
    model_r_squared numeric(6, 4),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_position_volatility_position_date UNIQUE (position_id, calculation_date)
);

CREATE TABLE position_interest_rate_betas (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    position_id uuid NOT NULL,
    ir_beta numeric(8, 6) NOT NULL,
    r_squared numeric(6, 4),
    calculation_date date NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE correlation_calculations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id uuid NOT NULL,
    duration_days integer NOT NULL,
    calculation_date timestamptz NOT NULL,
    overall_correlation numeric(8, 6),
    correlation_concentration_score numeric(8, 6),
    effective_positions numeric(10, 4),
    data_quality varchar(20),
    min_position_value numeric(16, 2),
    min_portfolio_weight numeric(8, 6),
    filter_mode varchar(20),
    correlation_threshold numeric(8, 6) NOT NULL,
    positions_included integer NOT NULL,
    positions_excluded integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pairwise_correlations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    correlation_calculation_id uuid NOT NULL,
    symbol_1 varchar(20) NOT NULL,
    symbol_2 varchar(20) NOT NULL,
    correlation_value numeric(8, 6) NOT NULL,
    data_points integer NOT NULL,
    statistical_significance numeric(8, 6),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_pairwise_correlations_range CHECK (correlation_value BETWEEN -1 AND 1)
);

CREATE TABLE correlation_clusters (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    correlation_calculation_id uuid NOT NULL,
    cluster_number integer NOT NULL,
    nickname varchar(100) NOT NULL,
    avg_correlation numeric(8, 6) NOT NULL,
    total_value numeric(16, 2) NOT NULL,
    portfolio_percentage numeric(8, 6) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_correlation_clusters_number UNIQUE (correlation_calculation_id, cluster_number)
);

CREATE TABLE correlation_cluster_positions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cluster_id uuid NOT NULL,
    position_id uuid NOT NULL,
    symbol varchar(20) NOT NULL,
    value numeric(16, 2) NOT NULL,
    portfolio_percentage numeric(8, 6) NOT NULL,
    correlation_to_cluster numeric(8, 6),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE factor_correlations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    factor_1_id uuid NOT NULL,
    factor_2_id uuid NOT NULL,
    correlation numeric(8, 6) NOT NULL,
    calculation_date date NOT NULL,
    lookback_days integer NOT NULL,
    decay_factor numeric(4, 3) NOT NULL,
    data_points integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_factor_correlations_factors_date UNIQUE (factor_1_id, factor_2_id, calculation_date),
    CONSTRAINT ck_factor_correlations_distinct CHECK (factor_1_id <> factor_2_id)
);

CREATE TABLE factor_exposures (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id uuid NOT NULL,
    factor_id uuid NOT NULL,
    calculation_date date NOT NULL,
    exposure_value numeric(12, 6) NOT NULL,
    exposure_dollar numeric(16, 2),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_factor_exposures_portfolio_factor_date UNIQUE (portfolio_id, factor_id, calculation_date)
);

CREATE TABLE portfolio_snapshots (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id uuid NOT NULL,
    snapshot_date date NOT NULL,
    total_value numeric(16, 2) NOT NULL,
    cash_value numeric(16, 2) NOT NULL DEFAULT 0,
    long_value numeric(16, 2) NOT NULL,
    short_value numeric(16, 2) NOT NULL,
    gross_exposure numeric(16, 2) NOT NULL,
    net_exposure numeric(16, 2) NOT NULL,
    daily_pnl numeric(16, 2),
    daily_return numeric(10, 6),
    cumulative_pnl numeric(16, 2),
    portfolio_delta numeric(12, 2),
    portfolio_gamma numeric(12, 2),
    portfolio_theta numeric(12, 2),
    portfolio_vega numeric(12, 2),
    num_positions integer NOT NULL,
    num_long_positions integer NOT NULL,
    num_short_positions integer NOT NULL,
    beta_calculated_90d numeric(10, 6),
    beta_provider_1y numeric(10, 6),
    equity_balance numeric(16, 2),
    sector_exposure jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_portfolio_snapshots_portfolio_date UNIQUE (portfolio_id, snapshot_date),
    CONSTRAINT ck_portfolio_snapshots_counts
        CHECK (num_positions = num_long_positions + num_short_positions)
);

CREATE TABLE stress_test_scenarios (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    scenario_id varchar(50) NOT NULL,
    name varchar(255) NOT NULL,
    description varchar(1000),
    category varchar(50) NOT NULL,
    severity varchar(20) NOT NULL,
    shock_config jsonb NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_stress_test_scenarios_scenario_id UNIQUE (scenario_id),
    CONSTRAINT ck_stress_test_scenarios_severity
        CHECK (severity IN ('mild', 'moderate', 'severe', 'extreme'))
);

CREATE TABLE stress_test_results (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id uuid NOT NULL,
    scenario_id uuid NOT NULL,
    calculation_date date NOT NULL,
    direct_pnl numeric(16, 2) NOT NULL,
    correlated_pnl numeric(16, 2) NOT NULL,
    correlation_effect numeric(16, 2) NOT NULL,
    factor_impacts jsonb,
    calculation_metadata jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE market_risk_scenarios (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id uuid NOT NULL,
    scenario_type varchar(50) NOT NULL,
    scenario_value numeric(8, 6) NOT NULL,
    predicted_pnl numeric(16, 2) NOT NULL,
    calculation_date date NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- Market data
-- ---------------------------------------------------------------------------------------------

CREATE TABLE company_profiles (
    symbol varchar(20) PRIMARY KEY,
    company_name varchar(255) NOT NULL,
    sector varchar(100),
    industry varchar(100),
    exchange varchar(20),
    country varchar(10),
    currency char(3) NOT NULL DEFAULT 'USD',
    market_cap numeric(20, 2),
    employees integer,
    ceo varchar(255),
    website varchar(255),
    ipo_date date,
    is_etf boolean NOT NULL DEFAULT false,
    beta numeric(10, 6),
    pe_ratio numeric(12, 4),
    dividend_yield numeric(8, 6),
    description text,
    aliases text[] NOT NULL DEFAULT '{}',
    raw_profile jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE market_data_cache (
    id bigserial PRIMARY KEY,
    symbol varchar(20) NOT NULL,
    date date NOT NULL,
    open numeric(12, 4),
    high numeric(12, 4),
    low numeric(12, 4),
    close numeric(12, 4) NOT NULL,
    volume bigint,
    sector varchar(100),
    industry varchar(100),
    exchange varchar(20),
    country varchar(10),
    market_cap numeric(18, 2),
    data_source varchar(50) NOT NULL DEFAULT 'polygon',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_market_data_cache_symbol_date UNIQUE (symbol, date),
    CONSTRAINT ck_market_data_cache_high_low CHECK (high IS NULL OR low IS NULL OR high >= low)
);

CREATE TABLE benchmarks_sector_weights (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    benchmark_code varchar(20) NOT NULL,
    asof_date date NOT NULL,
    sector varchar(50) NOT NULL,
    weight numeric(8, 6) NOT NULL,
    market_cap numeric(20, 2),
    num_constituents integer,
    data_source varchar(50) NOT NULL DEFAULT 'fmp',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_benchmarks_sector_weights UNIQUE (benchmark_code, asof_date, sector),
    CONSTRAINT ck_benchmarks_sector_weights_weight CHECK (weight >= 0 AND weight <= 1)
);

CREATE TABLE fund_holdings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    fund_symbol varchar(20) NOT NULL,
    holding_symbol varchar(20) NOT NULL,
    name varchar(255),
    weight numeric(8, 6) NOT NULL,
    shares bigint,
    market_value numeric(18, 2),
    data_source varchar(50) NOT NULL DEFAULT 'fmp',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_fund_holdings_fund_holding UNIQUE (fund_symbol, holding_symbol)
);

-- ---------------------------------------------------------------------------------------------
-- System
-- ---------------------------------------------------------------------------------------------

CREATE TABLE batch_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_name varchar(100) NOT NULL,
    job_type varchar(50) NOT NULL,
    status batch_status NOT NULL DEFAULT 'pending',
    started_at timestamptz NOT NULL,
    completed_at timestamptz,
    duration_seconds numeric(10, 3),
    records_processed integer NOT NULL DEFAULT 0,
    error_message text,
    job_metadata jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_batch_jobs_completed_after_start CHECK (completed_at IS NULL OR completed_at >= started_at)
);

CREATE TABLE batch_job_schedules (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_name varchar(100) NOT NULL,
    job_type varchar(50) NOT NULL,
    cron_expression varchar(100) NOT NULL,
    timeout interval NOT NULL DEFAULT '30 minutes',
    retry_count smallint NOT NULL DEFAULT 3,
    is_active boolean NOT NULL DEFAULT true,
    last_run_at timestamptz,
    next_run_at timestamptz,
    description text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_batch_job_schedules_job_name UNIQUE (job_name)
);

CREATE TABLE batch_run_tracking (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    run_date date NOT NULL,
    phase varchar(50) NOT NULL,
    portfolio_id uuid,
    status batch_status NOT NULL,
    started_at timestamptz NOT NULL,
    completed_at timestamptz,
    phase_durations jsonb,
    portfolios_processed integer NOT NULL DEFAULT 0,
    symbols_fetched integer NOT NULL DEFAULT 0,
    errors text[],
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE export_history (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    portfolio_id uuid,
    export_type varchar(20) NOT NULL,
    file_name varchar(255) NOT NULL,
    file_size_bytes bigint,
    row_count integer,
    sha256 bytea,
    client_ip inet,
    filters jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_export_history_type CHECK (export_type IN ('csv', 'fix', 'json', 'pdf', 'xlsx'))
);

CREATE TABLE modeling_session_snapshots (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id uuid NOT NULL,
    user_id uuid NOT NULL,
    portfolio_id uuid NOT NULL,
    name varchar(255) NOT NULL,
    status varchar(20) NOT NULL DEFAULT 'active',
    base_snapshot jsonb NOT NULL,
    modified_snapshot jsonb,
    changes jsonb NOT NULL DEFAULT '[]'::jsonb,
    impact_summary jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    expires_at timestamptz,
    CONSTRAINT uq_modeling_session_snapshots_session UNIQUE (session_id),
    CONSTRAINT ck_modeling_session_snapshots_status CHECK (status IN ('active', 'completed', 'cancelled'))
);

CREATE TABLE equity_changes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id uuid NOT NULL,
    change_type varchar(20) NOT NULL,
    amount numeric(16, 2) NOT NULL,
    change_date date NOT NULL,
    notes text,
    created_by_user_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CONSTRAINT ck_equity_changes_type CHECK (change_type IN ('CONTRIBUTION', 'WITHDRAWAL')),
    CONSTRAINT ck_equity_changes_amount CHECK (amount > 0)
);

CREATE TABLE position_realized_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    position_id uuid NOT NULL,
    portfolio_id uuid NOT NULL,
    trade_date date NOT NULL,
    quantity_closed numeric(16, 4) NOT NULL,
    closing_price numeric(12, 4) NOT NULL,
    realized_pnl numeric(16, 2) NOT NULL,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_position_realized_events_quantity CHECK (quantity_closed > 0)
);

-- ---------------------------------------------------------------------------------------------
-- Fundamentals
-- ---------------------------------------------------------------------------------------------

CREATE TABLE income_statements (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    symbol varchar(20) NOT NULL,
    period_date date NOT NULL,
    frequency char(1) NOT NULL,
    fiscal_year smallint NOT NULL,
    fiscal_quarter smallint,
    currency char(3) NOT NULL DEFAULT 'USD',
    total_revenue numeric(20, 2),
    cost_of_revenue numeric(20, 2),
    gross_profit numeric(20, 2),
    gross_margin numeric(10, 6),
    research_and_development numeric(20, 2),
    selling_general_and_administrative numeric(20, 2),
    operating_income numeric(20, 2),
    operating_margin numeric(10, 6),
    ebit numeric(20, 2),
    ebitda numeric(20, 2),
    interest_expense numeric(20, 2),
    pretax_income numeric(20, 2),
    tax_provision numeric(20, 2),
    net_income numeric(20, 2),
    net_margin numeric(10, 6),
    diluted_eps numeric(12, 4),
    basic_eps numeric(12, 4),
    diluted_average_shares bigint,
    data_source varchar(50) NOT NULL DEFAULT 'yahooquery',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_income_statements_symbol_period UNIQUE (symbol, period_date, frequency),
    CONSTRAINT ck_income_statements_frequency CHECK (frequency IN ('q', 'a')),
    CONSTRAINT ck_income_statements_quarter CHECK (fiscal_quarter IS NULL OR fiscal_quarter BETWEEN 1 AND 4)
);

CREATE TABLE balance_sheets (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    symbol varchar(20) NOT NULL,
    period_date date NOT NULL,
    frequency char(1) NOT NULL,
    fiscal_year smallint NOT NULL,
    fiscal_quarter smallint,
    currency char(3) NOT NULL DEFAULT 'USD',
    total_assets numeric(20, 2),
    current_assets numeric(20, 2),
    cash_and_equivalents numeric(20, 2),
    short_term_investments numeric(20, 2),
    accounts_receivable numeric(20, 2),
    inventory numeric(20, 2),
    total_liabilities numeric(20, 2),
    current_liabilities numeric(20, 2),
    long_term_debt numeric(20, 2),
    total_debt numeric(20, 2),
    total_equity numeric(20, 2),
    retained_earnings numeric(20, 2),
    shares_outstanding bigint,
    working_capital numeric(20, 2),
    net_debt numeric(20, 2),
    current_ratio numeric(10, 4),
    debt_to_equity numeric(10, 4),
    data_source varchar(50) NOT NULL DEFAULT 'yahooquery',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_balance_sheets_symbol_period UNIQUE (symbol, period_date, frequency),
    CONSTRAINT ck_balance_sheets_frequency CHECK (frequency IN ('q', 'a'))
);

CREATE TABLE cash_flows (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    symbol varchar(20) NOT NULL,
    period_date date NOT NULL,
    frequency char(1) NOT NULL,
    fiscal_year smallint NOT NULL,
    fiscal_quarter smallint,
    currency char(3) NOT NULL DEFAULT 'USD',
    operating_cash_flow numeric(20, 2),
    capital_expenditure numeric(20, 2),
    free_cash_flow numeric(20, 2),
    investing_cash_flow numeric(20, 2),
    financing_cash_flow numeric(20, 2),
    dividends_paid numeric(20, 2),
    stock_repurchases numeric(20, 2),
    stock_based_compensation numeric(20, 2),
    depreciation_amortization numeric(20, 2),
    net_change_in_cash numeric(20, 2),
    fcf_margin numeric(10, 6),
    data_source varchar(50) NOT NULL DEFAULT 'yahooquery',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_cash_flows_symbol_period UNIQUE (symbol, period_date, frequency),
    CONSTRAINT ck_cash_flows_frequency CHECK (frequency IN ('q', 'a'))
);

-- ---------------------------------------------------------------------------------------------
-- Chat / agent (non-vector: stays in core)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE agent_conversations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    portfolio_id uuid,
    mode varchar(50) NOT NULL DEFAULT 'green',
    title varchar(255),
    provider varchar(32) NOT NULL DEFAULT 'openai',
    provider_thread_id varchar(255),
    meta_data jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid NOT NULL,
    role varchar(20) NOT NULL,
    content text,
    tool_calls jsonb,
    first_token_ms integer,
    latency_ms integer,
    prompt_tokens integer,
    completion_tokens integer,
    provider_message_id varchar(255),
    error jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_agent_messages_role CHECK (role IN ('user', 'assistant', 'system', 'tool'))
);

CREATE TABLE alembic_version (
    version_num varchar(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- ---------------------------------------------------------------------------------------------
-- AI tables (plan Step 4.2). No foreign keys: user_id and message_id are soft references.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE ai_kb_documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    scope varchar(100) NOT NULL,
    title varchar(500) NOT NULL,
    content text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    embedding vector(1536),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ai_memories (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid,
    tenant_id uuid,
    scope varchar(20) NOT NULL,
    content text NOT NULL,
    tags jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ai_feedback (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id uuid NOT NULL,
    rating varchar(10) NOT NULL,
    edited_text text,
    comment text,
    created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE positions IS 'Holdings per portfolio: stock (LONG/SHORT) and option (LC/LP/SC/SP) positions.';
COMMENT ON TABLE market_data_cache IS 'Daily OHLCV bars per symbol, cached from market data providers.';
COMMENT ON TABLE ai_kb_documents IS 'RAG knowledge base: chunked documents with 1536-dim embeddings (moves to the AI database).';
COMMENT ON COLUMN ai_memories.user_id IS 'Soft reference to users.id in the core database (no foreign key).';
COMMENT ON COLUMN ai_feedback.message_id IS 'Soft reference to agent_messages.id in the core database (no foreign key).';
