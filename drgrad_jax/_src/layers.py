"""Building blocks of the multi-task networks (Flax NNX): MLP, tower, expert pool, gates.

The MLP here is the one both packages build on (``drgrad_jax.models.MLP``).
``TaskHeads`` gives a model its ``heads`` on the shared representation and its
``task_heads`` on one copy of it per task (docs/drgrad.md, *Shared representation*).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    "identity": lambda x: x,
}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called ``name`` in ``ACTIVATIONS``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {name!r}.")
    return ACTIVATIONS[name]


def check_widths(name: str, value) -> tuple[int, ...]:
    """``value`` as a tuple of positive layer widths (argument ``name`` in errors)."""
    value = tuple(int(v) for v in value)
    if any(v <= 0 for v in value):
        raise ValueError(f"{name} must hold positive layer widths; got {value}.")
    return value


def check_positive(name: str, value: int) -> int:
    """``value`` as a positive int (argument ``name`` in errors)."""
    if int(value) != value or value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")
    return int(value)


# --- building blocks -------------------------------------------------------------


class MLP(nnx.Module):
    """A stack of dense layers, activation after every layer but (optionally) the last.

    Args:
      in_features: input width.
      features: output width of each layer.
      activation: name in ``ACTIVATIONS``.
      activate_last: whether the last layer is followed by the activation too.
      kernel_init: kernel initializer (default LeCun normal).
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        in_features: int,
        features: Sequence[int],
        *,
        activation: str = "relu",
        activate_last: bool = True,
        kernel_init=None,
        rngs: nnx.Rngs,
    ):
        features = check_widths("features", features)
        kw = {} if kernel_init is None else {"kernel_init": kernel_init}
        dims = (in_features,) + features
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs, **kw) for a, b in zip(dims[:-1], dims[1:])]
        )
        self.activation = activation
        self.activate_last = activate_last
        self.out_features = dims[-1]
        activation_fn(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n - 1 or self.activate_last:
                x = act(x)
        return x


class Tower(nnx.Module):
    """A task tower: hidden layers then one logit. Returns ``[B]``."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        *,
        activation: str = "relu",
        kernel_init=None,
        rngs: nnx.Rngs,
    ):
        self.mlp = MLP(
            in_features,
            tuple(hidden) + (1,),
            activation=activation,
            activate_last=False,
            kernel_init=kernel_init,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.mlp(x)[:, 0]


class ExpertPool(nnx.Module):
    """``num_experts`` identical MLP experts, stored stacked and run expert-major.

    ``x`` ``[B, in]`` -> ``[B, num_experts, out]``; every layer is followed by
    the activation (experts end in a nonlinearity, as in MMoE and PLE).
    Kernels are stored ``[num_experts, in, out]``. Every expert reads the same
    ``x`` in the first layer, so that layer is ONE matmul against the experts'
    kernels side by side (``[in, num_experts * out]``); later layers are one
    batched matmul with the expert as the batch axis, laid out ``[E, B, d]``
    (XLA's CPU dot is slow when the batch axis sits between others, as in
    ``einsum("bei,eio->beo")``); the output is put back to ``[B, E, d]`` once.
    """

    def __init__(
        self,
        in_features: int,
        num_experts: int,
        hidden: Sequence[int],
        *,
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        num_experts = check_positive("num_experts", num_experts)
        hidden = check_widths("expert_hidden", hidden)
        if not hidden:
            raise ValueError("expert_hidden must name at least one layer width.")
        init = jax.nn.initializers.lecun_normal(batch_axis=0)
        dims = (in_features,) + hidden
        self.kernels = nnx.List(
            [
                nnx.Param(init(rngs.params(), (num_experts, a, b), jnp.float32))
                for a, b in zip(dims[:-1], dims[1:])
            ]
        )
        self.biases = nnx.List(
            [nnx.Param(jnp.zeros((num_experts, b), jnp.float32)) for b in hidden]
        )
        self.activation = activation
        self.num_experts = num_experts
        self.out_features = hidden[-1]
        activation_fn(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        w = self.kernels[0][...]
        e, d_in, d_out = w.shape
        side_by_side = jnp.transpose(w, (1, 0, 2)).reshape(d_in, e * d_out)
        h = jnp.transpose((x @ side_by_side).reshape(x.shape[0], e, d_out), (1, 0, 2))
        h = act(h + self.biases[0][...][:, None])
        for w, b in zip(self.kernels[1:], self.biases[1:]):
            h = act(jnp.einsum("ebi,eio->ebo", h, w[...]) + b[...][:, None])
        return jnp.transpose(h, (1, 0, 2))


class Gate(nnx.Module):
    """Softmax gate over experts: ``G(x) = softmax(MLP(x))`` with optional hidden layers."""

    def __init__(
        self,
        in_features: int,
        num_experts: int,
        *,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        self.mlp = MLP(
            in_features,
            tuple(hidden) + (num_experts,),
            activation=activation,
            activate_last=False,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array, experts: jax.Array) -> jax.Array:
        """Mixes ``experts`` ``[B, E, d]`` with the gate's weights: ``[B, d]``."""
        weights = jax.nn.softmax(self.mlp(x), axis=-1)
        return jnp.einsum("be,bed->bd", weights, experts)


class PersonalizedGate(nnx.Module):
    """DRGrad's personalized gate: ``2 * sigmoid`` of a projection of ID embeddings.

    ::

      single:  g = 2 sigma(v_PP W_PP)                         (the paper, PPNet-like)
      gatenu:  g = 2 sigma(W2 relu(W1 v_PP + b1) + b2)       (PEPNet's Gate NU)

    The gate multiplies the shared representation coordinate-wise,
    ``v_s <- g * v_s``; values lie in ``(0, 2)`` and equal 1 at zero
    pre-activation, so each coordinate can be amplified or suppressed per user.

    Args:
      in_features: width of the ID embedding ``v_PP``.
      features: width of the gated representation.
      kind: ``"single"`` (default) or ``"gatenu"``.
      hidden: hidden width of ``"gatenu"``.
      rngs: ``nnx.Rngs``.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> gate = PersonalizedGate(4, 3, rngs=nnx.Rngs(0))
      >>> gate(jnp.zeros((2, 4))).tolist()   # zero input: every coordinate kept
      [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]

    References:
      Liu, Miao, Xia, "Direct Routing Gradient (DRGrad)", AAAI 2025, Sec. 2.5.
      Chang et al., "PEPNet: Parameter and Embedding Personalized Network",
      KDD 2023, https://arxiv.org/abs/2302.01115.
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        *,
        kind: str = "single",
        hidden: int = 32,
        rngs: nnx.Rngs,
    ):
        if kind not in ("single", "gatenu"):
            raise ValueError(f"kind must be 'single' or 'gatenu'; got {kind!r}.")
        widths = (features,) if kind == "single" else (hidden, features)
        self.mlp = MLP(in_features, widths, activate_last=False, rngs=rngs)
        self.kind = kind

    def __call__(self, v_pp: jax.Array) -> jax.Array:
        return 2.0 * jax.nn.sigmoid(self.mlp(v_pp))


# --- heads on per-task copies -------------------------------------------------------


def rep_reader(reps, per_task: bool) -> Callable[[int, str], Any]:
    """``read(k, name)``: task k's view of ``reps[name]``, the tensor or its copy k (``task_heads``).

    The copies are split off once per leaf (``jnp.unstack``), so the backward
    pass stacks the K cotangents in one op rather than adding K zero-padded ones.
    """
    if not per_task:
        return lambda k, name: reps[name]
    leaves, treedef = jax.tree.flatten(reps)
    pieces = [jnp.unstack(leaf) for leaf in leaves]
    views = [jax.tree.unflatten(treedef, copy) for copy in zip(*pieces)]
    return lambda k, name: views[k][name]


class TaskHeads:
    """A model's ``heads`` and ``task_heads``, both from its ``_logits(read)``.

    ``read(k, name)`` (``rep_reader``) is what task k reads of the
    representation's entry ``name``: the one tensor in ``heads``, its copy k in
    ``task_heads``.
    """

    def heads(self, reps, *, mu=None) -> jax.Array:
        del mu
        return self._logits(rep_reader(reps, per_task=False))

    def task_heads(self, reps, *, mu=None) -> jax.Array:
        """``heads`` on one copy of ``reps`` per task (leaves ``[K, ...]``); task k reads copy k.

        Task k's head runs once, so the gradient at the copies costs one
        backward pass through each task's head, where K one-hot cotangents
        through ``heads`` run every head K times.
        """
        del mu
        return self._logits(rep_reader(reps, per_task=True))
