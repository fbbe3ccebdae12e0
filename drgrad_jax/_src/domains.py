"""Domains of the transformations' float hyperparameters, checked once per value kind.

A float hyperparameter is either a number fixed at construction or a JAX array
(what ``optax.inject_hyperparams`` passes, and a schedule's value), possibly
traced. The rule (docs/drgrad.md, *Using the transformations*):

* a Python or NumPy number outside its domain (NaN included) is refused at
  construction with a ``ValueError`` naming the factory, the argument and the
  domain;
* a JAX array outside its domain cannot be refused without a host round trip
  in every step, so the transformation's update becomes NaN: the training
  loops' non-finite guard (or ``optax.apply_if_finite``) then skips the step
  and counts it, and the parameters never take the value.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class Domain(NamedTuple):
    """An interval of the real line; NaN and +-Inf lie outside every domain."""

    low: float
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = False

    def describe(self) -> str:
        if self.high == math.inf:
            return f"{'>=' if self.low_closed else '>'} {self.low:g}"
        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def contains(self, x, xp=np):
        """Elementwise membership (``xp`` is ``np`` or ``jnp``)."""
        low = x >= self.low if self.low_closed else x > self.low
        high = x <= self.high if self.high_closed else x < self.high
        return xp.isfinite(x) & low & high


POSITIVE = Domain(0.0, low_closed=False)
NON_NEGATIVE = Domain(0.0)
UNIT = Domain(0.0, 1.0, high_closed=True)
UNIT_RIGHT_OPEN = Domain(0.0, 1.0)


def check(factory: str, name: str, value: Any, domain: Domain) -> None:
    """Refuses a number outside ``domain``; a JAX array (maybe traced) is left to run time.

    Raises:
      ValueError: ``"<factory>: <name> must be <domain> (a finite float32); got <value>."``
        (a value beyond the float32 range counts as outside).
    """
    if value is None or isinstance(value, jax.Array):
        return
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{factory}: {name} must be a number or an array; got {type(value).__name__}."
        ) from None
    with np.errstate(over="ignore"):
        # The update computes in float32: a finite float64 beyond its range would be Inf.
        bad = ~domain.contains(a) | ~np.isfinite(a.astype(np.float32))
    if np.any(bad):
        shown = float(a if a.ndim == 0 else a[bad][0])
        raise ValueError(
            f"{factory}: {name} must be {domain.describe()} (a finite float32); got {shown!r}."
        )


def with_domains(
    tx: optax.GradientTransformationExtraArgs, factory: str, **hyperparams: tuple[Any, Domain]
) -> optax.GradientTransformationExtraArgs:
    """Checks ``name=(value, domain)`` pairs; the update is NaN while an array is outside.

    Numbers are checked here, once (``check``). When a value is a JAX array
    the returned transformation's update is NaN in every leaf whenever one of
    them lies outside its domain, and ``tx``'s otherwise; with numbers only,
    ``tx`` itself is returned.

    Args:
      tx: the transformation built from the values.
      factory: its name, for the messages.
      **hyperparams: ``name=(value, domain)``.

    Returns:
      ``tx``, or ``tx`` with a run-time domain check on its update.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = with_domains(optax.scale(-1.0), "demo", rate=(jnp.asarray(-0.5), POSITIVE))
      >>> tx.update({"w": jnp.ones(2)}, tx.init(None))[0]["w"]
      Array([nan, nan], dtype=float32)
      >>> with_domains(optax.scale(-1.0), "demo", rate=(-0.5, POSITIVE))
      Traceback (most recent call last):
      ...
      ValueError: demo: rate must be > 0 (a finite float32); got -0.5.
    """
    for name, (value, domain) in hyperparams.items():
        check(factory, name, value, domain)
    arrays = [(v, d) for v, d in hyperparams.values() if isinstance(v, jax.Array)]
    if not arrays:
        return tx
    tx = optax.with_extra_args_support(tx)

    def update_fn(updates, state, params=None, **extra_args):
        new, state = tx.update(updates, state, params, **extra_args)
        ok = jnp.all(jnp.stack([jnp.all(d.contains(jnp.asarray(v), jnp)) for v, d in arrays]))
        return jax.tree.map(lambda u: jnp.where(ok, u, jnp.nan).astype(u.dtype), new), state

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)
