"""`core/tuning`, `ai/tuning`: the plan's per-workload settings, applied on purpose."""
