"""Runnable benchmarks: one script per paper table and one per speed question.

``python -m benchmarks`` runs every registered benchmark in quick mode on embedded
defaults (generated data, or the real data when ``../shared/data`` exists) and
writes one JSON file per benchmark under ``benchmarks/out/``.
"""

# Registered in the order ``python -m benchmarks`` runs them. Each module exposes
# ``main(argv: list[str] | None = None) -> dict``.
BENCHMARKS = [
    "drgrad_speed",
    "mmoe_census",
    "mtl_speed",
    "almmta_speed",
    "almmta_truth",
    "almmta_simulator",
    "almmta_criteo",
    "drgrad_synthetic",
    "drgrad_census",
]
