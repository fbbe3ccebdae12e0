"""Slow, obvious NumPy references of the published multi-task gradient rules.

Each reference works on the flattened task-gradient matrix ``G`` ``[K, n]`` in
float64, follows the paper's own statement of the rule (loops, projections,
generic solvers), and shares no code with the JAX implementations.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize as so


def linear_scalarization(g, weights):
    return weights @ g


def pcgrad(g, orders):
    k = g.shape[0]
    out = np.zeros_like(g[0])
    for i in range(k):
        gi = g[i].copy()
        for j in orders[i]:
            if j == i:
                continue
            dot = gi @ g[j]
            if dot < 0 and g[j] @ g[j] > 0:
                gi = gi - dot / (g[j] @ g[j]) * g[j]
        out += gi
    return out


def gradvac(g, orders, targets, beta):
    k = g.shape[0]
    targets = targets.copy()
    out = np.zeros_like(g[0])
    for i in range(k):
        gi = g[i].copy()
        for j in orders[i]:
            if j == i:
                continue
            rho = gi @ g[j] / (np.linalg.norm(gi) * np.linalg.norm(g[j]))
            phi = targets[i, j]
            if rho < phi:
                gi = (
                    gi
                    + (
                        np.linalg.norm(gi)
                        * (phi * np.sqrt(1 - rho**2) - rho * np.sqrt(1 - phi**2))
                        / (np.linalg.norm(g[j]) * np.sqrt(1 - phi**2))
                    )
                    * g[j]
                )
            targets[i, j] = (1 - beta) * phi + beta * rho
        out += gi
    return out, targets


def cagrad(g, c):
    """Solves the PRIMAL max_d min_k <g_k, d> s.t. ||d - g0|| <= c ||g0|| with SLSQP."""
    k, n = g.shape
    g0 = g.mean(0)
    radius = c * np.linalg.norm(g0)
    x0 = np.concatenate([g0, [(g @ g0).min()]])
    res = so.minimize(
        lambda x: -x[-1],
        x0,
        jac=lambda x: np.concatenate([np.zeros(n), [-1.0]]),
        constraints=[
            {
                "type": "ineq",
                "fun": lambda x: g @ x[:-1] - x[-1],
                "jac": lambda x: np.concatenate([g, -np.ones((k, 1))], axis=1),
            },
            {
                "type": "ineq",
                "fun": lambda x: radius**2 - np.sum((x[:-1] - g0) ** 2),
                "jac": lambda x: np.concatenate([-2 * (x[:-1] - g0), [0.0]]),
            },
        ],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    return res.x[:-1]


def mgda(g):
    """Min-norm point of the convex hull, by SLSQP over the simplex."""
    k = g.shape[0]
    m = g @ g.T
    res = so.minimize(
        lambda w: w @ m @ w,
        np.full(k, 1.0 / k),
        jac=lambda w: 2 * m @ w,
        bounds=[(0, None)] * k,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(k)}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x @ g


def nash_mtl(g):
    """Solves G G^T alpha = 1 / alpha with a generic root finder."""
    m = g @ g.T
    alpha = so.fsolve(lambda a: m @ a - 1 / a, 1 / np.sqrt(np.diag(m)), xtol=1e-13)
    return alpha @ g


def imtl_g(g):
    """The closed form alpha_{2:K} = g_1 U^T (D U^T)^{-1} of the paper."""
    if g.shape[0] == 1:
        return g[0]
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = g[0] - g[1:]
    uu = u[0] - u[1:]
    alpha = g[0] @ uu.T @ np.linalg.inv(d @ uu.T)
    alpha = np.concatenate([[1 - alpha.sum()], alpha])
    return alpha @ g


def aligned_mtl(g):
    """B = sigma_min V Lambda^{-1/2} V^T on the (full-rank) Gramian; d = (B G)^T 1."""
    lam, v = np.linalg.eigh(g @ g.T)
    b = np.sqrt(lam.min()) * v @ np.diag(lam**-0.5) @ v.T
    return (b @ g).sum(0)


def upgrad(g):
    """Mean of the projections of each g_i onto the dual cone {v : G v >= 0}, via NNLS.

    The projection of ``x`` is ``x + G^T lam`` with ``lam = argmin_{lam >= 0}
    ||x + G^T lam||`` (the projection's KKT conditions).
    """
    k = g.shape[0]
    out = np.zeros_like(g[0])
    for i in range(k):
        lam, _ = so.nnls(g.T, -g[i])
        out += g[i] + g.T @ lam
    return out / k


def dwa(g, loss_history, temperature):
    """Weights from the last two stored losses (all ones for the first two updates)."""
    k = g.shape[0]
    if len(loss_history) < 2:
        w = np.ones(k)
    else:
        r = np.asarray(loss_history[-1]) / np.asarray(loss_history[-2])
        e = np.exp(r / temperature)
        w = k * e / e.sum()
    return w @ g


def uncertainty_weighting(g, log_vars):
    return (0.5 * np.exp(-log_vars)) @ g


def mean(g):
    return g.mean(0)


def softmax(z):
    e = np.exp(z - np.max(z))
    return e / e.sum()


def random_weighting(g, z):
    """Algorithm 2 of Lin et al.: weights softmax(z) of a standard normal draw z."""
    return softmax(z) @ g


def dualproj(g, pref):
    """The projection of G^T u onto the dual cone {v : G v >= 0}, via NNLS (as ``upgrad``)."""
    x = pref @ g
    lam, _ = so.nnls(g.T, -x)
    return x + g.T @ lam


def conflict_free(g, pref):
    """ConFIG Eq. 2: the pseudo-inverse of the unit-gradient matrix, then the summed projections."""
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    units = np.divide(g, norms, out=np.zeros_like(g), where=norms > 0)
    direction = np.linalg.pinv(units.T).T @ pref
    unit = direction / np.linalg.norm(direction)
    return np.sum(g @ unit) * unit


def trimmed_mean(g, b):
    k, n = g.shape
    out = np.empty(n)
    for j in range(n):
        col = sorted(g[:, j])
        out[j] = np.mean(col[b : k - b])
    return out


def krum(g, f, m, squared=True):
    """Blanchard et al.: score = summed (squared) distances to the K - f - 2 nearest others."""
    k = g.shape[0]
    scores = []
    for i in range(k):
        dists = [np.sum((g[i] - g[j]) ** 2) for j in range(k) if j != i]
        if not squared:
            dists = [np.sqrt(x) for x in dists]
        scores.append(sum(sorted(dists)[: k - f - 2]))
    chosen = sorted(range(k), key=lambda i: (scores[i], i))[:m]
    return np.mean(g[chosen], axis=0)


def graddrop(g, u, leak):
    """Chen et al. Algorithm 1, lines 10-15, coordinate by coordinate."""
    k, n = g.shape
    out = np.zeros(n)
    for j in range(n):
        total, magnitude = g[:, j].sum(), np.abs(g[:, j]).sum()
        purity = 0.5 * (1 + total / magnitude) if magnitude > 0 else 0.5
        for i in range(k):
            keep = (purity > u[j] and g[i, j] > 0) or (purity < u[j] and g[i, j] < 0)
            out[j] += (leak[i] + (1 - leak[i]) * keep) * g[i, j]
    return out


def fairgrad(g, alpha):
    """Ban & Ji Eq. 4: G G^T w = w^(-1/alpha), w > 0, by bounded least squares (tight tolerances)."""
    k = g.shape[0]
    if alpha == 0:
        return g.mean(0)
    m = g @ g.T
    res = so.least_squares(
        lambda w: m @ w - w ** (-1.0 / alpha),
        np.full(k, 1.0 / k),
        bounds=(0, np.inf),
        ftol=1e-15,
        xtol=1e-15,
        gtol=1e-15,
    )
    return res.x @ g


def loss_weights(scalarize, losses, h=1e-6):
    """The task weights of a loss scalarisation: its gradient w.r.t. the losses, by central
    differences in float64 (so the reference never shares the analytic form under test)."""
    losses = np.asarray(losses, np.float64)
    out = np.empty_like(losses)
    for k in range(len(losses)):
        e = np.zeros_like(losses)
        e[k] = h
        out[k] = (scalarize(losses + e) - scalarize(losses - e)) / (2 * h)
    return out


def geometric_mean_loss(losses):
    """GLS, Chennupati et al. Eq. 3: the K-th root of the product of the losses."""
    return np.prod(losses) ** (1.0 / len(losses))


def stch_loss(losses, mu, pref, ideal):
    """STCH, Lin et al. Eq. 7: mu log sum exp(lambda (L - z) / mu)."""
    return mu * np.log(np.sum(np.exp(pref * (losses - ideal) / mu)))


def imtl_l_loss(losses, log_scales):
    """IMTL-L, Liu et al. Eq. 8: sum_k exp(s_k) L_k - s_k."""
    return np.sum(np.exp(log_scales) * losses - log_scales)


def famo(loss_seq, lr, weight_decay, b=None, eps=1e-8, betas=(0.9, 0.999), adam_eps=1e-8):
    """FAMO (Liu et al. Alg. 1) on a sequence of losses: the weights at each update and the
    logits after it, the logits stepping (Adam with L2 decay) on the change between updates."""
    loss_seq = np.asarray(loss_seq, np.float64)
    k = loss_seq.shape[1]
    b = np.zeros(k) if b is None else b
    xi, m, v, t = np.zeros(k), np.zeros(k), np.zeros(k), 0
    weights, logits = [], []
    for step, losses in enumerate(loss_seq):
        if step > 0:
            delta = np.log(loss_seq[step - 1] - b + eps) - np.log(losses - b + eps)
            z = softmax(xi)
            jac = np.diag(z) - np.outer(z, z)  # d softmax / d xi
            grad = jac.T @ delta + weight_decay * xi
            t += 1
            m = betas[0] * m + (1 - betas[0]) * grad
            v = betas[1] * v + (1 - betas[1]) * grad**2
            m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
            xi = xi - lr * m_hat / (np.sqrt(v_hat) + adam_eps)
        z = softmax(xi)
        c = np.sum(z / (losses - b + eps))  # held constant, as in the paper

        def objective(L, z=z, c=c):
            return np.sum(z * np.log(L - b + eps)) / c

        weights.append(loss_weights(objective, losses))
        logits.append(xi.copy())
    return np.stack(weights), np.stack(logits)


def db_mtl(grad_seq, loss_seq, beta, beta_sigma, eps=1e-8):
    """DB-MTL (Lin et al. Alg. 1): EMA of the log-loss gradients g_k / L_k, then every task
    scaled to the largest EMA norm. Returns the update of every step."""
    ema = np.zeros_like(grad_seq[0])
    out = []
    for t, (g, losses) in enumerate(zip(grad_seq, loss_seq), start=1):
        rate = beta / t**beta_sigma
        log_grads = g / (losses[:, None] + eps)
        ema = rate * ema + (1 - rate) * log_grads
        norms = np.linalg.norm(ema, axis=1)
        out.append(sum(norms.max() / (norms[k] + eps) * ema[k] for k in range(len(g))))
    return out


def gradnorm(layer_seq, loss_seq, alpha, lr, floor=1e-4):
    """GradNorm (Chen et al. Eqs. 1-2) on per-task gradients at the layer W: the weights used
    at every step (before that step's update of the weights)."""
    k = layer_seq[0].shape[0]
    w = np.ones(k)
    used = []
    initial = None
    for layer_grads, losses in zip(layer_seq, loss_seq):
        used.append(w.copy())
        initial = losses if initial is None else initial
        norms = np.array([np.linalg.norm(w[i] * layer_grads[i]) for i in range(k)])
        ratios = (losses / initial) / np.mean(losses / initial)
        target = norms.mean() * ratios**alpha  # constant in L_grad
        # d/dw_i sum_j |w_j n_j - T_j| with the target held fixed.
        grad = np.array(
            [np.sign(norms[i] - target[i]) * np.linalg.norm(layer_grads[i]) for i in range(k)]
        )
        w = np.maximum(w - lr * grad, floor)
        w = k * w / w.sum()
    return used


def project_simplex(v, iters=200):
    """Euclidean projection onto the probability simplex: bisection on the shift theta with
    sum(max(v - theta, 0)) = 1 (an independent route from the sort-based formula)."""
    lo, hi = np.min(v) - 1.0, np.max(v)
    for _ in range(iters):
        theta = 0.5 * (lo + hi)
        if np.sum(np.maximum(v - theta, 0.0)) > 1.0:
            lo = theta
        else:
            hi = theta
    return np.maximum(v - 0.5 * (lo + hi), 0.0)


def mgda_weights(g):
    """Min-norm weights on the simplex, by SLSQP (as ``mgda``)."""
    k = g.shape[0]
    m = g @ g.T
    res = so.minimize(
        lambda w: w @ m @ w,
        np.full(k, 1.0 / k),
        jac=lambda w: 2 * m @ w,
        bounds=[(0, None)] * k,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(k)}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x


def modo(g_seq, gamma, rho):
    """MoDo (Chen et al. Alg. 1) with one-batch Gramians: the weights after every step."""
    k = g_seq[0].shape[0]
    lam = np.full(k, 1.0 / k)
    out = []
    for g in g_seq:
        lam = project_simplex(lam - gamma * (g @ (g.T @ lam) + rho * lam))
        out.append(lam.copy())
    return out


def moco(g_seq, beta, gamma, rho, beta_sigma, gamma_sigma):
    """MoCo (Fernando et al. Alg. 1): tracked gradients y and projected weights; the updates."""
    k = g_seq[0].shape[0]
    y, lam, out = np.zeros_like(g_seq[0]), np.full(k, 1.0 / k), []
    for t, g in enumerate(g_seq, start=1):
        y = y - beta / t**beta_sigma * (y - g)
        lam = project_simplex(lam - gamma / t**gamma_sigma * (y @ (y.T @ lam) + rho * lam))
        out.append(lam @ y)
    return out


def sdmgrad(g_seq, lam, lr, momentum, n_iter, pref):
    """SDMGrad (Xiao et al. Alg. 1) with one-batch Gramians: inner projected momentum SGD on
    ||G^T (w + lam pref)||^2 / 2 after dividing by the squared mean norm; the task weights."""
    k = g_seq[0].shape[0]
    w, out = np.full(k, 1.0 / k), []
    for g in g_seq:
        m = g @ g.T
        a = m / (np.mean(np.sqrt(np.diag(m))) ** 2 + 1e-8)
        velocity = None
        for _ in range(n_iter):
            grad = a @ (w + lam * pref)
            velocity = grad if velocity is None else momentum * velocity + grad
            w = project_simplex(w - lr * velocity)
        out.append((w + lam * pref) / (1 + lam))
    return out


def excess_mtl(g_seq, eta, n_warmup, eps=1e-7):
    """ExcessMTL (He et al. Eqs. 6-9): AdaGrad-style excess risks, exponentiated weights."""
    k = g_seq[0].shape[0]
    w = np.full(k, 1.0 / k)
    sq_sum = np.zeros_like(g_seq[0])
    baseline, warm_sum, out = None, np.zeros(k), []
    for step, g in enumerate(g_seq):
        sq_sum = sq_sum + g**2
        risk = np.array([np.sum(g[i] ** 2 / np.sqrt(sq_sum[i] + eps)) for i in range(k)])
        if step < n_warmup:
            warm_sum += risk
        else:
            if baseline is None and n_warmup == 0:
                baseline = risk
            else:
                if baseline is None:
                    baseline = warm_sum / n_warmup
                risk = risk / (baseline + eps)
            logits = np.log(w) + eta * risk
            w = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        out.append(w.copy())
    return out


def cr_mogm(g_seq, alpha, weights_of):
    """CR-MOGM (Zhou et al. Alg. 2): EMA of another method's weights, lambda_0 = first weights."""
    lam, out = None, []
    for g in g_seq:
        hat = weights_of(g)
        lam = hat if lam is None else alpha * lam + (1 - alpha) * hat
        out.append(lam.copy())
    return out
