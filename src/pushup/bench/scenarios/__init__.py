"""The benchmark scenarios; each module has `run(options, progress) -> Run`."""

SCENARIOS = ("idle", "fanout", "pubrate", "paper-traffic", "paper-scale", "cluster", "capacity")
