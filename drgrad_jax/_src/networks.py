"""Multi-task recommender networks in Flax NNX: Shared-Bottom, MMoE, PLE, Split-MMoE.

Every model maps a batch of features to per-task logits ``[B, K]``::

    logits = model(cat, dense, user, mu=mu)          # == model.heads(model.trunk(...), mu=mu)

with ``cat`` ``[B, F]`` int32 categorical ids (one column per field),
``dense`` ``[B, D]`` float32 numeric features and ``user`` ``[B]`` int32 user ids
(only read by a personalized gate; ``None`` otherwise). ``mu`` is the DRGrad
updater's ``(mu', mu'')`` and is only read by ``SplitMMoE``.

The split into ``trunk`` and ``heads`` is the model's *shared
representation*: ``trunk`` computes everything the parameters shared by
several tasks compute, and returns the tensors it hands to the task-specific
parts (gates, towers); ``heads`` reads nothing else. Representation-level
methods (MGDA-UB) compare the per-task gradients there
(``per_task_rep_grads``), so at least one of those tensors is read by several
tasks (see docs/drgrad.md, *Shared representation*). ``SplitMMoE`` also has
DRGrad's own split at (v1, v_s), ``drgrad_trunk`` / ``drgrad_heads``.
``task_heads`` (and ``drgrad_task_heads``) compute the same logits from one copy
of the representation per task (leaves ``[K, ...]``, task k reads copy k
only), so the gradient of the summed loss with respect to the copies is the K
per-task cotangents in one backward pass through the heads
(``per_task_rep_grads(..., num_tasks=K)``).
``task_of(model)`` labels each parameter with the one task that reads it (or
``SHARED``) so ``per_task_grads`` only pays K backward passes through the
shared part. Models are trained functionally:
``graphdef, state = nnx.split(model)``; ``params = nnx.to_pure_dict(state)``;
``nnx.merge(graphdef, params)`` inside a jitted step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from drgrad_jax._src.encoders import EmbeddingEncoder, make_encoder
from drgrad_jax._src.layers import (
    MLP,
    ExpertPool,
    Gate,
    PersonalizedGate,
    TaskHeads,
    Tower,
    check_positive,
    rep_reader,
)
from drgrad_jax._src.task_grads import SHARED, key_name

MIXES = ("logits", "probs")
PPNETS = (None, "single", "gatenu")


def _check_tasks(num_tasks: int, minimum: int = 1) -> int:
    if int(num_tasks) != num_tasks or num_tasks < minimum:
        raise ValueError(f"num_tasks must be an int >= {minimum}; got {num_tasks!r}.")
    return int(num_tasks)


def _stack_logits(logits: Sequence[jax.Array]) -> jax.Array:
    return jnp.stack(logits, axis=1)


# --- models --------------------------------------------------------------------


class SharedBottom(TaskHeads, nnx.Module):
    """Shared-Bottom multi-task network: one shared MLP, one tower per task.

    ::

      h = f(x);  z_k = T_k(h)            (Caruana 1997; MMoE's baseline)

    Shared representation (``trunk``): ``{"bottom": h}``, read by every tower.

    Args:
      vocab_sizes: vocabulary size of each categorical field (ids in
        ``[0, vocab)``).
      num_dense: number of dense features.
      num_tasks: number of tasks K.
      embed_dim: embedding width per categorical field.
      bottom: widths of the shared MLP.
      tower: hidden widths of each tower (each ends in one logit).
      activation: name in ``ACTIVATIONS``.
      rngs: ``nnx.Rngs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> m = SharedBottom((5, 3), 2, num_tasks=2, rngs=nnx.Rngs(0))
      >>> m(jnp.zeros((4, 2), jnp.int32), jnp.ones((4, 2))).shape
      (4, 2)
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        num_tasks: int = 2,
        *,
        embed_dim: int = 8,
        bottom: Sequence[int] = (64,),
        tower: Sequence[int] = (16,),
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        self.num_tasks = _check_tasks(num_tasks)
        self.encoder = EmbeddingEncoder(vocab_sizes, num_dense, embed_dim=embed_dim, rngs=rngs)
        self.bottom = MLP(self.encoder.out_features, bottom, activation=activation, rngs=rngs)
        self.towers = nnx.List(
            [
                Tower(self.bottom.out_features, tower, activation=activation, rngs=rngs)
                for _ in range(self.num_tasks)
            ]
        )

    def trunk(self, cat, dense, user=None) -> dict[str, jax.Array]:
        del user
        return {"bottom": self.bottom(self.encoder(cat, dense))}

    def _logits(self, read) -> jax.Array:
        return _stack_logits([t(read(k, "bottom")) for k, t in enumerate(self.towers)])

    def __call__(self, cat, dense, user=None, *, mu=None) -> jax.Array:
        return self.heads(self.trunk(cat, dense, user), mu=mu)

    def task_owner(self, path: tuple[str, ...]) -> int:
        return int(path[1]) if path[0] == "towers" else SHARED


class MMoE(TaskHeads, nnx.Module):
    """Multi-gate Mixture-of-Experts: one softmax gate per task over a shared expert pool.

    ::

      f_k(x) = sum_e softmax(W_k h)_e  E_e(h);    z_k = T_k(f_k(x))      (MMoE Eq. 5-7)

    Shared representation (``trunk``): ``{"inputs": h, "experts": E(h)}``,
    the gates' input and the expert outputs ``[B, E, d]``, both read by every
    task; the gates and towers are the heads. (The mixtures ``f_k`` are each
    read by one task only, so per-task gradients there are orthogonal by
    construction.)

    Args:
      vocab_sizes: vocabulary size of each categorical field.
      num_dense: number of dense features.
      num_tasks: number of tasks K.
      embed_dim: embedding width per categorical field.
      num_experts: number of experts.
      expert_hidden: widths of each expert MLP (the last is the expert output d).
      tower: hidden widths of each tower.
      gate_hidden: hidden widths of each gate (``()``: a single linear layer).
      activation: name in ``ACTIVATIONS``.
      rngs: ``nnx.Rngs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> m = MMoE((), 3, num_tasks=3, num_experts=4, rngs=nnx.Rngs(0))
      >>> {k: v.shape for k, v in m.trunk(None, jnp.ones((2, 3))).items()}
      {'inputs': (2, 3), 'experts': (2, 4, 16)}

    References:
      Ma et al., "Modeling Task Relationships in Multi-task Learning with
      Multi-gate Mixture-of-Experts", KDD 2018,
      https://doi.org/10.1145/3219819.3220007.
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        num_tasks: int = 2,
        *,
        embed_dim: int = 8,
        num_experts: int = 8,
        expert_hidden: Sequence[int] = (16,),
        tower: Sequence[int] = (8,),
        gate_hidden: Sequence[int] = (),
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        self.num_tasks = _check_tasks(num_tasks)
        self.encoder = EmbeddingEncoder(vocab_sizes, num_dense, embed_dim=embed_dim, rngs=rngs)
        width = self.encoder.out_features
        self.experts = ExpertPool(
            width, num_experts, expert_hidden, activation=activation, rngs=rngs
        )
        d = self.experts.out_features
        self.gates = nnx.List(
            [
                Gate(width, num_experts, hidden=gate_hidden, activation=activation, rngs=rngs)
                for _ in range(self.num_tasks)
            ]
        )
        self.towers = nnx.List(
            [Tower(d, tower, activation=activation, rngs=rngs) for _ in range(self.num_tasks)]
        )

    def trunk(self, cat, dense, user=None) -> dict[str, jax.Array]:
        del user
        h = self.encoder(cat, dense)
        return {"inputs": h, "experts": self.experts(h)}

    def _logits(self, read) -> jax.Array:
        """Task k's head: gate k and tower k on the shared expert outputs."""
        pairs = enumerate(zip(self.gates, self.towers))
        return _stack_logits([t(g(read(k, "inputs"), read(k, "experts"))) for k, (g, t) in pairs])

    def __call__(self, cat, dense, user=None, *, mu=None) -> jax.Array:
        return self.heads(self.trunk(cat, dense, user), mu=mu)

    def task_owner(self, path: tuple[str, ...]) -> int:
        return int(path[1]) if path[0] in ("towers", "gates") else SHARED


class PLE(TaskHeads, nnx.Module):
    """Progressive Layered Extraction: stacked CGC levels of task-specific and shared experts.

    At level l, task k's gate mixes task k's experts with the shared experts
    (reading task k's input of that level); below the last level a shared gate
    mixes every expert into the next level's shared input::

      f_k^l = softmax(W_k^l x_k^{l-1}) [E_k^l(x_k^{l-1}), E_s^l(x_s^{l-1})]
      f_s^l = softmax(W_s^l x_s^{l-1}) [E_1^l, ..., E_K^l, E_s^l]
      z_k   = T_k(f_k^L)

    Shared representation (``trunk``): every level below the last, and the
    last level's shared experts. ``{"shared_experts": E_s^L, "task_inputs":
    (x_1^{L-1}, ..., x_K^{L-1})}``; with one level the task inputs are all the
    encoder output, given once as ``"inputs"``. The last level's task experts
    and gates and the towers are the heads.

    ``census_released`` builds the DRGrad authors' Census network as a PLE
    configuration.

    Args:
      vocab_sizes: vocabulary size of each categorical field.
      num_dense: number of dense features.
      num_tasks: number of tasks K.
      num_levels: number of CGC levels.
      num_specific: experts per task per level.
      num_shared: shared experts per level.
      embed_dim: embedding width per field (``encoder="embed"``).
      expert_hidden: widths of each expert MLP.
      tower: hidden widths of each tower.
      gate_hidden: hidden widths of each gate.
      activation: activation of experts, gates and encoder.
      tower_activation: activation inside the towers (default: ``activation``).
      encoder: ``"embed"`` (embeddings + dense) or ``"field_mlp"`` (released code).
      rngs: ``nnx.Rngs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> m = PLE((4,), 2, num_tasks=2, rngs=nnx.Rngs(0))
      >>> m(jnp.zeros((3, 1), jnp.int32), jnp.ones((3, 2))).shape
      (3, 2)

    References:
      Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task
      Learning (MTL) Model for Personalized Recommendations", RecSys 2020,
      https://doi.org/10.1145/3383313.3412236.
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        num_tasks: int = 2,
        *,
        num_levels: int = 2,
        num_specific: int = 1,
        num_shared: int = 1,
        embed_dim: int = 8,
        expert_hidden: Sequence[int] = (16,),
        tower: Sequence[int] = (8,),
        gate_hidden: Sequence[int] = (),
        activation: str = "relu",
        tower_activation: str | None = None,
        encoder: str = "embed",
        rngs: nnx.Rngs,
    ):
        self.num_tasks = k = _check_tasks(num_tasks)
        self.num_levels = check_positive("num_levels", num_levels)
        num_specific = check_positive("num_specific", num_specific)
        num_shared = check_positive("num_shared", num_shared)
        self.encoder = make_encoder(encoder, vocab_sizes, num_dense, embed_dim, rngs)
        width = self.encoder.out_features
        spec, shared, tgates, sgates = [], [], [], []
        for level in range(self.num_levels):
            last = level == self.num_levels - 1
            spec.append(
                nnx.List(
                    [
                        ExpertPool(
                            width, num_specific, expert_hidden, activation=activation, rngs=rngs
                        )
                        for _ in range(k)
                    ]
                )
            )
            shared.append(
                ExpertPool(width, num_shared, expert_hidden, activation=activation, rngs=rngs)
            )
            n_mix = num_specific + num_shared
            tgates.append(
                nnx.List(
                    [
                        Gate(width, n_mix, hidden=gate_hidden, activation=activation, rngs=rngs)
                        for _ in range(k)
                    ]
                )
            )
            sgates.append(
                None
                if last
                else Gate(
                    width,
                    k * num_specific + num_shared,
                    hidden=gate_hidden,
                    activation=activation,
                    rngs=rngs,
                )
            )
            width = spec[-1][0].out_features
        self.specific_experts = nnx.List(spec)
        self.shared_experts = nnx.List(shared)
        self.task_gates = nnx.List(tgates)
        self.shared_gates = nnx.List([g for g in sgates if g is not None])
        tower_act = activation if tower_activation is None else tower_activation
        self.towers = nnx.List(
            [Tower(width, tower, activation=tower_act, rngs=rngs) for _ in range(k)]
        )

    def trunk(self, cat, dense, user=None) -> dict[str, Any]:
        del user
        h = self.encoder(cat, dense)
        task_in = [h] * self.num_tasks
        shared_in = h
        last = self.num_levels - 1
        for level in range(last):
            own = [pool(x) for pool, x in zip(self.specific_experts[level], task_in)]
            common = self.shared_experts[level](shared_in)
            task_in = [
                gate(x, jnp.concatenate([e, common], axis=1))
                for gate, x, e in zip(self.task_gates[level], task_in, own)
            ]
            shared_in = self.shared_gates[level](shared_in, jnp.concatenate(own + [common], axis=1))
        common = self.shared_experts[last](shared_in)
        if last == 0:
            return {"inputs": h, "shared_experts": common}
        return {"task_inputs": tuple(task_in), "shared_experts": common}

    def _logits(self, read) -> jax.Array:
        last = self.num_levels - 1
        logits = []
        for k in range(self.num_tasks):
            x = read(k, "task_inputs")[k] if last else read(k, "inputs")
            own = self.specific_experts[last][k](x)
            mixed = self.task_gates[last][k](
                x, jnp.concatenate([own, read(k, "shared_experts")], axis=1)
            )
            logits.append(self.towers[k](mixed))
        return _stack_logits(logits)

    def __call__(self, cat, dense, user=None, *, mu=None) -> jax.Array:
        return self.heads(self.trunk(cat, dense, user), mu=mu)

    def task_owner(self, path: tuple[str, ...]) -> int:
        if path[0] == "towers":
            return int(path[1])
        # Only the last level's task experts and task gates are read by one task.
        last = str(self.num_levels - 1)
        if path[0] in ("specific_experts", "task_gates") and path[1] == last:
            return int(path[2])
        return SHARED


def census_released(
    vocab_sizes: Sequence[int], num_dense: int, num_tasks: int = 2, *, rngs: nnx.Rngs
) -> PLE:
    """The DRGrad authors' released Census network, as a ``PLE`` configuration.

    Per-field MLPs with mish on the one-hot inputs, a 128-wide input layer, two
    CGC-like levels with one Dense(128)+mish expert per task and one shared
    expert, gates MLP[128, n] with mish, and heads MLP[64, 1] with ReLU.

    Args:
      vocab_sizes: vocabulary size of each categorical field.
      num_dense: number of dense features.
      num_tasks: number of tasks (the released code has 2).
      rngs: ``nnx.Rngs``.

    Returns:
      A ``PLE``.

    References:
      https://github.com/logwhistle/drgrad_for_aaai25 (TensorFlow 1 code).
    """
    return PLE(
        vocab_sizes,
        num_dense,
        num_tasks,
        num_levels=2,
        num_specific=1,
        num_shared=1,
        expert_hidden=(128,),
        gate_hidden=(128,),
        tower=(64,),
        activation="mish",
        tower_activation="relu",
        encoder="field_mlp",
        rngs=rngs,
    )


def mix_logits(z_dedicated: jax.Array, z_shared: jax.Array, mu, mix: str = "logits") -> jax.Array:
    """The task-1 logit from its two branches and the updater's ``(mu', mu'')``.

    ::

      logits: z1 = mu' z1' + mu'' z1''
      probs:  p1 = mu' sigma(z1') + mu'' sigma(z1''),  returned as logit(p1)

    ``probs`` is computed in log space (``logsumexp``), so it is finite for any
    logits. ``mu`` carries no gradient (it is the updater's constant).

    Example:
      >>> import jax.numpy as jnp
      >>> float(mix_logits(jnp.array([2.0]), jnp.array([0.0]), jnp.array([0.5, 0.5]))[0])
      1.0
    """
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}; got {mix!r}.")
    mu = jnp.asarray((0.5, 0.5) if mu is None else mu, jnp.float32)
    if mu.shape != (2,):
        raise ValueError(
            f"mu has shape {mu.shape}; expected [2] (mu', mu'') for the one primary task."
        )
    mu = jax.lax.stop_gradient(mu)
    if mix == "logits":
        return mu[0] * z_dedicated + mu[1] * z_shared
    log_mu = jnp.log(mu)
    log_p = jnp.logaddexp(
        log_mu[0] + jax.nn.log_sigmoid(z_dedicated), log_mu[1] + jax.nn.log_sigmoid(z_shared)
    )
    log_q = jnp.logaddexp(
        log_mu[0] + jax.nn.log_sigmoid(-z_dedicated), log_mu[1] + jax.nn.log_sigmoid(-z_shared)
    )
    return log_p - log_q


class SplitMMoE(nnx.Module):
    """DRGrad's Split-MMoE: the primary tower split over a dedicated and a shared mixture.

    One expert pool; a task-1 gate gives the dedicated mixture v1 and a "shared"
    gate gives v_s, optionally rescaled by the personalized gate; T1' reads v1,
    T1'' and every auxiliary tower read v_s (paper Sec. 2.1; see docs/drgrad.md,
    *Split-MMoE*)::

      v1 = sum_e G_1(h)_e E_e(h);   v_s = g_PP(u) * sum_e G_s(h)_e E_e(h)
      z1 = mix(T1'(v1), T1''(v_s); mu);   z_j = T_j(v_s), j = 2..K

    Task 0 is the primary task; tasks 1..K-1 are auxiliary. T1', T1'' and the
    auxiliary towers have identical shapes and live at the paths
    ``tower_dedicated``, ``tower_shared`` and ``aux_towers/<j>``, which is what
    ``drgrad(towers=model.drgrad_towers("params"))`` routes between; the
    default ``drgrad_towers()`` routes at v1 / v_s instead.

    Two splits of the forward pass. ``drgrad_trunk`` / ``drgrad_heads`` cut at
    DRGrad's representations ``{"v1", "vs"}`` (``space="activations"`` of
    ``drgrad``). ``trunk`` / ``heads`` cut at the shared representation, what
    the shared parameters (encoder, experts, shared gate, personalized gate)
    hand to the task parts: ``{"inputs": h, "experts": E(h), "vs": v_s}``;
    v_s is read by T1'' and every auxiliary tower, and the task-1 gate reads
    ``h`` and the expert pool.

    Args:
      vocab_sizes: vocabulary size of each categorical field.
      num_dense: number of dense features.
      num_tasks: number of tasks K >= 2 (task 0 primary).
      embed_dim: embedding width per field.
      num_experts: size of the one expert pool.
      expert_hidden: widths of each expert MLP.
      tower: hidden widths of every tower.
      gate_hidden: hidden widths of the two gates.
      activation: name in ``ACTIVATIONS``.
      mix: ``"logits"`` (default) or ``"probs"`` (see docs/drgrad.md, *Mixing the
        primary tower*).
      ppnet: ``None`` (no personalized gate), ``"single"`` or ``"gatenu"``.
      num_users: user-id vocabulary of the personalized gate.
      user_embed_dim: width of the user-id embedding read by the gate.
      ppnet_hidden: hidden width of ``"gatenu"``.
      rngs: ``nnx.Rngs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> m = SplitMMoE((), 3, num_tasks=3, rngs=nnx.Rngs(0))
      >>> m(None, jnp.ones((2, 3)), mu=jnp.array([0.7, 0.3])).shape
      (2, 3)
      >>> m.drgrad_towers("params")["aux:2"], m.drgrad_towers()
      ('aux_towers/2', {'dedicated': 'v1', 'shared': 'vs'})

    References:
      Liu, Miao, Xia, "Direct Routing Gradient (DRGrad): A Personalized
      Information Surgery for Multi-Task Learning (MTL) Recommendations",
      AAAI 2025, https://arxiv.org/abs/2510.09643.
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        num_tasks: int = 2,
        *,
        embed_dim: int = 8,
        num_experts: int = 8,
        expert_hidden: Sequence[int] = (16,),
        tower: Sequence[int] = (8,),
        gate_hidden: Sequence[int] = (),
        activation: str = "relu",
        mix: str = "logits",
        ppnet: str | None = None,
        num_users: int = 0,
        user_embed_dim: int = 8,
        ppnet_hidden: int = 32,
        rngs: nnx.Rngs,
    ):
        self.num_tasks = _check_tasks(num_tasks, minimum=2)
        if mix not in MIXES:
            raise ValueError(f"mix must be one of {MIXES}; got {mix!r}.")
        if ppnet not in PPNETS:
            raise ValueError(f"ppnet must be one of {PPNETS}; got {ppnet!r}.")
        self.mix = mix
        self.encoder = EmbeddingEncoder(vocab_sizes, num_dense, embed_dim=embed_dim, rngs=rngs)
        width = self.encoder.out_features
        self.experts = ExpertPool(
            width, num_experts, expert_hidden, activation=activation, rngs=rngs
        )
        d = self.experts.out_features
        gate = lambda: Gate(
            width, num_experts, hidden=gate_hidden, activation=activation, rngs=rngs
        )
        self.gate_dedicated = gate()
        self.gate_shared = gate()
        if ppnet is None:
            self.user_embed = None
            self.personalized_gate = None
        else:
            check_positive("num_users", num_users)
            self.user_embed = nnx.Embed(num_users, user_embed_dim, rngs=rngs)
            self.personalized_gate = PersonalizedGate(
                user_embed_dim, d, kind=ppnet, hidden=ppnet_hidden, rngs=rngs
            )
        tower_fn = lambda: Tower(d, tower, activation=activation, rngs=rngs)
        self.tower_dedicated = tower_fn()
        self.tower_shared = tower_fn()
        self.aux_towers = nnx.Dict({str(j): tower_fn() for j in range(1, self.num_tasks)})

    def _shared_mixture(self, h, experts, user) -> jax.Array:
        vs = self.gate_shared(h, experts)
        if self.personalized_gate is not None:
            if user is None:
                raise ValueError("this SplitMMoE has a personalized gate: pass user ids [batch].")
            if jnp.ndim(user) != 1 or user.shape[0] != h.shape[0]:
                raise ValueError(f"user has shape {jnp.shape(user)}; expected [{h.shape[0]}].")
            vs = vs * self.personalized_gate(self.user_embed(user))
        return vs

    def trunk(self, cat, dense, user=None) -> dict[str, jax.Array]:
        h = self.encoder(cat, dense)
        experts = self.experts(h)
        return {"inputs": h, "experts": experts, "vs": self._shared_mixture(h, experts, user)}

    def heads(self, reps, *, mu=None) -> jax.Array:
        v1 = self.gate_dedicated(reps["inputs"], reps["experts"])
        return self.drgrad_heads({"v1": v1, "vs": reps["vs"]}, mu=mu)

    def task_heads(self, reps, *, mu=None) -> jax.Array:
        """``heads`` on one copy of ``reps`` per task (leaves ``[K, ...]``); task k reads copy k."""
        read = rep_reader(reps, per_task=True)
        v1 = self.gate_dedicated(read(0, "inputs"), read(0, "experts"))
        return self._logits(v1, lambda k: read(k, "vs"), mu)

    def drgrad_trunk(self, cat, dense, user=None) -> dict[str, jax.Array]:
        """DRGrad's representations ``{"v1": v1, "vs": v_s}`` (docs/drgrad.md, *Router space*)."""
        h = self.encoder(cat, dense)
        experts = self.experts(h)
        return {"v1": self.gate_dedicated(h, experts), "vs": self._shared_mixture(h, experts, user)}

    def drgrad_heads(self, reps, *, mu=None) -> jax.Array:
        """The towers on DRGrad's representations: ``model(...) == drgrad_heads(drgrad_trunk(...))``."""
        return self._logits(reps["v1"], lambda k: reps["vs"], mu)

    def drgrad_task_heads(self, reps, *, mu=None) -> jax.Array:
        """``drgrad_heads`` on one copy of ``reps`` per task (leaves ``[K, ...]``)."""
        read = rep_reader(reps, per_task=True)
        return self._logits(read(0, "v1"), lambda k: read(k, "vs"), mu)

    def _logits(self, v1, vs, mu) -> jax.Array:
        """The towers on v1 (task 0 only) and on task k's v_s, ``vs(k)``."""
        z1 = mix_logits(self.tower_dedicated(v1), self.tower_shared(vs(0)), mu, self.mix)
        aux = [self.aux_towers[str(j)](vs(j)) for j in range(1, self.num_tasks)]
        return _stack_logits([z1] + aux)

    def __call__(self, cat, dense, user=None, *, mu=None) -> jax.Array:
        return self.heads(self.trunk(cat, dense, user), mu=mu)

    def task_owner(self, path: tuple[str, ...]) -> int:
        if path[0] in ("tower_dedicated", "tower_shared", "gate_dedicated"):
            return 0
        if path[0] == "aux_towers":
            return int(path[1])
        return SHARED

    def drgrad_towers(self, space: str = "activations") -> dict[str, str]:
        """The ``towers`` argument of ``drgrad``: the representations v1 / v_s, or the towers.

        The default routes at this model's ``drgrad_trunk`` (``"activations"``),
        where the router's sign carries the task relation (docs/drgrad.md,
        *Ablations*); ``"params"`` names the towers T1', T1'' and the auxiliary
        towers instead.
        """
        if space == "activations":
            return {"dedicated": "v1", "shared": "vs"}
        if space != "params":
            raise ValueError(f"space must be 'params' or 'activations'; got {space!r}.")
        towers = {"dedicated": "tower_dedicated", "shared": "tower_shared"}
        towers.update({f"aux:{j}": f"aux_towers/{j}" for j in range(1, self.num_tasks)})
        return towers


# --- parameter bookkeeping ------------------------------------------------------


def params_of(model: nnx.Module):
    """``(graphdef, params)``: the model's parameters as a plain nested dict."""
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)


def task_of(model: nnx.Module):
    """Labels every parameter with the one task that reads it, or ``SHARED`` (-1).

    The result has the structure of ``params_of(model)[1]`` and is the
    ``task_of`` argument of ``per_task_grads``: leaves read by a single task (its
    tower, its gate) then cost no per-task backward pass.

    Example:
      >>> from flax import nnx
      >>> m = MMoE((), 2, num_tasks=2, num_experts=2, rngs=nnx.Rngs(0))
      >>> labels = task_of(m)
      >>> labels["towers"][1]["mlp"]["layers"][0]["bias"], labels["experts"]["biases"][0]
      (1, -1)
    """
    _, params = params_of(model)
    owner = getattr(model, "task_owner", None)
    if owner is None:
        raise TypeError(f"{type(model).__name__} has no task_owner(path) method.")
    flat = jax.tree_util.tree_flatten_with_path(params)
    labels = [int(owner(tuple(key_name(k) for k in path))) for path, _ in flat[0]]
    return jax.tree_util.tree_unflatten(flat[1], labels)


def param_count(model: nnx.Module) -> int:
    """Number of scalar parameters of a model (also of an abstract ``nnx.eval_shape`` one).

    Example:
      >>> from flax import nnx
      >>> param_count(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
      8
    """
    state = nnx.state(model, nnx.Param)
    return int(sum(math.prod(jnp.shape(x)) for x in jax.tree_util.tree_leaves(state)))


def match_width(
    build: Callable[[int], nnx.Module],
    target: int | nnx.Module,
    *,
    low: int = 1,
    high: int = 4096,
) -> tuple[int, int]:
    """The width whose model has the parameter count closest to ``target``.

    The paper compares methods at equal parameter count; ``build(width)``
    returns a model whose count grows with ``width`` (e.g. a Shared-Bottom
    layer width or an expert width). Models are built abstractly
    (``nnx.eval_shape``), so the search allocates nothing.

    Args:
      build: ``build(width) -> nnx.Module``, non-decreasing count in ``width``.
      target: a parameter count, or a model whose count is the target.
      low: smallest width tried.
      high: largest width tried.

    Returns:
      ``(width, count)`` of the closest match (the smaller width on a tie).

    Example:
      >>> from flax import nnx
      >>> mmoe = MMoE((), 100, num_tasks=2, num_experts=8, expert_hidden=(16,),
      ...             tower=(8,), rngs=nnx.Rngs(0))
      >>> width, count = match_width(
      ...     lambda w: SharedBottom((), 100, 2, bottom=(w,), tower=(8,), rngs=nnx.Rngs(0)),
      ...     mmoe)
      >>> abs(count - param_count(mmoe)) <= 100 + 2 * 8
      True
    """
    if isinstance(target, nnx.Module):
        target = param_count(target)
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high; got low={low}, high={high}.")
    cache: dict[int, int] = {}

    def count(w: int) -> int:
        if w not in cache:
            cache[w] = param_count(nnx.eval_shape(lambda: build(w)))
        return cache[w]

    lo, hi = low, high
    while lo < hi:  # first width with count >= target
        mid = (lo + hi) // 2
        if count(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    best = min(
        (w for w in (lo - 1, lo) if low <= w <= high), key=lambda w: (abs(count(w) - target), w)
    )
    return best, count(best)


MODELS: Mapping[str, Callable[..., nnx.Module]] = {
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLE,
    "split_mmoe": SplitMMoE,
    "census_released": census_released,
}
"""Model constructors by name: ``MODELS[name](vocab_sizes, num_dense, num_tasks, ..., rngs=)``."""
