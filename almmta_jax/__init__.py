"""almmta_jax: front-door multi-touch attribution with an adversarially learned mediator.

ALM-MTA (Liu et al., 2026) attributes an outcome (an upload, a conversion) to each
touchpoint of a user's journey through a learned mediator, trained against an
adversary in one jitted min-max step, with contrastive positivity and a bucketed
grouped-AUUC evaluation.
"""

# --- data: journey batches, simulator, loaders ----------------------------------

# --- model, training, attribution ----------------------------------------------

# --- evaluation -----------------------------------------------------------------

__version__ = "0.1.0"

__all__: list[str] = []
