"""The tiny ALM-MTA network the ALM-MTA test files share (each new shape costs compilations)."""

import almmta_jax as am

SMALL = dict(d_model=8, num_heads=2, ffn_dim=8, d_mediator=4, d_contrast=4, num_layers=1)


def tiny_model(**kw) -> am.ModelConfig:
    """``ModelConfig`` of the tiny network; keyword arguments override its fields."""
    base = dict(vocab_sizes=(7, 3), d_x=3, max_len=5, num_users=6, **SMALL)
    base.update(kw)
    return am.ModelConfig(**base)
