"""Pytree path helpers shared by both packages: leaf path strings, prefix matching, row sums.

A leaf's path joins its dict keys, attribute names and sequence indices with
``/``; a transformation names subtrees by path prefix (``"towers/0"`` matches
``"towers/0/kernel"`` but not ``"towers/01"``).

Example:
  >>> import jax.numpy as jnp
  >>> from drgrad_jax import tree
  >>> params = {"towers": [{"kernel": jnp.ones(2)}, {"kernel": jnp.ones(2)}], "b": jnp.ones(1)}
  >>> tree.leaf_paths(params)
  ['b', 'towers/0/kernel', 'towers/1/kernel']
  >>> tree.match_prefix(tree.leaf_paths(params), ("towers/1",))
  [2]
"""

from drgrad_jax._src.task_grads import key_name, leaf_paths, match_prefix, sum_rows

__all__ = ["key_name", "leaf_paths", "match_prefix", "sum_rows"]
