"""DRGrad as an optax gradient transformation that routes per-task gradients."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from drgrad_jax._src import routing
from drgrad_jax._src import task_grads as tg
from drgrad_jax._src import updater as upd
from drgrad_jax._src.domains import POSITIVE, UNIT_RIGHT_OPEN, with_domains

SPACES = ("params", "activations")


class DRGradState(NamedTuple):
    """State of ``drgrad`` and ``drgrad_released``.

    Attributes:
      count: int32 number of updates taken.
      accumulators: ``[P, 2]`` float32 updater accumulators (sigma', sigma'') per
        primary task (running sums, or EMAs with ``updater="ema"``).
      mu: ``[P, 2]`` float32 mixing weights (mu', mu'') for the NEXT forward pass.
      diagnostics: ``RouterDiagnostics`` of the last step, each field with a
        leading primary-task axis ``[P, ...]``.
    """

    count: jax.Array
    accumulators: jax.Array
    mu: jax.Array
    diagnostics: routing.RouterDiagnostics


def parse_roles(towers: Mapping[str, object], allowed: tuple[str, ...], factory: str):
    """Validates ``towers`` and returns ``{(kind, task_index): prefixes}``.

    Args:
      towers: mapping from role (``"<kind>"`` or ``"<kind>:<task>"``) to one path
        prefix or a tuple of them.
      allowed: the role kinds the factory accepts.
      factory: the factory's name, for error messages.
    """
    if not isinstance(towers, Mapping) or not towers:
        roles = ", ".join(f"'{k}'" for k in allowed)
        raise ValueError(
            f"{factory}: towers must be a non-empty mapping from role ({roles}, with an optional "
            f"':<task>') to path prefixes; got {towers!r}."
        )
    roles = {}
    for role, prefixes in towers.items():
        kind, _, idx = str(role).partition(":")
        if kind not in allowed:
            raise ValueError(f"{factory}: towers has unknown role {role!r}; use {allowed}.")
        if idx == "":
            if kind in ("aux", "head"):
                raise ValueError(f"towers role {role!r} needs a task index, e.g. '{kind}:1'.")
            index = 0
        else:
            try:
                index = int(idx)
            except ValueError:
                raise ValueError(f"towers role {role!r}: {idx!r} is not a task index.") from None
        if isinstance(prefixes, str):
            prefixes = (prefixes,)
        prefixes = tuple(str(p).strip("/") for p in prefixes)
        if (kind, index) in roles:
            raise ValueError(f"towers names role {kind}:{index} twice.")
        roles[(kind, index)] = prefixes
    return roles


def _check_disjoint(roles, factory: str) -> None:
    """Raises if two roles' prefixes can select the same leaf (equal or nested paths)."""
    items = [(f"{kind}:{i}", pre) for (kind, i), pres in roles.items() for pre in pres]
    for a, (role_a, pa) in enumerate(items):
        for role_b, pb in items[a + 1 :]:
            if role_a != role_b and (
                pa == pb or pb.startswith(pa + "/") or pa.startswith(pb + "/")
            ):
                raise ValueError(
                    f"{factory}: towers roles {role_a} ({pa!r}) and {role_b} ({pb!r}) select "
                    "overlapping leaves; each leaf must belong to one role."
                )


def static_num_tasks(num_tasks):
    """``num_tasks`` as a Python int (or None), with a clear error otherwise."""
    if num_tasks is None:
        return None
    try:
        return operator.index(num_tasks)
    except TypeError:
        raise TypeError(
            "num_tasks must be a static Python int; with optax.inject_hyperparams pass "
            "static_args=('num_tasks',)."
        ) from None


def role_indices(roles, paths, kind, k, fallback=None):
    """Indices of the leaves under role ``kind:k`` (or ``fallback``'s prefixes)."""
    prefixes = roles.get((kind, k))
    if prefixes is None and fallback is not None:
        prefixes = roles.get(fallback)
    if prefixes is None:
        return None
    idx = tg.match_prefix(paths, prefixes)
    if not idx:
        raise ValueError(
            f"towers role {kind}:{k} with prefixes {prefixes} matches no leaf of task_grads; "
            f"leaf paths are {paths}."
        )
    return idx


def check_same_shapes(name_a, idx_a, name_b, idx_b, leaves):
    """Raises unless the leaves at ``idx_a`` and ``idx_b`` have the same shapes."""
    sa = [tuple(leaves[i].shape[1:]) for i in idx_a]
    sb = [tuple(leaves[i].shape[1:]) for i in idx_b]
    if sa != sb:
        raise ValueError(
            f"towers {name_a} and {name_b} must have identical shapes; got {sa} and {sb}."
        )


def check_role_tasks(roles, num_tasks: int):
    """Raises if a role names a task index beyond the task axis."""
    for kind, i in roles:
        if i >= num_tasks:
            raise ValueError(
                f"towers role {kind}:{i} refers to task {i} but task_grads has task-axis "
                f"length {num_tasks}."
            )


def init_state(num_primary: int, num_aux: int) -> DRGradState:
    """Zero counts and accumulators, mu = 0.5, empty diagnostics."""
    diag = routing.empty_diagnostics(num_aux)
    diag = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_primary,) + x.shape), diag)
    mu = jnp.full((num_primary, 2), 0.5, jnp.float32)
    return DRGradState(jnp.zeros((), jnp.int32), upd.init_accumulators(num_primary), mu, diag)


def next_state(state, norms, diags, *, updater, ema_decay, temperature) -> DRGradState:
    """The state after one step with routed norms ``[P, 2]`` and per-primary diagnostics."""
    # A non-finite step leaves the updater untouched: with optax.apply_if_finite
    # after the transformation the whole step is then skipped and mu stays usable.
    finite = jnp.all(jnp.isfinite(norms))
    count = jnp.where(finite, optax.safe_increment(state.count), state.count)
    accum = upd.update_accumulators(
        state.accumulators, norms, count, updater=updater, ema_decay=ema_decay
    )
    accum = jnp.where(finite, accum, state.accumulators)
    mu = upd.mixing_from_accumulators(accum, count, updater=updater, temperature=temperature)
    diag = jax.tree.map(lambda *xs: jnp.stack(xs), *diags)
    return DRGradState(count, accum, mu, diag)


def mark_space(tx, space: str):
    """Records on ``tx`` (its ``init`` function) the space its towers live in; returns ``tx``."""
    tx.init.drgrad_space = space
    return tx


def transform_space(tx) -> str | None:
    """The space a ``drgrad`` / ``drgrad_released`` transformation routes in, or None for others.

    ``make_train`` reads it when ``TrainConfig.space`` is None.

    Example:
      >>> transform_space(drgrad({"dedicated": "v1", "shared": "vs"}, num_tasks=2))
      'activations'
      >>> transform_space(drgrad({"dedicated": "a", "shared": "b", "aux:1": "c"}))
      'params'
    """
    return getattr(getattr(tx, "init", None), "drgrad_space", None)


def _check_choices(space, pairing, updater):
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}; got {space!r}.")
    if pairing not in routing.PAIRINGS:
        raise ValueError(f"pairing must be one of {routing.PAIRINGS}; got {pairing!r}.")
    if updater not in upd.UPDATERS:
        raise ValueError(f"updater must be one of {upd.UPDATERS}; got {updater!r}.")


def _paper_primaries(roles, space, pairing, num_tasks):
    """The primary task indices of the paper's router, after checking the roles."""
    primaries = sorted(i for kind, i in roles if kind == "dedicated")
    if not primaries:
        raise ValueError("towers must name the primary task's 'dedicated' branch (T1' or v1).")
    for k in primaries:
        has_shared = ("shared", k) in roles or (space == "activations" and ("shared", 0) in roles)
        if not has_shared:
            raise ValueError(f"towers names 'dedicated:{k}' but no matching 'shared:{k}' branch.")
    if space == "activations" and any(kind == "aux" for kind, _ in roles):
        raise ValueError(
            "space='activations' reads auxiliary gradients from the 'shared' representation; "
            "remove the 'aux:<j>' roles."
        )
    n_aux = sum(kind == "aux" for kind, _ in roles)
    if space == "params" and n_aux == 0:
        raise ValueError(
            "drgrad routes between a primary task and at least one auxiliary task; towers "
            "names no 'aux:<j>' role. Add the auxiliary towers, or train a single task "
            "without drgrad."
        )
    if space == "activations" and num_tasks is not None and num_tasks <= len(primaries):
        raise ValueError(
            "drgrad routes between a primary task and at least one auxiliary task; "
            f"num_tasks={num_tasks} leaves no auxiliary task besides the primary tasks "
            f"{primaries}."
        )
    if num_tasks is not None:
        check_role_tasks(roles, num_tasks)
    if space == "params" and pairing == "as_printed":
        if n_aux != 1:
            raise ValueError(
                f"pairing='as_printed' needs exactly one auxiliary tower; got {n_aux}."
            )
    if space == "activations" and num_tasks is None:
        raise ValueError(
            "space='activations' (towers with no 'aux:<j>' roles name representations, such "
            "as SplitMMoE.drgrad_towers()) needs num_tasks: every non-primary task of the "
            "shared representation is auxiliary, and the state is sized by their number."
        )
    return primaries


def _aux_gradients(roles, space, paths, leaves, k, i_ded, i_sh, aux_tasks):
    """Per leaf of the routed subtree, the stacked auxiliary gradients ``[J, *shape]``."""
    if space == "activations":
        rows = np.asarray(aux_tasks, dtype=np.int32)
        return [leaves[i][rows] for i in i_sh]
    aux_idx = {j: role_indices(roles, paths, "aux", j) for j in aux_tasks}
    for j, ij in aux_idx.items():
        check_same_shapes(f"dedicated:{k}", i_ded, f"aux:{j}", ij, leaves)
    if not aux_tasks:
        return [jnp.zeros((0,) + leaves[i].shape[1:], leaves[i].dtype) for i in i_ded]
    return [jnp.stack([leaves[aux_idx[j][n]][j] for j in aux_tasks]) for n in range(len(i_ded))]


def drgrad(
    towers: Mapping[str, str | tuple[str, ...]],
    *,
    space: str | None = None,
    pairing: str = "consistent",
    updater: str = "cumulative",
    router: bool = True,
    gamma: ArrayLike = 1.0,
    ema_decay: ArrayLike = 0.99,
    temperature: ArrayLike = 1.0,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """DRGrad: route per-task gradients between a split primary tower and auxiliary towers.

    Takes per-task gradients (leaves ``[num_tasks, *shape]``) and returns one
    update with the params' shape. Every leaf first receives the plain sum over
    tasks; then, for each primary task, the router (paper Eq. R1-R2) ADDS

        g_R'  = (1 - 1{xi1 < 0} xi1) lam1 g1''  +  sum_j 1{xi_j >= 0} lam_j g2j
        g_R'' = - sum_j 1{xi1 xi_j < 0} xi1 xi_j g1''

    to the dedicated branch (T1' / v1) and the shared branch (T1'' / v_s), with
    xi1 = cos(g1', g1''), lam1 = clip(||g1'||/||g1''||, 0, 1)^gamma and likewise
    xi_j, lam_j for each auxiliary gradient g2j (``pairing="consistent"``;
    ``"as_printed"`` applies Eq. 1 literally, one auxiliary task). Cosines are
    taken once per step over the whole routed subtree. Auxiliary towers keep
    their own gradient. The updater then turns the routed norms
    ||g1' + g_R'||, ||g1'' + g_R''|| into mixing weights (mu', mu''), read by the
    model's next forward pass through ``mixing_weights(opt_state)``:

        cumulative: sigma += ||.||, mu = softmax(sigma', sigma'')   (the paper)
        mean:       mu = softmax(sigma / t)
        ema:        s <- d s + (1 - d) ||.||, mu = softmax(s / temperature)
        fixed:      mu = (0.5, 0.5)                                 ("+ router" ablation)

    See docs/drgrad.md, *The router*, *Router space*, *The updater* and
    *Several tasks*.

    Where the gradients live (``space``):

    * ``"params"``: ``task_grads`` are parameter gradients (e.g. from
      ``per_task_grads``). ``towers`` maps ``"dedicated"`` (T1'), ``"shared"``
      (T1'') and ``"aux:<j>"`` (the tower of auxiliary task j) to path prefixes
      of identically shaped subtrees. g1' and g1'' are the primary task's rows,
      g2j is task j's row of its tower.
    * ``"activations"``: ``task_grads`` are cotangents at the representations
      (``per_task_rep_grads(...).rep_task_grads``). ``towers`` maps
      ``"dedicated"`` to v1 and ``"shared"`` to the gated v_s; g1'' and every g2j
      are the rows of v_s (every non-primary task is auxiliary), so v_s receives
      g1'' + g_R'' + sum_j g2j. Finish the backward with ``RepGrads.finish``.

    Non-finite gradients pass through (so ``optax.apply_if_finite`` wrapping the
    optimizer AFTER drgrad skips the step) but never enter the updater state:
    ``mu`` and the step count stay as they were. ``apply_if_finite`` cannot wrap
    drgrad itself, since its skipped update would keep the task axis.

    Several primary tasks: roles ``"dedicated:<k>"`` and (params space)
    ``"shared:<k>"``, one router and one (mu', mu'') row per primary task k.

    The authors' released Census rule is a different algorithm with its own
    factory, ``drgrad_released``.

    Args:
      towers: mapping from role to one path prefix (or a tuple of them), e.g.
        ``{"dedicated": "tower_dedicated", "shared": "tower_shared",
        "aux:1": "aux_towers/1"}``. Paths join pytree keys with ``/``.
      space: ``"activations"``, ``"params"`` or ``None`` (default: read from
        ``towers``; with ``"aux:<j>"`` roles the towers are parameter
        subtrees and the space is ``"params"``, without them they are
        representations and it is ``"activations"``). ``SplitMMoE``'s default
        towers are its representations v1 / v_s, because only there the
        router has a signal to act on: the sign of xi_aux agrees with a
        world's known task relation on 91-100% of steps, against 8-87% in
        parameter space, where T1' and T2 are independently initialised
        towers whose coordinates do not correspond (docs/drgrad.md,
        *Ablations*). The transform records its space for ``make_train``
        (``transform_space``).
      pairing: ``"consistent"`` (default) or ``"as_printed"``.
      updater: ``"cumulative"`` (default), ``"mean"``, ``"ema"`` or ``"fixed"``.
        The paper's cumulative sums are unbounded, so mu saturates: on Census
        mu' reaches 1.0 within ~100 steps and T1'' stops learning (its
        accumulator freezes while that of T1' keeps growing). ``"mean"`` and
        ``"ema"`` keep mu responsive; ``"fixed"`` is the router-only ablation.
      router: ``False`` switches the routing off (the updater-only ablation,
        docs/drgrad.md, *Ablations*): every leaf gets the plain sum over tasks
        and the updater reads the unrouted norms ||g1'||, ||g1''||. The router's
        diagnostics are still computed and kept in the state.
      gamma: exponent of the router's norm ratio (> 0).
      ema_decay: decay of the ``"ema"`` updater, in [0, 1).
      temperature: softmax temperature of the ``"ema"`` updater (> 0).
      num_tasks: declared number of tasks; the task axis must match. ``None``
        infers it. (A static int: with ``optax.inject_hyperparams`` pass it in
        ``static_args``.)

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      ``DRGradState``. Unknown extra arguments to ``update`` are ignored.

    Raises:
      ValueError: bad hyperparameters or towers here (among them no auxiliary
        task: no ``"aux:<j>"`` role, or ``num_tasks`` 1 in activations space); at
        trace time, a task axis that
        disagrees with ``num_tasks`` or the roles, missing or empty towers,
        towers of unequal shapes (params space), non-floating gradients.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> params = {"trunk": jnp.ones(3), "t1a": jnp.ones(2), "t1b": jnp.ones(2),
      ...           "t2": jnp.ones(2)}
      >>> task_grads = jax.tree.map(lambda p: jnp.stack([p, -p]), params)
      >>> tx = optax.chain(drgrad({"dedicated": "t1a", "shared": "t1b", "aux:1": "t2"}),
      ...                  optax.sgd(0.1))
      >>> state = tx.init(params)
      >>> updates, state = tx.update(task_grads, state, params)
      >>> jax.tree.map(jnp.shape, updates)["t1a"]
      (2,)
      >>> [round(float(m), 3) for m in mixing_weights(state)]  # mu', mu''
      [0.5, 0.5]

    References:
      Liu, Miao, Xia, "Direct Routing Gradient (DRGrad): A Personalized
      Information Surgery for Multi-Task Learning (MTL) Recommendations",
      AAAI 2025. https://arxiv.org/abs/2510.09643
    """
    roles = parse_roles(towers, ("dedicated", "shared", "aux"), "drgrad")
    if space is None:
        space = "params" if any(kind == "aux" for kind, _ in roles) else "activations"
    _check_choices(space, pairing, updater)
    if not isinstance(router, bool):
        raise TypeError(
            f"router must be a bool (False: the updater-only ablation); got {router!r}."
        )
    num_tasks = static_num_tasks(num_tasks)
    _check_disjoint(roles, "drgrad")
    primaries = _paper_primaries(roles, space, pairing, num_tasks)

    def aux_tasks_for(k_tasks):
        if space == "params":
            return sorted(i for kind, i in roles if kind == "aux")
        return [t for t in range(k_tasks) if t not in primaries]

    def init_fn(params):
        del params
        return init_state(len(primaries), len(aux_tasks_for(num_tasks)))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        k_tasks = tg.check_task_grads(updates, num_tasks, name="task_grads")
        if params is not None and space == "params":
            tg.check_matches_params(updates, params, name="task_grads")
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        paths = tg.leaf_paths(updates)
        out = [tg.sum_rows(g, jnp.float32) for g in leaves]
        check_role_tasks(roles, k_tasks)
        aux_tasks = aux_tasks_for(k_tasks)
        shared_fallback = ("shared", 0) if space == "activations" else None
        diags, norms = [], []
        for k in primaries:
            i_ded = role_indices(roles, paths, "dedicated", k)
            i_sh = role_indices(roles, paths, "shared", k, fallback=shared_fallback)
            check_same_shapes(f"dedicated:{k}", i_ded, f"shared:{k}", i_sh, leaves)
            g1p = [leaves[i][k] for i in i_ded]
            g1pp = [leaves[i][k] for i in i_sh]
            g2 = _aux_gradients(roles, space, paths, leaves, k, i_ded, i_sh, aux_tasks)
            r_ded, r_sh, diag = routing.route(g1p, g1pp, g2, gamma=gamma, pairing=pairing)
            if not router:  # updater-only ablation: the diagnostics stay, the routing goes
                r_ded, r_sh = [jnp.zeros_like(r) for r in r_ded], [jnp.zeros_like(r) for r in r_sh]
            for i, r in zip(i_ded, r_ded):
                out[i] = out[i] + r
            for i, r in zip(i_sh, r_sh):
                out[i] = out[i] + r
            routed_ded = [a.astype(jnp.float32) + r for a, r in zip(g1p, r_ded)]
            routed_sh = [a.astype(jnp.float32) + r for a, r in zip(g1pp, r_sh)]
            norms.append(jnp.stack([routing.norm(routed_ded), routing.norm(routed_sh)]))
            diags.append(diag)
        new_state = next_state(
            state,
            jnp.stack(norms),
            diags,
            updater=updater,
            ema_decay=ema_decay,
            temperature=temperature,
        )
        new_leaves = [o.astype(g.dtype) for o, g in zip(out, leaves)]
        return jax.tree_util.tree_unflatten(treedef, new_leaves), new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return mark_space(
        with_domains(
            tx,
            "drgrad",
            gamma=(gamma, POSITIVE),
            temperature=(temperature, POSITIVE),
            ema_decay=(ema_decay, UNIT_RIGHT_OPEN),
        ),
        space,
    )


def _find_states(opt_state) -> list[DRGradState]:
    is_drgrad = lambda x: isinstance(x, DRGradState)
    return [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=is_drgrad) if is_drgrad(s)]


def find_drgrad_state(opt_state) -> DRGradState | None:
    """The ``DRGradState`` inside an optimizer state (anywhere in a chain), or None.

    Raises:
      ValueError: more than one DRGrad state is present.
    """
    states = _find_states(opt_state)
    if len(states) > 1:
        raise ValueError(f"opt_state holds {len(states)} DRGrad states; expected at most one.")
    return states[0] if states else None


def mixing_weights(opt_state) -> jax.Array | None:
    """The updater's mixing weights (mu', mu'') for the model's forward pass.

    Works wherever ``drgrad`` sits in an optax chain (also inside
    ``inject_hyperparams``, ``masked``, ``apply_if_finite``...).

    Args:
      opt_state: an optimizer state containing one ``DRGradState``.

    Returns:
      ``[2]`` float32 ``(mu', mu'')`` with one primary task, ``[P, 2]`` with P
      primary tasks; ``None`` when the state holds no DRGrad state (a model can
      then fall back to 0.5 / 0.5).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> towers = {"dedicated": "a", "shared": "b", "aux:1": "c"}
      >>> tx = optax.chain(optax.clip(1.0), drgrad(towers))
      >>> params = {"a": jnp.ones(2), "b": jnp.ones(2), "c": jnp.ones(2)}
      >>> mixing_weights(tx.init(params)).tolist()
      [0.5, 0.5]
    """
    state = find_drgrad_state(opt_state)
    if state is None:
        return None
    mu = state.mu
    return mu[0] if mu.shape[0] == 1 else mu
