"""The per-task-gradient contract shared by every multi-task transformation.

Per-task gradients travel as ONE pytree whose leaves carry a leading task axis
``[num_tasks, *param_shape]``: what ``jax.jacrev`` of a vector of task losses
returns. This module validates that contract, sums and combines task gradients,
and produces them cheaply, either in parameter space (``per_task_grads``) or at a
shared representation (``per_task_rep_grads``). The task Gramian and the
weighting built on it are in ``gramian``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

SHARED = -1
"""Label of a parameter leaf that every task reads (see ``per_task_grads``)."""


def _leaves_with_paths(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _path_str(path) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def check_task_grads(task_grads, num_tasks: int | None = None, *, name: str = "task_grads") -> int:
    """Checks the per-task-gradient contract at trace time and returns the task count.

    Every leaf must be a floating array with a leading task axis, and all leaves
    must agree on its length.

    Args:
      task_grads: pytree whose leaves have shape ``[num_tasks, *param_shape]``.
      num_tasks: the declared number of tasks, or ``None`` to infer it.
      name: the argument name used in error messages.

    Returns:
      The number of tasks (length of the leading axis).

    Raises:
      ValueError: empty tree, a leaf without a task axis, disagreeing lengths,
        a length different from ``num_tasks``,
        or a non-floating leaf (integer or boolean gradients are a wiring error).
    """
    leaves = _leaves_with_paths(task_grads)
    if not leaves:
        raise ValueError(f"{name} is an empty pytree; expected leaves of shape [num_tasks, ...].")
    found = None
    for path, leaf in leaves:
        shape = jnp.shape(leaf)
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"{name}{_path_str(path)} has dtype {dtype} and shape {shape}; per-task gradients "
                "must be floating."
            )
        if len(shape) == 0:
            raise ValueError(
                f"{name}{_path_str(path)} is a scalar; expected a leading task axis "
                "[num_tasks, *param_shape]."
            )
        if found is None:
            found = shape[0]
        elif shape[0] != found:
            raise ValueError(
                f"{name}{_path_str(path)} has task-axis length {shape[0]} but "
                f"{name}{_path_str(leaves[0][0])} has {found}; every leaf must share the "
                f"leading task axis.{_stack_hint(task_grads) or _CHAIN}"
            )
    if num_tasks is not None and found != num_tasks:
        raise ValueError(
            f"{name} has task-axis length {found} but num_tasks={num_tasks} was declared "
            f"(leaf {name}{_path_str(leaves[0][0])} has shape {jnp.shape(leaves[0][1])})."
            f"{_stack_hint(task_grads)}"
        )
    return int(found)


_STACK = (
    " A list of K per-task gradient pytrees must be stacked into one pytree with a leading "
    "task axis: task_grads = jax.tree.map(lambda *g: jnp.stack(g), *grads); or build it with "
    "per_task_grads(loss_fn, params, ...)."
)


def _stack_hint(task_grads, params=None) -> str:
    """The fix for a list or tuple of per-task gradient pytrees, when that is what was given."""
    if not isinstance(task_grads, (list, tuple)) or len(task_grads) < 2:
        return ""
    structs = {jax.tree_util.tree_structure(g) for g in task_grads}
    if len(structs) != 1:
        return ""
    if params is not None and structs != {jax.tree_util.tree_structure(params)}:
        return ""
    return _STACK


_CHAIN = (
    " A multi-task transform needs per-task gradients [num_tasks, *param_shape] "
    "(per_task_grads, or jax.jacrev of the vector of task losses). If another optimizer runs "
    "before it in optax.chain, put the multi-task transform first: "
    "optax.chain(pcgrad(), optax.adam(1e-3)), not optax.chain(optax.adam(1e-3), pcgrad()). "
    "optax.MultiSteps cannot wrap it either (its accumulator has the params' shapes): "
    "accumulate the task-axis gradients over micro-batches and apply it once "
    "(docs/drgrad.md, *Using the transformations*)."
)


def require_num_tasks(num_tasks, method: str) -> int:
    """Validates the ``num_tasks`` of a transformation whose state is sized in ``init``.

    ``init`` sees only the parameters, so a method that keeps per-task state
    cannot infer ``K`` from the gradients; every such method asks for it with
    this one message. Methods without per-task state infer ``K`` instead.
    """
    if num_tasks is None:
        raise ValueError(
            f"{method} keeps per-task state that init sizes before any gradient is seen, "
            f"so it needs num_tasks: pass {method}(..., num_tasks=K) with K the length of "
            "the task axis."
        )
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(
            f"num_tasks must be a positive int (the length of the task axis); got {num_tasks!r}."
        )
    return num_tasks


def check_matches_params(task_grads, params, *, name: str = "task_grads") -> None:
    """Checks that each per-task leaf is ``[K, *shape]`` of the matching params leaf."""
    if params is None:
        return
    g_struct = jax.tree_util.tree_structure(task_grads)
    p_struct = jax.tree_util.tree_structure(params)
    if g_struct != p_struct:
        raise ValueError(
            f"{name} and params have different tree structures: {g_struct} vs {p_struct}."
            f"{_stack_hint(task_grads, params)}"
        )
    pairs = list(zip(_leaves_with_paths(task_grads), jax.tree_util.tree_leaves(params)))
    if all(jnp.shape(g) == jnp.shape(p) for (_, g), p in pairs):
        # Every leaf has exactly the params' shape: a summed gradient, or the output
        # of an optimizer chained before the multi-task transform.
        path = pairs[0][0][0]
        raise ValueError(
            f"{name} has the params' shapes ({name}{_path_str(path)}: "
            f"{jnp.shape(pairs[0][1])}), not a leading task axis.{_CHAIN}"
        )
    for (path, g), p in pairs:
        if tuple(jnp.shape(g)[1:]) != tuple(jnp.shape(p)):
            raise ValueError(
                f"{name}{_path_str(path)} has shape {jnp.shape(g)}; expected "
                f"[num_tasks, *{tuple(jnp.shape(p))}] to match params."
            )


def sum_rows(g: jax.Array, dtype=None, weights: jax.Array | None = None) -> jax.Array:
    """``g.sum(0)``, or ``weights @ g``, as an unrolled chain of row additions (up to 16 rows).

    Written row by row so XLA folds zero rows away: a task-exclusive leaf laid out
    by ``per_task_grads`` (the gradient zero-padded along the task axis) sums back
    to the gradient itself at no cost, where a reduction would read every row; and
    so XLA fuses the sum with the operations that produce each row, where a
    contraction over the task axis would first stack them (docs/drgrad.md, *Cost
    of the K backward passes*).
    """
    dtype = dtype or g.dtype
    if g.shape[0] > 16:
        if weights is None:
            return jnp.sum(g.astype(dtype), axis=0)
        return jnp.tensordot(weights, g.astype(dtype), axes=1)

    def row(k):
        return g[k].astype(dtype) if weights is None else weights[k] * g[k].astype(dtype)

    total = row(0)
    for k in range(1, g.shape[0]):
        total = total + row(k)
    return total


def sum_tasks(task_grads):
    """Sums per-task gradients over the task axis: the plain summed-loss gradient."""
    return jax.tree.map(sum_rows, task_grads)


def combine(weights: jax.Array, task_grads):
    """Returns ``sum_k weights[k] * task_grads[k]`` leaf by leaf, in each leaf's dtype."""
    w = weights.astype(jnp.float32)
    return jax.tree.map(lambda g: sum_rows(g, jnp.float32, w).astype(g.dtype), task_grads)


def stateless_weighting(
    weights_of: Callable[[Any, int], jax.Array], state_cls, num_tasks: int | None = None
) -> optax.GradientTransformationExtraArgs:
    """The transformation ``d = sum_k w_k g_k`` with ``w = weights_of(task_grads, K)``.

    The body shared by every weighting whose only state is a step count
    (``fixed_weighting``, ``gramian_weighting``): check the per-task gradients,
    compute the weights, combine.

    Args:
      weights_of: maps the per-task gradients and the task count ``K`` to
        ``[K]`` float32 weights.
      state_cls: a NamedTuple class with a single int32 ``count`` field.
      num_tasks: optional ``K`` the task axis is checked against.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; extra arguments are ignored.
    """

    def init_fn(params):
        del params
        return state_cls(count=jnp.zeros([], jnp.int32))

    def update_fn(task_grads, state, params=None, **extra_args):
        del extra_args
        k = check_task_grads(task_grads, num_tasks)
        check_matches_params(task_grads, params)
        weights = weights_of(task_grads, k)
        return combine(weights, task_grads), state_cls(count=optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def task_dots(task_grads, other) -> jax.Array:
    """``[K]`` inner products of each task gradient with one params-shaped tree."""
    parts = jax.tree.map(
        lambda g, o: (
            g.reshape(g.shape[0], -1).astype(jnp.float32) @ o.reshape(-1).astype(jnp.float32)
        ),
        task_grads,
        other,
    )
    return sum(jax.tree_util.tree_leaves(parts))


def per_task_grads(
    loss_fn: Callable[..., Any],
    params,
    *args,
    task_of=None,
    shared: str = "per_task",
    has_aux: bool = False,
    tasks_at_once: int | None = 1,
):
    """Per-task gradients in the library's contract, at the cost the model really needs.

    ``loss_fn(params, *args)`` returns the vector of task losses ``[K]`` (or
    ``(losses, aux)`` with ``has_aux``). Leaves labelled by ``task_of`` as
    belonging to one task ``k`` (its tower, its head) get their gradient from ONE
    backward pass of the summed loss and are placed in row ``k`` of the task axis
    (other rows are zero: no other task reads them). Only leaves labelled
    ``SHARED`` need one backward pass per task; by default these run one task
    after another in a loop (``jax.lax.map``), which on CPU is 1.4-1.6x faster
    than one vmapped VJP over the K one-hot cotangents (docs/drgrad.md, *Cost of
    the K backward passes*). With ``task_of=None`` every leaf is treated as
    shared, which equals ``jax.jacrev``.

    Label everything you can: the cost is then one forward and one backward pass,
    plus K backward passes through the shared leaves only. A transformation that
    only ever SUMS the shared leaves over tasks (``drgrad`` in parameter space,
    ``linear_scalarization``) does not need them per task: ``shared="summed"``
    then computes everything in ONE backward pass, placing each shared leaf's
    summed gradient in row 0 of its task axis (other rows zero). That layout
    keeps the sum over tasks exact but not the rows, so never feed it to a method
    that compares tasks on shared leaves (PCGrad, MGDA, ...).

    The result goes straight to the multi-task transformation, which must come
    FIRST in ``optax.chain`` (``optax.chain(pcgrad(), optax.adam(1e-3))``). The
    reverse order is refused when the update reaching the transformation has
    the params' shapes, but cannot be detected when it is given these task-axis
    gradients: Adam's moments then broadcast over the task axis and the update
    is silently wrong. For micro-batches, average the task-axis gradients and
    apply the transformation once (docs/drgrad.md, *Using the transformations*).

    Args:
      loss_fn: ``loss_fn(params, *args) -> losses[K]`` or ``(losses, aux)``.
      params: the parameter pytree.
      *args: further arguments of ``loss_fn`` (the batch, ...).
      task_of: a mapping from path prefixes (pytree keys joined with ``/``, as in
        ``leaf_paths``) to the index of the one task that reads that subtree, e.g.
        ``{"tower_a": 0, "tower_b": 1}``; ``SHARED`` (-1) marks a shared subtree
        explicitly. Unlisted leaves are shared. ``None``: every leaf is shared.
        A pytree prefix of ``params`` with int leaves is accepted too.
      shared: ``"per_task"`` (default): shared leaves get one row per task (K
        backward passes through them); ``"summed"``: one backward pass, each
        shared leaf's summed gradient in row 0 (see above).
      has_aux: whether ``loss_fn`` returns ``(losses, aux)``.
      tasks_at_once: how many tasks' backward passes through the shared leaves
        run together as one vmapped VJP; groups run one after another. ``1``
        (default): one task at a time; ``None``: all K at once (one vmap). The
        gradients are the same; only speed and memory differ (K at once holds
        K cotangents of every activation).

    Returns:
      ``(losses, task_grads)`` or ``(losses, task_grads, aux)`` with
      ``task_grads`` leaves of shape ``[K, *param_shape]``.

    Raises:
      ValueError: the losses are not a vector, a label is out of range, or
        ``tasks_at_once`` is not a positive int or ``None``.

    Example:
      >>> import jax.numpy as jnp
      >>> def loss_fn(p, x):
      ...   h = p["trunk"] * x
      ...   return jnp.stack([jnp.sum(p["t0"] * h), jnp.sum(p["t1"] * h)])
      >>> p = {"trunk": jnp.ones(2), "t0": jnp.ones(2), "t1": 2 * jnp.ones(2)}
      >>> losses, g = per_task_grads(loss_fn, p, jnp.ones(2),
      ...                            task_of={"trunk": SHARED, "t0": 0, "t1": 1})
      >>> g["trunk"].tolist(), g["t1"].tolist()
      ([[1.0, 1.0], [2.0, 2.0]], [[0.0, 0.0], [1.0, 1.0]])
    """
    if shared not in ("per_task", "summed"):
        raise ValueError(f"shared must be 'per_task' or 'summed'; got {shared!r}.")
    check_tasks_at_once(tasks_at_once)
    label_leaves = leaf_task_labels(task_of, params)
    if shared == "summed":
        label_leaves = [0 if lab == SHARED else lab for lab in label_leaves]
    param_leaves, treedef = jax.tree_util.tree_flatten(params)
    shared_idx = [i for i, lab in enumerate(label_leaves) if lab == SHARED]
    own_idx = [i for i, lab in enumerate(label_leaves) if lab != SHARED]

    def f(shared_leaves, own_leaves):
        leaves = [None] * len(param_leaves)
        for i, leaf in zip(shared_idx, shared_leaves):
            leaves[i] = leaf
        for i, leaf in zip(own_idx, own_leaves):
            leaves[i] = leaf
        return loss_fn(jax.tree_util.tree_unflatten(treedef, leaves), *args)

    shared_leaves = [param_leaves[i] for i in shared_idx]
    own_leaves = [param_leaves[i] for i in own_idx]
    if has_aux:
        losses, vjp, aux = jax.vjp(f, shared_leaves, own_leaves, has_aux=True)
    else:
        losses, vjp = jax.vjp(f, shared_leaves, own_leaves)
    if jnp.ndim(losses) != 1:
        raise ValueError(
            f"loss_fn must return a vector of task losses [num_tasks]; got shape {jnp.shape(losses)}."
        )
    k = losses.shape[0]
    for lab in label_leaves:
        if lab != SHARED and not 0 <= lab < k:
            raise ValueError(f"task_of label {lab} is out of range for {k} tasks (use SHARED=-1).")
    eye = jnp.eye(k, dtype=losses.dtype)
    out = [None] * len(param_leaves)
    if shared_idx:
        g_shared = map_tasks(lambda ct: vjp(ct)[0], eye, tasks_at_once)
        for i, g in zip(shared_idx, g_shared):
            out[i] = g
    if own_idx:
        g_own = vjp(jnp.ones((k,), losses.dtype))[1]
        for i, g in zip(own_idx, g_own):
            row = label_leaves[i]
            # Zero padding (not a scatter into zeros) lets XLA fold a later sum over
            # tasks back into the gradient itself.
            out[i] = jnp.pad(g[None], [(row, k - 1 - row)] + [(0, 0)] * g.ndim)
    task_grads = jax.tree_util.tree_unflatten(treedef, out)
    if has_aux:
        return losses, task_grads, aux
    return losses, task_grads


def check_tasks_at_once(value, name: str = "tasks_at_once") -> None:
    """Refuses a ``tasks_at_once`` that is neither a positive int nor ``None``."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
    ):
        raise ValueError(
            f"{name} must be a positive int (tasks whose backward passes run together) "
            f"or None (all at once); got {value!r}."
        )


def map_tasks(fn: Callable[[Any], Any], xs, tasks_at_once: int | None = 1):
    """``fn`` on every row of ``xs`` (one per task), ``tasks_at_once`` rows vmapped together.

    Groups run one after another in a ``jax.lax.map`` loop; ``None`` vmaps all
    rows at once. On CPU, K backward passes through a large layer run faster one
    at a time: vmapping them turns each matrix product into a batched one whose
    operands XLA transposes first (docs/drgrad.md, *Cost of the K backward passes*).
    """
    if tasks_at_once is None:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=None if tasks_at_once == 1 else int(tasks_at_once))


def key_name(key) -> str:
    """The name of one pytree key: a dict key, attribute name or sequence index."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_paths(tree) -> list[str]:
    """``"a/b/0/kernel"``-style path strings of a pytree's leaves, in flatten order.

    Keys of dicts, attributes and sequence indices are joined with ``/`` (an NNX
    ``State`` leaf reads e.g. ``"tower_shared/kernel/value"``).
    """
    return [
        "/".join(key_name(k) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def match_prefix(paths: list[str], prefixes: tuple[str, ...]) -> list[int]:
    """Indices of the paths equal to, or below, one of the ``/``-joined prefixes."""
    return [
        i
        for i, p in enumerate(paths)
        if any(p == pre or p.startswith(pre + "/") for pre in prefixes)
    ]


def leaf_task_labels(task_of, params) -> list[int]:
    """One task label per params leaf from ``task_of`` (see ``per_task_grads``).

    ``task_of`` maps path prefixes to task indices, or is a nested tree of ints
    (e.g. a pure-dict label tree of an NNX model), which is read as the mapping
    from each of its leaf paths to its label. The longest matching prefix wins.
    """
    paths = leaf_paths(params)
    labels = [SHARED] * len(paths)
    if task_of is None:
        return labels
    if not isinstance(task_of, (Mapping, list, tuple)):
        raise ValueError(
            f"task_of must map path prefixes to int task indices, e.g. {{'towers/0': 0}}; "
            f"got {task_of!r}."
        )
    flat = jax.tree_util.tree_flatten_with_path(task_of)[0]
    mapping = {"/".join(key_name(k) for k in path): label for path, label in flat}
    depth = [-1] * len(paths)
    for prefix, task in mapping.items():
        if not isinstance(task, (int, np.integer)) or isinstance(task, bool):
            raise ValueError(
                f"task_of[{prefix!r}] must be an int task index (or SHARED=-1); got {task!r}."
            )
        prefix = prefix.strip("/")
        idx = match_prefix(paths, (prefix,))
        if not idx:
            raise ValueError(
                f"task_of prefix {prefix!r} matches no params leaf; paths are {paths}."
            )
        for i in idx:
            if len(prefix) > depth[i]:
                labels[i], depth[i] = int(task), len(prefix)
    return labels


class RepGrads(NamedTuple):
    """Per-task gradients at a shared representation, and what finishes the backward.

    Attributes:
      losses: ``[K]`` task losses.
      rep_task_grads: cotangents at the representation, leaves ``[K, *rep_shape]``.
      head_grads: ordinary (summed-loss) gradients of every parameter read by the
        heads, with the params' shape (zero where only the trunk reads).
      pullback: ``pullback(rep_cotangent) -> param grads`` through the trunk.
      reps: the representation itself (pass it as ``params`` to a transform).
      aux: whatever ``heads_fn`` returned as auxiliary output, or ``None``.
    """

    losses: jax.Array
    rep_task_grads: Any
    head_grads: Any
    pullback: Callable[[Any], Any]
    reps: Any
    aux: Any = None

    def finish(self, rep_update):
        """Param gradients: head gradients plus ``rep_update`` pulled back through the trunk."""
        trunk_grads = self.pullback(rep_update)
        return jax.tree.map(lambda a, b: a + b.astype(a.dtype), self.head_grads, trunk_grads)


def per_task_rep_grads(
    trunk_fn: Callable[..., Any],
    heads_fn: Callable[..., Any],
    params,
    *args,
    has_aux: bool = False,
    num_tasks: int | None = None,
) -> RepGrads:
    """Per-task gradients at a shared representation with a single trunk VJP left to do.

    The model is split as ``reps = trunk_fn(params, *args)`` and
    ``losses = heads_fn(params, reps, *args)``. The K per-task cotangents at
    ``reps`` cost K backward passes through the (small) heads only; any
    multi-task transform combines them into one cotangent, and
    ``RepGrads.finish`` pulls that back through the trunk in ONE VJP (the
    MGDA-UB idea; DRGrad's ``space="activations"``).

    Args:
      trunk_fn: ``trunk_fn(params, *args) -> reps`` (any pytree of arrays).
      heads_fn: ``heads_fn(params, reps, *args) -> losses[K]`` or
        ``(losses, aux)`` with ``has_aux``; or a sequence of K per-task heads,
        ``heads_fn[k](params, reps, *args) -> loss_k`` (a scalar; ``(loss_k,
        aux_k)`` with ``has_aux``, and ``aux`` is then the tuple of the
        ``aux_k``). Prefer the sequence when the heads are separate towers:
        each task's VJP then runs through its own head only (K head backward
        passes), whereas a one-hot cotangent through a joint ``heads_fn`` runs
        every head's backward with zeros (K^2).
      params: the parameter pytree.
      *args: further arguments shared by both functions (the batch, ...).
      has_aux: whether ``heads_fn`` returns ``(losses, aux)``.
      num_tasks: K, when ``heads_fn`` reads one copy of the representation per
        task: every leaf of the ``reps`` it is given has a leading axis
        ``[K, ...]`` and task k's loss reads copy k only (a model's
        ``task_heads``; docs/drgrad.md, *Shared representation*). The K
        cotangents are then the gradient of the summed loss with respect to
        the copies: ONE backward pass through the heads, each task's part
        once, which also gives ``head_grads``. A ``heads_fn`` where a task
        reads another task's copy gives wrong cotangents.

    Returns:
      A ``RepGrads``.

    Example:
      >>> import jax.numpy as jnp
      >>> trunk = lambda p, x: p["w"] * x
      >>> heads = lambda p, h, x: jnp.stack([jnp.sum(h), jnp.sum(p["a"] * h)])
      >>> p = {"w": jnp.ones(2), "a": 3 * jnp.ones(2)}
      >>> r = per_task_rep_grads(trunk, heads, p, jnp.ones(2))
      >>> r.rep_task_grads.tolist()
      [[1.0, 1.0], [3.0, 3.0]]
      >>> r.finish(r.rep_task_grads.sum(0))["w"].tolist()
      [4.0, 4.0]
      >>> sep = [lambda p, h, x: jnp.sum(h), lambda p, h, x: jnp.sum(p["a"] * h)]
      >>> per_task_rep_grads(trunk, sep, p, jnp.ones(2)).rep_task_grads.tolist()
      [[1.0, 1.0], [3.0, 3.0]]
      >>> copies = lambda p, h, x: jnp.stack([jnp.sum(h[0]), jnp.sum(p["a"] * h[1])])
      >>> per_task_rep_grads(trunk, copies, p, jnp.ones(2), num_tasks=2).rep_task_grads.tolist()
      [[1.0, 1.0], [3.0, 3.0]]
    """
    reps, trunk_vjp = jax.vjp(lambda p: trunk_fn(p, *args), params)
    if num_tasks is not None:
        if isinstance(heads_fn, (list, tuple)):
            raise TypeError(
                "num_tasks goes with one heads_fn reading per-task copies; got a sequence."
            )
        losses, rep_task_grads, head_grads, aux = _task_copies(
            heads_fn, params, reps, args, has_aux, num_tasks
        )
    elif isinstance(heads_fn, (list, tuple)):
        losses, rep_task_grads, head_grads, aux = _separate_heads(
            heads_fn, params, reps, args, has_aux
        )
    else:
        losses, rep_task_grads, head_grads, aux = _joint_heads(
            heads_fn, params, reps, args, has_aux
        )

    def pullback(rep_cotangent):
        return trunk_vjp(rep_cotangent)[0]

    return RepGrads(losses, rep_task_grads, head_grads, pullback, reps, aux)


def _joint_heads(heads_fn, params, reps, args, has_aux):
    """K cotangents from one ``heads_fn`` returning ``[K]`` losses: a vmapped VJP."""
    if has_aux:
        losses, heads_vjp, aux = jax.vjp(
            lambda p, r: heads_fn(p, r, *args), params, reps, has_aux=True
        )
    else:
        losses, heads_vjp = jax.vjp(lambda p, r: heads_fn(p, r, *args), params, reps)
        aux = None
    if jnp.ndim(losses) != 1:
        raise ValueError(
            f"heads_fn must return a vector of task losses [num_tasks]; got shape {jnp.shape(losses)}."
        )
    k = losses.shape[0]
    head_grads = heads_vjp(jnp.ones((k,), losses.dtype))[0]
    rep_task_grads = jax.vmap(lambda ct: heads_vjp(ct)[1])(jnp.eye(k, dtype=losses.dtype))
    return losses, rep_task_grads, head_grads, aux


def _task_copies(heads_fn, params, reps, args, has_aux, num_tasks):
    """K cotangents from a ``heads_fn`` reading copy k for task k: one backward pass."""
    if isinstance(num_tasks, bool) or int(num_tasks) != num_tasks or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")
    copies = jax.tree.map(lambda r: jnp.broadcast_to(r, (num_tasks,) + jnp.shape(r)), reps)
    f = lambda p, c: heads_fn(p, c, *args)
    if has_aux:
        losses, vjp, aux = jax.vjp(f, params, copies, has_aux=True)
    else:
        (losses, vjp), aux = jax.vjp(f, params, copies), None
    if jnp.shape(losses) != (num_tasks,):
        raise ValueError(
            f"heads_fn must return the {num_tasks} task losses [num_tasks]; "
            f"got shape {jnp.shape(losses)}."
        )
    head_grads, rep_task_grads = vjp(jnp.ones_like(losses))
    return losses, rep_task_grads, head_grads, aux


def _separate_heads(heads, params, reps, args, has_aux):
    """K cotangents from K per-task heads: each VJP runs through its own head only.

    A one-hot cotangent through a joint ``heads_fn`` still runs every task's
    backward (with zeros: floating-point ``0 * x`` is not folded away), K^2
    head backward passes in all; separate heads cost K.
    """
    if not heads:
        raise ValueError(
            "heads_fn: an empty sequence of task heads; expected one callable per task."
        )
    losses, rep_grads, param_grads, auxes = [], [], [], []
    for k, head in enumerate(heads):
        if not callable(head):
            raise TypeError(f"heads_fn[{k}] must be callable; got {type(head).__name__}.")
        f = functools.partial(lambda h, p, r: h(p, r, *args), head)
        if has_aux:
            loss, vjp, aux = jax.vjp(f, params, reps, has_aux=True)
            auxes.append(aux)
        else:
            loss, vjp = jax.vjp(f, params, reps)
        if jnp.ndim(loss) != 0:
            raise ValueError(
                f"heads_fn[{k}] must return a scalar task loss; got shape {jnp.shape(loss)}."
            )
        g_params, g_reps = vjp(jnp.ones((), loss.dtype))
        losses.append(loss)
        param_grads.append(g_params)
        rep_grads.append(g_reps)
    head_grads = jax.tree.map(lambda *g: functools.reduce(jnp.add, g), *param_grads)
    rep_task_grads = jax.tree.map(lambda *g: jnp.stack(g), *rep_grads)
    return jnp.stack(losses), rep_task_grads, head_grads, (tuple(auxes) if has_aux else None)
