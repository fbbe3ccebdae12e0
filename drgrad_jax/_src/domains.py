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

A per-task hyperparameter (a ``[K]`` vector: GradDrop's leak, a preference, a
task weighting) follows the same rule entry by entry, and its shape is checked
first (``check_task_vector``): against ``num_tasks`` at construction when it is
given, against the task axis of the gradients at trace time otherwise.

The transformations compute in float32, so a value is judged as a float32: a
finite float64 beyond the float32 range (Inf once cast) lies outside every
domain, and one that rounds onto a bound is judged by the rounded value
(``ema_decay = 1 - 1e-12`` is ``1.0``, outside ``[0, 1)``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class Domain(NamedTuple):
    """An interval of the real line; NaN, +-Inf and values beyond float32 lie outside."""

    low: float
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = False

    def describe(self) -> str:
        if self.low == -math.inf and self.high == math.inf:
            return "real"
        if self.high == math.inf:
            return f"{'>=' if self.low_closed else '>'} {self.low:g}"
        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def contains(self, x, xp=np):
        """Elementwise membership of ``x`` as a float32, the value the update computes with.

        ``xp`` is ``np`` or ``jnp``. A float64 beyond the float32 range becomes
        Inf (outside); one that rounds onto or across a bound is judged by the
        rounded value (``1 - 1e-12`` is ``1.0``).
        """
        with np.errstate(over="ignore"):
            x = xp.asarray(x).astype(xp.float32)
        low = x >= self.low if self.low_closed else x > self.low
        high = x <= self.high if self.high_closed else x < self.high
        return xp.isfinite(x) & low & high


POSITIVE = Domain(0.0, low_closed=False)
NON_NEGATIVE = Domain(0.0)
UNIT = Domain(0.0, 1.0, high_closed=True)
UNIT_RIGHT_OPEN = Domain(0.0, 1.0)
REAL = Domain(-math.inf)


def check(factory: str, name: str, value: Any, domain: Domain) -> None:
    """Refuses a number (or array of numbers) outside ``domain``; a JAX array is left to run time.

    Raises:
      TypeError: ``value`` is not a number or an array of numbers.
      ValueError: ``"<factory>: <name> must be <domain> (a finite float32); got <value>."``,
        for a vector ``"... must be <domain> in every entry (a finite float32); got
        <name>[i] = <value>."`` naming the first entry outside; ``<value>`` is followed
        by ``", which is <v> in float32"`` when the rounding put it outside.
    """
    if value is None or isinstance(value, jax.Array):
        return
    try:
        a = np.asarray(value, dtype=np.float64)
    except OverflowError:  # a Python int beyond float64
        raise ValueError(
            f"{factory}: {name} must be {domain.describe()} (a finite float32); got {value!r}."
        ) from None
    except (TypeError, ValueError):
        raise TypeError(
            f"{factory}: {name} must be a number or an array; got {type(value).__name__}."
        ) from None
    bad = ~domain.contains(a)
    if not np.any(bad):
        return
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    got = float(a[index])
    with np.errstate(over="ignore"):
        rounded = float(np.float32(got))
    if np.isfinite(got) and rounded != got:
        got = f"{got!r}, which is {rounded!r} in float32"
    else:
        got = repr(got)
    if a.ndim == 0:
        raise ValueError(
            f"{factory}: {name} must be {domain.describe()} (a finite float32); got {got}."
        )
    raise ValueError(
        f"{factory}: {name} must be {domain.describe()} in every entry (a finite float32); "
        f"got {name}[{', '.join(map(str, index))}] = {got}."
    )


def check_task_vector(
    factory: str, name: str, value: Any, num_tasks: int | None, *, axis: bool = False
) -> None:
    """Refuses a per-task hyperparameter that is not a vector of ``num_tasks`` values.

    Only the shape is read, so ``value`` may be a number, an array or a tracer;
    the entries' domain is ``check``'s (or, for a JAX array, ``with_domains``').

    Args:
      factory: the transformation's name, for the messages.
      name: the argument's name.
      value: the vector, or ``None`` (nothing to check).
      num_tasks: ``K``, or ``None`` to check only that ``value`` is a vector.
      axis: ``K`` was read from the task axis of the gradients (at trace time)
        rather than given as ``num_tasks`` (at construction); only the message
        differs.

    Raises:
      ValueError: ``value`` is not one-dimensional, or its length is not ``K``;
        the message names the factory, the argument, both lengths and the fix.
    """
    if value is None:
        return
    try:
        shape = tuple(np.shape(value))
    except ValueError:  # a ragged nested sequence
        raise TypeError(
            f"{factory}: {name} must be a vector of numbers; got a ragged sequence."
        ) from None
    if len(shape) != 1:
        raise ValueError(
            f"{factory}: {name} must be a vector [num_tasks], one value per task; "
            f"got shape {shape}."
        )
    if num_tasks is None or shape[0] == num_tasks:
        return
    if axis:
        seen, fix = f"the task axis of task_grads has length {num_tasks}", ""
    else:
        seen, fix = f"num_tasks={num_tasks}", ", or set num_tasks to the number of tasks"
    raise ValueError(
        f"{factory}: {name} has shape {shape} but {seen}; pass one value per task "
        f"(a vector of length {num_tasks}){fix}."
    )


def with_domains(
    tx: optax.GradientTransformationExtraArgs, factory: str, **hyperparams: tuple[Any, Domain]
) -> optax.GradientTransformationExtraArgs:
    """Checks ``name=(value, domain)`` pairs; the update is NaN while an array is outside.

    A value may be a scalar or a vector whose entries each lie in ``domain``
    (its shape is ``check_task_vector``'s business). Numbers are checked here,
    once (``check``). When a value is a JAX array
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
        ok = jnp.all(jnp.stack([jnp.all(d.contains(v, jnp)) for v, d in arrays]))
        return jax.tree.map(lambda u: jnp.where(ok, u, jnp.nan).astype(u.dtype), new), state

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)
