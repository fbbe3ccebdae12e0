"""Runnable benchmarks: one script per paper table and one per speed question.

``python -m benchmarks`` runs the main set in quick mode on embedded defaults
(generated data, or the real data when ``../shared/data`` exists) and writes one
JSON file per benchmark under ``benchmarks/out/``; ``--all`` adds the slow
paper-table reproductions.
"""

# Registered in the order ``python -m benchmarks`` runs them. Each module exposes
# ``main(argv: list[str] | None = None) -> dict``. The main job runs BENCHMARKS;
# SLOW_BENCHMARKS (paper-table reproductions whose quick modes still take well over
# a few minutes on 2 CPU cores) run with ``python -m benchmarks --all`` or by name.
BENCHMARKS = [
    "drgrad_speed",
    "mmoe_census",
    "mtl_speed",
    "almmta_speed",
]
SLOW_BENCHMARKS = [
    "almmta_truth",
    "almmta_simulator",
    "almmta_criteo",
    "drgrad_synthetic",
    "drgrad_census",
    "scaling",
    "stability",
]
