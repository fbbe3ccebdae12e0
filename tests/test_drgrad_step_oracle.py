"""One- and two-step oracles of DRGrad training steps taken inside ``make_train``.

A tiny Split-MMoE with the personalized gate is trained by the real loop
(``Trainer.run_epochs``, full-batch SGD so an update reads as ``-lr * g``), and
every number is checked against a reference step written from docs/drgrad.md
with no automatic differentiation and no ``drgrad_jax`` code: the NumPy
forward of ``tests/model_references.py``, per-task gradients by central finite
differences, the router of *The router* / *Pairing of cosines and ratios*, the
cumulative updater of *The updater*, and the next forward pass reading the new
(mu', mu'').
"""

import functools

import jax
import numpy as np
import optax

import drgrad_jax
from drgrad_jax import data, models
from tests import model_references as ref

VOCABS = (4,)
NUM_DENSE = 3
NUM_USERS = 3
N_TRAIN = 24
LR = 0.5
TOWERS = ("tower_dedicated", "tower_shared", "aux_towers")

MODEL = functools.partial(
    models.SplitMMoE, VOCABS, NUM_DENSE, 2, embed_dim=2, num_experts=2, expert_hidden=(4,),
    tower=(3,), ppnet="single", num_users=NUM_USERS, user_embed_dim=2,
)  # fmt: skip


def tiny_data(seed=0):
    rng = np.random.default_rng(seed)

    def split(n):
        return data.Split(
            cat=rng.integers(0, VOCABS[0], (n, 1)).astype(np.int32),
            dense=rng.normal(size=(n, NUM_DENSE)).astype(np.float32),
            labels=rng.integers(0, 2, (n, 2)).astype(np.float32),
            user=rng.integers(0, NUM_USERS, n).astype(np.int32),
        )

    return data.MultiTaskData(
        split(N_TRAIN), split(16), split(16), VOCABS, NUM_DENSE, ("t1", "t2"), NUM_USERS
    )


# ----------------------------------------------------------------------------
# The reference step.
# ----------------------------------------------------------------------------


def router(g1p, g1pp, g2, pairing, gamma=1.0):
    """Eq. R1-R2 on flat vectors: ``(g_R', g_R'', (xi1, xi2))``.

    ``consistent`` takes (xi1, lam1) from g1'' and (xi2, lam2) from g2;
    ``as_printed`` takes (xi1, lam1) from g2 and (xi2, lam2) from g1''.
    """
    n1p = np.linalg.norm(g1p)

    def cos(a, b):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return 0.0 if na == 0 or nb == 0 else float(a @ b) / (na * nb)

    def lam(other):
        n = np.linalg.norm(other)
        return 0.0 if n == 0 else min(n1p / n, 1.0) ** gamma

    first, second = (g1pp, g2) if pairing == "consistent" else (g2, g1pp)
    xi1, lam1 = cos(g1p, first), lam(first)
    xi2, lam2 = cos(g1p, second), lam(second)
    g_rp = (1.0 - (xi1 if xi1 < 0 else 0.0)) * lam1 * g1pp
    if xi2 >= 0:
        g_rp = g_rp + lam2 * g2
    g_rpp = -xi1 * xi2 * g1pp if xi1 * xi2 < 0 else np.zeros_like(g1pp)
    return g_rp, g_rpp, (xi1, xi2)


def flat(tree):
    return np.concatenate([leaf.ravel() for _, leaf in ref.leaves(tree)])


def unflat(vec, like):
    out, i = {}, 0
    for path, leaf in ref.leaves(like):
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = vec[i : i + leaf.size].reshape(leaf.shape)
        i += leaf.size
    return out


def add(a, b, scale=1.0):
    return jax.tree.map(lambda x, y: x + scale * y, a, b)


def task_losses(p, split, mu):
    z = ref.split_mmoe(p, split.cat, split.dense, split.user, VOCABS, mu, ppnet="single")
    return np.array([ref.bce(z[:, k], split.labels[:, k]) for k in range(2)])


def reference_step(p, split, mu, sigma, space, pairing):
    """One DRGrad + SGD step: ``(new_params, losses, sigma, mu_next, info)``."""
    losses = task_losses(p, split, mu)
    if space == "params":
        per_task = ref.fd_grad(lambda q: task_losses(q, split, mu), p)  # leaves [2, ...]
        grad = jax.tree.map(lambda g: g.sum(0), per_task)
        row = lambda tree, k: flat(jax.tree.map(lambda g: g[k], tree))
        g1p, g1pp = row(per_task["tower_dedicated"], 0), row(per_task["tower_shared"], 0)
        g2 = row(per_task["aux_towers"], 1)
        g_rp, g_rpp, xi = router(g1p, g1pp, g2, pairing)
        grad["tower_dedicated"] = add(grad["tower_dedicated"], unflat(g_rp, p["tower_dedicated"]))
        grad["tower_shared"] = add(grad["tower_shared"], unflat(g_rpp, p["tower_shared"]))
    else:
        v1, vs = ref.split_mmoe_reps(p, split.cat, split.dense, split.user, VOCABS, "single")

        def head_losses(r):
            z = ref.split_mmoe_heads(p, r["v1"], r["vs"], mu)
            return np.array([ref.bce(z[:, k], split.labels[:, k]) for k in range(2)])

        cot = ref.fd_grad(head_losses, {"v1": v1.copy(), "vs": vs.copy()})  # [2, B, d]
        g1p, g1pp, g2 = cot["v1"][0].ravel(), cot["vs"][0].ravel(), cot["vs"][1].ravel()
        g_rp, g_rpp, xi = router(g1p, g1pp, g2, pairing)
        ct_v1 = cot["v1"].sum(0) + g_rp.reshape(v1.shape)
        ct_vs = cot["vs"].sum(0) + g_rpp.reshape(vs.shape)

        def pulled(q):  # <routed cotangent, (v1, v_s)(q)>: its gradient is the trunk's VJP
            a, b = ref.split_mmoe_reps(q, split.cat, split.dense, split.user, VOCABS, "single")
            return float(np.sum(ct_v1 * a) + np.sum(ct_vs * b))

        trunk = ref.fd_grad(pulled, p)
        heads = ref.fd_grad(lambda q: task_losses(q, split, mu).sum(), p)
        grad = {k: heads[k] if k in TOWERS else trunk[k] for k in p}
    sigma = sigma + np.array([np.linalg.norm(g1p + g_rp), np.linalg.norm(g1pp + g_rpp)])
    mu_next = np.exp(sigma - sigma.max()) / np.exp(sigma - sigma.max()).sum()
    info = {"grad": grad, "xi": xi, "g": (g1p, g1pp, g2), "routed": (g_rp, g_rpp)}
    return add(p, grad, -LR), losses, sigma, mu_next, info


# ----------------------------------------------------------------------------
# The loop against the reference.
# ----------------------------------------------------------------------------


def loop_two_steps(space, pairing, seed):
    """The library's two full-batch steps: ``(params0, params1, params2, records, mu1_state)``."""
    d = tiny_data(seed)
    towers = (
        {"dedicated": "v1", "shared": "vs"}
        if space == "activations"
        else {"dedicated": "tower_dedicated", "shared": "tower_shared", "aux:1": "aux_towers/1"}
    )
    tx = drgrad_jax.drgrad(towers, space=space, pairing=pairing, updater="cumulative", num_tasks=2)
    config = drgrad_jax.TrainConfig(
        MODEL, optax.sgd(LR), tx, space=space, batch_size=N_TRAIN, num_epochs=2
    )
    trainer = drgrad_jax.make_train(config, d)
    state0 = trainer.init(jax.random.key(seed))
    state1, rec1 = trainer.run_epochs(state0, 1)
    mu1_state = np.asarray(drgrad_jax.mixing_weights(state1.opt_state))
    state2, rec2 = trainer.run_epochs(state1, 1)
    params = [ref.as_float64(s.params) for s in (state0, state1, state2)]
    return d, params, (rec1, rec2), mu1_state


def assert_grad_close(p_before, p_after, grad):
    """The loop's update read as a gradient, ``(p_before - p_after) / lr``, against ``grad``."""
    implied = jax.tree.map(lambda a, b: (a - b) / LR, p_before, p_after)
    pairs = list(zip(ref.leaves(implied), ref.leaves(grad), strict=True))
    for (path, got), (path_want, want) in pairs:
        assert path == path_want
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=str(path))


def check_two_steps(space, pairing, seed, cases):
    """Two loop steps against two reference steps; ``cases``: the expected (xi1 < 0, xi2 < 0)."""
    d, (p0, p1, p2), (rec1, rec2), mu1_state = loop_two_steps(space, pairing, seed)
    half, zero = np.array([0.5, 0.5]), np.zeros(2)
    q1, losses1, sigma1, mu1, info1 = reference_step(p0, d.train, half, zero, space, pairing)
    _, losses2, _, mu2, info2 = reference_step(q1, d.train, mu1, sigma1, space, pairing)
    assert [tuple(bool(x < 0) for x in i["xi"]) for i in (info1, info2)] == cases
    # Each step's update is -lr times the routed gradient: T1' (or v1) got g1' + g_R',
    # T1'' (or v_s) g1'' + g_R'', every other parameter its plain summed gradient.
    assert_grad_close(p0, p1, info1["grad"])
    assert_grad_close(p1, p2, info2["grad"])
    # An epoch's record: (train_loss, val_auc, test_auc, val_loss, test_loss, mu, skipped).
    train_loss1, _, _, val_loss1, _, mu_rec1, _ = (np.asarray(r)[0] for r in rec1)
    train_loss2, _, _, _, _, mu_rec2, _ = (np.asarray(r)[0] for r in rec2)
    np.testing.assert_allclose(train_loss1, losses1, rtol=2e-6)
    # The cumulative updater: mu = softmax(sigma', sigma'') of the summed routed norms.
    for got, want in ((mu1_state, mu1), (mu_rec1, mu1), (mu_rec2, mu2)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # The next forward passes read the new (mu', mu''): the second step's training
    # losses, and the evaluation after the first step.
    np.testing.assert_allclose(train_loss2, losses2, rtol=2e-6)
    np.testing.assert_allclose(val_loss1, task_losses(q1, d.val, mu1), rtol=2e-6)
    return d, q1, info1, mu1


def test_paper_drgrad_steps_in_make_train_match_the_reference():
    """Parameter space, consistent pairing, cumulative updater: the paper's DRGrad.

    The first step falls in Table 1's row (xi1 < 0, xi2 >= 0), where every term of
    R2 is active; the second in row (xi1 >= 0, xi2 < 0).
    """
    d, q1, info1, mu1 = check_two_steps("params", "consistent", 26, [(True, False), (False, True)])
    (g1p, g1pp, _), (g_rp, g_rpp) = info1["g"], info1["routed"]
    # The routed terms are far from the tolerance: the check sees a router left out.
    assert np.linalg.norm(g_rp) > 0.5 * np.linalg.norm(g1p)
    assert np.linalg.norm(g_rpp) > 0.01 * np.linalg.norm(g1pp)
    # ... and mu' in the forward pass: with mu = (0.5, 0.5) or swapped, the validation
    # loss moves by 100 times the tolerance of its check (rtol 2e-6 of about 0.73).
    for mu in (np.array([0.5, 0.5]), mu1[::-1]):
        assert abs(task_losses(q1, d.val, mu)[0] - task_losses(q1, d.val, mu1)[0]) > 1.5e-4


def test_as_printed_pairing_in_activation_space_matches_the_reference():
    """``pairing="as_printed"`` at (v1, v_s): Eq. 1 read literally, xi1 and lam1 from g2.

    Both steps fall where every as-printed term is active (cos(g1', g2) < 0,
    cos(g1', g1'') >= 0), and there the consistent pairing routes otherwise.
    """
    _, _, info1, _ = check_two_steps("activations", "as_printed", 1, [(True, False), (True, False)])
    g_rp, g_rpp = info1["routed"]
    consistent_rp, _, _ = router(*info1["g"], "consistent")
    assert np.linalg.norm(consistent_rp - g_rp) > 0.2 * np.linalg.norm(g_rp)
    assert np.linalg.norm(g_rpp) > 0.05 * np.linalg.norm(info1["g"][1])
