"""Post-migration tuning of the target servers (plain Python, no Dagster)."""
