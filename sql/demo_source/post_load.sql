-- SigmaSight-like demo source: what is built once the rows are in (see schema.sql).

-- ---------------------------------------------------------------------------------------------
-- Foreign keys (validated here, over the loaded rows, in one pass each)
-- ---------------------------------------------------------------------------------------------

ALTER TABLE portfolios ADD CONSTRAINT fk_portfolios_user
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE positions ADD CONSTRAINT fk_positions_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE tags ADD CONSTRAINT fk_tags_user
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE tags_v2 ADD CONSTRAINT fk_tags_v2_user
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE tags_v2 ADD CONSTRAINT fk_tags_v2_archived_by
    FOREIGN KEY (archived_by) REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE position_tags ADD CONSTRAINT fk_position_tags_position
    FOREIGN KEY (position_id) REFERENCES positions (id) ON DELETE CASCADE;
ALTER TABLE position_tags ADD CONSTRAINT fk_position_tags_tag
    FOREIGN KEY (tag_id) REFERENCES tags_v2 (id) ON DELETE CASCADE;
ALTER TABLE position_tags ADD CONSTRAINT fk_position_tags_assigned_by
    FOREIGN KEY (assigned_by) REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE portfolio_target_prices ADD CONSTRAINT fk_target_prices_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE portfolio_target_prices ADD CONSTRAINT fk_target_prices_position
    FOREIGN KEY (position_id) REFERENCES positions (id) ON DELETE SET NULL;
ALTER TABLE portfolio_target_prices ADD CONSTRAINT fk_target_prices_created_by
    FOREIGN KEY (created_by) REFERENCES users (id);
ALTER TABLE position_greeks ADD CONSTRAINT fk_position_greeks_position
    FOREIGN KEY (position_id) REFERENCES positions (id) ON DELETE CASCADE;
ALTER TABLE position_factor_exposures ADD CONSTRAINT fk_pfe_position
    FOREIGN KEY (position_id) REFERENCES positions (id) ON DELETE CASCADE;
ALTER TABLE position_factor_exposures ADD CONSTRAINT fk_pfe_factor
    FOREIGN KEY (factor_id) REFERENCES factor_definitions (id);
ALTER TABLE position_market_betas ADD CONSTRAINT fk_position_market_betas_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE position_market_betas ADD CONSTRAINT fk_position_market_betas_position
    FOREIGN KEY (position_id) REFERENCES positions (id) ON DELETE CASCADE;
ALTER TABLE position_volatility ADD CONSTRAINT fk_position_volatility_position
    FOREIGN KEY (position_id) REFERENCES positions (id) ON DELETE CASCADE;
ALTER TABLE position_interest_rate_betas ADD CONSTRAINT fk_ir_betas_position
    FOREIGN KEY (position_id) REFERENCES positions (id) ON DELETE CASCADE;
ALTER TABLE correlation_calculations ADD CONSTRAINT fk_correlation_calculations_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE pairwise_correlations ADD CONSTRAINT fk_pairwise_correlations_calculation
    FOREIGN KEY (correlation_calculation_id) REFERENCES correlation_calculations (id) ON DELETE CASCADE;
ALTER TABLE correlation_clusters ADD CONSTRAINT fk_correlation_clusters_calculation
    FOREIGN KEY (correlation_calculation_id) REFERENCES correlation_calculations (id) ON DELETE CASCADE;
ALTER TABLE correlation_cluster_positions ADD CONSTRAINT fk_cluster_positions_cluster
    FOREIGN KEY (cluster_id) REFERENCES correlation_clusters (id) ON DELETE CASCADE;
ALTER TABLE correlation_cluster_positions ADD CONSTRAINT fk_cluster_positions_position
    FOREIGN KEY (position_id) REFERENCES positions (id) ON DELETE CASCADE;
ALTER TABLE factor_correlations ADD CONSTRAINT fk_factor_correlations_factor_1
    FOREIGN KEY (factor_1_id) REFERENCES factor_definitions (id);
ALTER TABLE factor_correlations ADD CONSTRAINT fk_factor_correlations_factor_2
    FOREIGN KEY (factor_2_id) REFERENCES factor_definitions (id);
ALTER TABLE factor_exposures ADD CONSTRAINT fk_factor_exposures_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE factor_exposures ADD CONSTRAINT fk_factor_exposures_factor
    FOREIGN KEY (factor_id) REFERENCES factor_definitions (id);
ALTER TABLE portfolio_snapshots ADD CONSTRAINT fk_portfolio_snapshots_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE stress_test_results ADD CONSTRAINT fk_stress_test_results_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE stress_test_results ADD CONSTRAINT fk_stress_test_results_scenario
    FOREIGN KEY (scenario_id) REFERENCES stress_test_scenarios (id);
ALTER TABLE market_risk_scenarios ADD CONSTRAINT fk_market_risk_scenarios_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE fund_holdings ADD CONSTRAINT fk_fund_holdings_fund
    FOREIGN KEY (fund_symbol) REFERENCES company_profiles (symbol);
ALTER TABLE batch_run_tracking ADD CONSTRAINT fk_batch_run_tracking_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE SET NULL;
ALTER TABLE export_history ADD CONSTRAINT fk_export_history_user
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE export_history ADD CONSTRAINT fk_export_history_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE SET NULL;
ALTER TABLE modeling_session_snapshots ADD CONSTRAINT fk_modeling_sessions_user
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE modeling_session_snapshots ADD CONSTRAINT fk_modeling_sessions_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE equity_changes ADD CONSTRAINT fk_equity_changes_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE equity_changes ADD CONSTRAINT fk_equity_changes_created_by
    FOREIGN KEY (created_by_user_id) REFERENCES users (id);
ALTER TABLE position_realized_events ADD CONSTRAINT fk_realized_events_position
    FOREIGN KEY (position_id) REFERENCES positions (id) ON DELETE CASCADE;
ALTER TABLE position_realized_events ADD CONSTRAINT fk_realized_events_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE CASCADE;
ALTER TABLE position_realized_events ADD CONSTRAINT fk_realized_events_created_by
    FOREIGN KEY (created_by) REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE income_statements ADD CONSTRAINT fk_income_statements_symbol
    FOREIGN KEY (symbol) REFERENCES company_profiles (symbol);
ALTER TABLE balance_sheets ADD CONSTRAINT fk_balance_sheets_symbol
    FOREIGN KEY (symbol) REFERENCES company_profiles (symbol);
ALTER TABLE cash_flows ADD CONSTRAINT fk_cash_flows_symbol
    FOREIGN KEY (symbol) REFERENCES company_profiles (symbol);
ALTER TABLE agent_conversations ADD CONSTRAINT fk_agent_conversations_user
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE agent_conversations ADD CONSTRAINT fk_agent_conversations_portfolio
    FOREIGN KEY (portfolio_id) REFERENCES portfolios (id) ON DELETE SET NULL;
ALTER TABLE agent_messages ADD CONSTRAINT fk_agent_messages_conversation
    FOREIGN KEY (conversation_id) REFERENCES agent_conversations (id) ON DELETE CASCADE;

-- ---------------------------------------------------------------------------------------------
-- Secondary indexes
-- ---------------------------------------------------------------------------------------------

CREATE INDEX ix_portfolios_user_id ON portfolios (user_id);
CREATE INDEX ix_positions_portfolio_id ON positions (portfolio_id);
CREATE INDEX ix_positions_symbol ON positions (symbol);
CREATE INDEX ix_positions_open ON positions (portfolio_id) WHERE exit_date IS NULL AND deleted_at IS NULL;
CREATE INDEX ix_position_tags_tag_id ON position_tags (tag_id);
CREATE INDEX idx_pfe_factor_date ON position_factor_exposures (factor_id, calculation_date);
CREATE INDEX idx_position_market_betas_portfolio_date ON position_market_betas (portfolio_id, calc_date);
CREATE INDEX idx_ir_betas_position_date ON position_interest_rate_betas (position_id, calculation_date);
CREATE INDEX ix_pairwise_correlations_calculation ON pairwise_correlations (correlation_calculation_id);
CREATE INDEX ix_cluster_positions_cluster ON correlation_cluster_positions (cluster_id);
CREATE INDEX idx_stress_results_portfolio_date ON stress_test_results (portfolio_id, calculation_date);
CREATE INDEX idx_market_risk_portfolio_date ON market_risk_scenarios (portfolio_id, calculation_date);
CREATE INDEX ix_market_data_cache_date ON market_data_cache (date);
CREATE INDEX ix_batch_jobs_status_started ON batch_jobs (status, started_at DESC);
CREATE INDEX ix_batch_run_tracking_run_date ON batch_run_tracking (run_date);
CREATE INDEX ix_company_profiles_sector ON company_profiles (sector);
CREATE INDEX ix_company_profiles_lower_name ON company_profiles (lower(company_name));
CREATE INDEX ix_agent_conversations_user_id ON agent_conversations (user_id, created_at DESC);
CREATE INDEX ix_agent_messages_conversation_id ON agent_messages (conversation_id, created_at);

-- AI indexes exactly as the plan creates them on the AI database (Step 4.2).
CREATE INDEX ix_ai_kb_documents_scope ON ai_kb_documents (scope);
CREATE INDEX ix_ai_memories_scope ON ai_memories (scope);
CREATE INDEX ix_ai_memories_user_id ON ai_memories (user_id);
CREATE INDEX ix_ai_memories_tenant_id ON ai_memories (tenant_id);
CREATE INDEX ix_ai_feedback_message_id ON ai_feedback (message_id);
CREATE INDEX ix_ai_feedback_rating ON ai_feedback (rating);

CREATE INDEX ix_ai_kb_documents_embedding_hnsw
    ON ai_kb_documents USING hnsw (embedding vector_cosine_ops)
    WITH (m = 16, ef_construction = 64);
