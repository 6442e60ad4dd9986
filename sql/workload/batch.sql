-- The portfolio batch run's read side, as the application's nightly batch does it: one statement per
-- step. dual-db times the whole file several times (baseline on the old database, then on core during
-- the soak week) and compares medians. Statements run read-only; each is a separate measurement.

-- 1. Market value and unrealized P&L per portfolio from the latest close of each open position.
SELECT p.portfolio_id,
       count(*) AS positions,
       sum(p.quantity * m.close) AS market_value,
       sum(p.quantity * (m.close - p.entry_price)) AS unrealized_pnl
FROM positions p
JOIN LATERAL (
    SELECT close FROM market_data_cache m WHERE m.symbol = p.symbol ORDER BY m.date DESC LIMIT 1
) m ON true
WHERE p.exit_date IS NULL AND p.deleted_at IS NULL
GROUP BY p.portfolio_id;

-- 2. Factor exposure per portfolio and factor on the latest calculation date.
SELECT p.portfolio_id, e.factor_id, sum(e.exposure_value * p.quantity) AS exposure
FROM position_factor_exposures e
JOIN positions p ON p.id = e.position_id
WHERE e.calculation_date = (SELECT max(calculation_date) FROM position_factor_exposures)
GROUP BY p.portfolio_id, e.factor_id;

-- 3. Daily returns and volatility per symbol over the cached history.
SELECT symbol, count(*) AS days, avg(daily_return) AS mean_return, stddev_samp(daily_return) AS volatility
FROM (
    SELECT symbol, close / nullif(lag(close) OVER (PARTITION BY symbol ORDER BY date), 0) - 1 AS daily_return
    FROM market_data_cache
) returns
GROUP BY symbol;

-- 4. Portfolio value history: the latest snapshot per portfolio and the 30-day change.
SELECT s.portfolio_id, s.snapshot_date, s.total_value,
       s.total_value - lag(s.total_value, 30) OVER (PARTITION BY s.portfolio_id ORDER BY s.snapshot_date)
           AS change_30d
FROM portfolio_snapshots s
ORDER BY s.portfolio_id, s.snapshot_date DESC;
