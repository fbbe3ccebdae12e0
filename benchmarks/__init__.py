"""Runnable benchmarks: one script per paper table and one per speed question.

``python -m benchmarks`` runs the main set in quick mode on embedded defaults
(generated data, or the real data when ``../shared/data`` exists) and writes one
JSON file per benchmark under ``benchmarks/out/``; ``--all`` adds the slow
paper-table reproductions.
"""

# Registered in the order ``python -m benchmarks`` runs them. Each module exposes
# ``main(argv: list[str] | None = None) -> dict``. The main job runs BENCHMARKS in
# quick mode (minutes each on 2 CPU cores); SLOW_BENCHMARKS (the ALM-MTA table
# reproductions, the scaling and the long-run stability checks, whose quick modes
# still take longer) run with ``python -m benchmarks --all`` or by name. ``vs_torchjd``
# needs the ``compare`` extra (PyTorch, TorchJD) and says so, skipping, without it.
BENCHMARKS = [
    "drgrad_speed",
    "mmoe_census",
    "mtl_speed",
    "vs_torchjd",
    "almmta_speed",
    "drgrad_synthetic",
    "drgrad_census",
    "drgrad_traces",
]
SLOW_BENCHMARKS = [
    "almmta_truth",
    "almmta_simulator",
    "almmta_criteo",
    "scaling",
    "stability",
]
