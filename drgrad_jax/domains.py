"""Domains of float hyperparameters and the one rule that enforces them, for both packages.

A number outside its ``Domain`` (NaN, Inf and values beyond the float32 range
included) is refused with a ``ValueError`` naming the factory, the argument and
the domain; a JAX array outside it (``optax.inject_hyperparams``, a schedule)
makes the update NaN, so the training loops' non-finite guard skips the step
(docs/drgrad.md, *Using the transformations*). ``with_domains`` gives a
transformation of your own the same behaviour; ``check_task_vector`` checks a
per-task ``[K]`` hyperparameter's shape.

Example:
  >>> import optax
  >>> from drgrad_jax import domains
  >>> domains.POSITIVE.describe(), domains.UNIT.describe()
  ('> 0', 'in [0, 1]')
  >>> domains.check("my_method", "rate", 1e39, domains.POSITIVE)
  Traceback (most recent call last):
  ...
  ValueError: my_method: rate must be > 0 (a finite float32); got 1e+39, which is inf in float32.
  >>> tx = domains.with_domains(optax.scale(2.0), "my_method", rate=(2.0, domains.POSITIVE))
"""

from drgrad_jax._src.domains import (
    NON_NEGATIVE,
    POSITIVE,
    REAL,
    UNIT,
    UNIT_RIGHT_OPEN,
    Domain,
    check,
    check_task_vector,
    with_domains,
)

__all__ = [
    "Domain",
    "NON_NEGATIVE",
    "POSITIVE",
    "REAL",
    "UNIT",
    "UNIT_RIGHT_OPEN",
    "check",
    "check_task_vector",
    "with_domains",
]
