"""Slow, obvious NumPy forward passes of the multi-task networks, from their papers.

Each function reads a model's parameters as the plain dict ``params_of`` gives
(``nnx.to_pure_dict``; lists appear as dicts keyed 0, 1, ...) and recomputes
the logits in float64 with explicit loops over experts and layers, following
docs/drgrad.md, *Split-MMoE* and *Personalized gate*, MMoE (Ma et al. 2018),
PLE (Tang et al. 2020) and Shared-Bottom (Caruana 1997). Nothing here calls
``drgrad_jax``; only the parameter layout (which dict key holds which weight,
the order of experts a gate mixes) is taken from the models.

``fd_grad`` gives gradients by central finite differences, so a reference
training step uses no automatic differentiation either.
"""

from __future__ import annotations

import numpy as np

ACT = {"relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh}


def as_float64(tree):
    """The parameter dict with every leaf a float64 NumPy array."""
    if isinstance(tree, dict):
        return {k: as_float64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def bce(z, y):
    """Mean binary cross-entropy of logits ``z`` against labels ``y``."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def mlp(p, x, act="relu", activate_last=True):
    """Dense layers ``x W + b`` in index order, the activation after each (maybe not the last)."""
    n = len(p["layers"])
    for i in range(n):
        x = x @ p["layers"][i]["kernel"] + p["layers"][i]["bias"]
        if i < n - 1 or activate_last:
            x = ACT[act](x)
    return x


def tower(p, x, act="relu"):
    """A task tower: hidden layers, then one logit with no activation. ``[B]``."""
    return mlp(p["mlp"], x, act, activate_last=False)[:, 0]


def experts(p, x, act="relu"):
    """``[B, E, d]``: expert e is its own MLP, every layer followed by the activation."""
    out = []
    for e in range(p["kernels"][0].shape[0]):
        h = x
        for i in range(len(p["kernels"])):
            h = ACT[act](h @ p["kernels"][i][e] + p["biases"][i][e])
        out.append(h)
    return np.stack(out, axis=1)


def gate(p, x, pool, act="relu"):
    """MMoE gate: ``sum_e softmax(MLP(x))_e pool[:, e]``."""
    weights = softmax(mlp(p["mlp"], x, act, activate_last=False))
    return sum(weights[:, e, None] * pool[:, e] for e in range(pool.shape[1]))


def embed(p, cat, dense, vocab_sizes):
    """``h = [E_1[cat_1], ..., E_F[cat_F], dense]``; field f's rows follow fields < f."""
    table = p["encoder"]["table"]["embedding"] if vocab_sizes else None
    parts, offset = [], 0
    for f, vocab in enumerate(vocab_sizes):
        parts.append(table[offset + np.asarray(cat)[:, f]])
        offset += vocab
    return np.concatenate(parts + [np.asarray(dense, np.float64)], axis=1)


def personalized_gate(p, v_pp, kind="single"):
    """DRGrad's gate, ``2 sigmoid(v_PP W_PP)``; PEPNet's Gate NU, ``2 sigmoid(W2 relu(W1 v + b1) + b2)``.

    The library's projection also has a bias (zero at initialization); it is read here.
    """
    layers = p["mlp"]["layers"]
    if kind == "single":
        assert len(layers) == 1
        return 2.0 * sigmoid(v_pp @ layers[0]["kernel"] + layers[0]["bias"])
    assert len(layers) == 2
    hidden = np.maximum(v_pp @ layers[0]["kernel"] + layers[0]["bias"], 0.0)
    return 2.0 * sigmoid(hidden @ layers[1]["kernel"] + layers[1]["bias"])


def shared_bottom(p, cat, dense, vocab_sizes, act="relu"):
    """``z_k = T_k(f(x))``: one shared MLP (activation after every layer), one tower per task."""
    h = mlp(p["bottom"], embed(p, cat, dense, vocab_sizes), act)
    return np.stack([tower(p["towers"][k], h, act) for k in range(len(p["towers"]))], axis=1)


def ple(p, cat, dense, vocab_sizes, act="relu"):
    """PLE (Tang et al. 2020, Eq. 4-6): CGC levels, then one tower per task.

    At level l task k's gate, reading task k's input, mixes task k's experts and
    the shared experts; below the last level a shared gate, reading the shared
    input, mixes every task's experts and the shared ones into the next shared input.
    """
    h = embed(p, cat, dense, vocab_sizes)
    num_tasks, num_levels = len(p["towers"]), len(p["shared_experts"])
    task_in, shared_in = [h] * num_tasks, h
    for level in range(num_levels):
        own = [experts(p["specific_experts"][level][k], task_in[k], act) for k in range(num_tasks)]
        common = experts(p["shared_experts"][level], shared_in, act)
        mixed = [
            gate(p["task_gates"][level][k], task_in[k], np.concatenate([own[k], common], 1), act)
            for k in range(num_tasks)
        ]
        if level < num_levels - 1:
            everything = np.concatenate(own + [common], axis=1)
            shared_in = gate(p["shared_gates"][level], shared_in, everything, act)
        task_in = mixed
    return np.stack([tower(p["towers"][k], task_in[k], act) for k in range(num_tasks)], axis=1)


def split_mmoe_reps(p, cat, dense, user, vocab_sizes, ppnet=None, act="relu"):
    """DRGrad's v1 and v_s: two gate mixtures over one expert pool, v_s gated per user."""
    h = embed(p, cat, dense, vocab_sizes)
    pool = experts(p["experts"], h, act)
    v1 = gate(p["gate_dedicated"], h, pool, act)
    vs = gate(p["gate_shared"], h, pool, act)
    if ppnet is not None:
        v_pp = p["user_embed"]["embedding"][np.asarray(user)]
        vs = vs * personalized_gate(p["personalized_gate"], v_pp, ppnet)
    return v1, vs


def split_mmoe_heads(p, v1, vs, mu, mix="logits", act="relu"):
    """z1 from T1'(v1) and T1''(v_s) mixed by (mu', mu''); z_j = T_j(v_s) for the auxiliary tasks."""
    z_ded, z_sh = tower(p["tower_dedicated"], v1, act), tower(p["tower_shared"], vs, act)
    if mix == "logits":
        z1 = mu[0] * z_ded + mu[1] * z_sh
    else:  # p1 = mu' sigma(z1') + mu'' sigma(z1''), returned as a logit
        p1 = mu[0] * sigmoid(z_ded) + mu[1] * sigmoid(z_sh)
        z1 = np.log(p1) - np.log1p(-p1)
    aux = [tower(p["aux_towers"][str(j)], vs, act) for j in range(1, len(p["aux_towers"]) + 1)]
    return np.stack([z1] + aux, axis=1)


def split_mmoe(p, cat, dense, user, vocab_sizes, mu, mix="logits", ppnet=None, act="relu"):
    """Split-MMoE logits ``[B, K]`` (docs/drgrad.md, *Split-MMoE*)."""
    v1, vs = split_mmoe_reps(p, cat, dense, user, vocab_sizes, ppnet, act)
    return split_mmoe_heads(p, v1, vs, mu, mix, act)


def leaves(tree, path=()):
    """``(path, leaf)`` of a nested dict, keys in sorted order (a fixed flattening order)."""
    if isinstance(tree, dict):
        for k in sorted(tree, key=str):
            yield from leaves(tree[k], path + (k,))
    else:
        yield path, tree


def fd_grad(f, tree, h=1e-6):
    """Central finite differences of ``f(tree)`` (a scalar or a vector) at every leaf entry.

    Returns a tree like ``tree`` whose leaves carry ``f``'s shape in front:
    ``[*f.shape, *leaf.shape]``. ``tree`` is perturbed in place and restored.
    """
    shape = np.shape(f(tree))
    grads = {}
    for path, leaf in leaves(tree):
        g = np.zeros(shape + leaf.shape)
        for idx in np.ndindex(leaf.shape):
            old = leaf[idx]
            leaf[idx] = old + h
            up = np.asarray(f(tree))
            leaf[idx] = old - h
            down = np.asarray(f(tree))
            leaf[idx] = old
            g[(Ellipsis,) + idx] = (up - down) / (2 * h)
        node = grads
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = g
    return grads
