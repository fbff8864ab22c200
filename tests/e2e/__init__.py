"""The e2e suite: one stack (real nodes, registry, NetworkPolicy enforcer, the chart's workloads) for
the whole package, stopped when its last test is done, before other tiers run their own real nodes."""
