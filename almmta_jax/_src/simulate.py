"""The CDP simulator: a sequential front-door world with exact attribution truth.

"Consumption drives production": a user watches L items, picked by a confounded
recommender, and may upload. Watching builds an additive, recency-decayed mediator
(the inspiration) with no hidden-confounder term; the upload is logistic in the
mediator with no direct touchpoint-to-outcome edge. A hidden confounder ``w``
drives both the exposure policy and the upload. Every front-door condition has a
switch that breaks it (``gamma_TY``, ``gamma_WM``, ``eta_p``, ``kappa``,
``gamma_w``), and a randomized arm (uniform exposure) gives cluster-level truth.
Two more switches set what an adversary or a deconfounder has to act on: a
logged touch field caused by the upload (``outcome_leak``), and how closely the
confounder's exposure loading follows the inspiration direction
(``confounder_alignment``).

Because the outcome is logistic in a Gaussian-noised linear index, every
interventional probability is ``Psi(a, s) = E_{z~N(0,s^2)} sigmoid(a + z)``,
computed by Gauss-Hermite quadrature: the deletion truths are exact, never a
second noisy sample.

Generation is seeded (NumPy PCG64), computed in float64, chunked over users, and
stores model inputs in float32 and truths in float64.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import numpy as np

from almmta_jax._src.data import JourneyBatch, time_features
from almmta_jax._src.truth import cluster_truths, gauss_hermite_psi, sigmoid
from almmta_jax._src.world import draw_arm, draw_leak, draw_proxy, make_world, solve_theta0

SIM_TOUCH_FIELDS = ("item", "cluster", "music", "template")
"""Column order of ``touch_ids`` in simulator batches; a world with ``outcome_leak > 0``
appends a fifth column, ``"leak"`` (see ``sim_to_batch``)."""

SIM_LEAK_STEPS = 20
"""The leak column holds 0 where v = 0, else 1 + round(SIM_LEAK_STEPS * v) (SIM_LEAK_STEPS + 2 ids)."""

SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "rct": 3}
"""Codes of ``SimData.split``: observational 80/10/10, and the randomized arm."""

_PRESETS = ("default", "unit_test", "scale")


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Constants of the CDP simulator (docs/almmta.md, *CDP simulator*); defaults are the "default" preset.

    Use ``SimConfig.preset(name)`` for the named presets and
    ``dataclasses.replace(config, ...)`` to turn a switch.

    Attributes:
      n_users: observational users N_U.
      n_rct: users in the randomized (uniform exposure) arm; ``None`` means ``n_users``.
      n_items: catalog size N_I.
      n_clusters: item clusters K_I (the treatment clusters of the evaluation).
      max_len: journey length L (every journey has L touches unless ``variable_length``).
      variable_length: draw each journey's length from U{min_len..L}.
      min_len: shortest journey when ``variable_length``.
      d_e: content-embedding width.
      d_x: observed user-feature width.
      n_music, n_template: music / template id vocabularies.
      music_per_cluster, template_per_cluster: palette sizes of each cluster.
      palette_prob: probability an item draws its ids from its cluster's palette.
      horizon_days: observation window H.
      decay_days: recency scale of rho(dt) = exp(-dt / decay_days).
      kappa: exposure sharpness (positivity knob; 0 = uniform).
      gamma_w: hidden confounding of exposure (its sign sets the naive bias).
      gamma_WM: W -> M edge (breaks front-door conditions 2-3; 0 by default).
      gamma_TY: direct T -> Y edge through d_tau (breaks condition 1; 0 by default).
      eta_p: proxy noise, probability the upload's source is a random catalog item.
      theta_M, theta_w: outcome weights of the mediator and of w.
      sigma_M: sd of the mediator noise epsilon.
      theta_x_sd: sd of each entry of theta_x.
      outcome_leak: probability that a journey carries the post-outcome log field
        ``v_uj = Y_u B_u y'_uj`` (``B_u ~ Bern(outcome_leak)``), appended to its
        touches' ids by ``sim_to_batch``; it has no edge into Y, so no truth
        moves (0: no field, today's batches).
      confounder_alignment: rho in [0, 1]: w loads exposure on
        ``s_w = standardize(c_w^T e)``, whose correlation over the catalog with the
        inspiration potency ``s = standardize(c^T e)`` is exactly rho (1: on s
        itself, today's world).
      base_rate: target P(Y=1) on the observational arm (theta_0 solved numerically).
      gh_nodes: Gauss-Hermite nodes of Psi.
      chunk_users: users generated per chunk (memory bound).
    """

    n_users: int = 20_000
    n_rct: int | None = None
    n_items: int = 2_000
    n_clusters: int = 50
    max_len: int = 20
    variable_length: bool = False
    min_len: int = 5
    d_e: int = 16
    d_x: int = 8
    n_music: int = 200
    n_template: int = 50
    music_per_cluster: int = 4
    template_per_cluster: int = 2
    palette_prob: float = 0.8
    horizon_days: float = 7.0
    decay_days: float = 2.0
    kappa: float = 1.0
    gamma_w: float = 1.0
    gamma_WM: float = 0.0
    gamma_TY: float = 0.0
    eta_p: float = 0.2
    theta_M: float = 0.8
    theta_w: float = 1.0
    sigma_M: float = 0.5
    theta_x_sd: float = 0.3
    outcome_leak: float = 0.0
    confounder_alignment: float = 1.0
    base_rate: float = 0.10
    gh_nodes: int = 32
    chunk_users: int = 2_000

    def __post_init__(self):
        for name in ("n_users", "n_items", "n_clusters", "max_len", "d_e", "d_x"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SimConfig.{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("n_music", "n_template", "gh_nodes", "chunk_users"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SimConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.n_rct is not None and int(self.n_rct) < 0:
            raise ValueError(f"SimConfig.n_rct must be >= 0 or None, got {self.n_rct}.")
        if self.max_len > self.n_items:
            raise ValueError(
                f"SimConfig.max_len={self.max_len} exceeds n_items={self.n_items}; journeys "
                "hold distinct items."
            )
        if self.variable_length and not 1 <= self.min_len <= self.max_len:
            raise ValueError(
                f"SimConfig.min_len={self.min_len} must be in [1, max_len={self.max_len}]."
            )
        if self.music_per_cluster > self.n_music or self.template_per_cluster > self.n_template:
            raise ValueError(
                "SimConfig palettes exceed their vocabularies: music_per_cluster="
                f"{self.music_per_cluster} (n_music={self.n_music}), template_per_cluster="
                f"{self.template_per_cluster} (n_template={self.n_template})."
            )
        for name in ("palette_prob", "eta_p", "outcome_leak", "confounder_alignment"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"SimConfig.{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.confounder_alignment < 1.0 and (self.d_e < 2 or self.n_items < 3):
            raise ValueError(
                f"SimConfig.confounder_alignment={self.confounder_alignment} < 1 needs a "
                "catalog direction uncorrelated with c: d_e >= 2 and n_items >= 3, got "
                f"d_e={self.d_e}, n_items={self.n_items}."
            )
        if not 0.0 < self.base_rate < 1.0:
            raise ValueError(f"SimConfig.base_rate must be in (0, 1), got {self.base_rate}.")
        if self.kappa < 0:
            raise ValueError(f"SimConfig.kappa must be >= 0, got {self.kappa}.")
        for name in ("horizon_days", "decay_days", "sigma_M"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"SimConfig.{name} must be > 0, got {getattr(self, name)}.")

    @classmethod
    def preset(cls, name: Literal["default", "unit_test", "scale"] = "default", **overrides):
        """A named preset of the simulator, with optional field overrides.

        * ``"default"``: 20k users + a 20k randomized arm, 2,000 items in 50 clusters, L = 20.
        * ``"unit_test"``: 2,000 users + 2,000 randomized, 200 items, L = 8.
        * ``"scale"``: 1M users, 100k items in 1,000 clusters.
        """
        if name == "default":
            base = {}
        elif name == "unit_test":
            base = {"n_users": 2_000, "n_items": 200, "max_len": 8}
        elif name == "scale":
            base = {"n_users": 1_000_000, "n_items": 100_000, "n_clusters": 1_000}
        else:
            raise ValueError(f"Unknown SimConfig preset {name!r}; expected one of {_PRESETS}.")
        return cls(**{**base, **overrides})

    @property
    def num_rct(self) -> int:
        """Users in the randomized arm."""
        return self.n_users if self.n_rct is None else int(self.n_rct)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        """Vocabulary of each ``touch_ids`` column: (item, cluster, music, template[, leak])."""
        ids = (self.n_items, self.n_clusters, self.n_music, self.n_template)
        return ids + (SIM_LEAK_STEPS + 2,) if self.outcome_leak > 0 else ids


class SimData(NamedTuple):
    """One simulated world: observational users first, then the randomized arm.

    N = n_users + n_rct users, L = max_len, d_e / d_x as configured. Per-user
    arrays are indexed by user; per-item arrays by item id. Model inputs are
    float32, truths float64.

    Attributes:
      item, cluster, music, template: ``[N, L]`` int32 touch ids (0 at padding).
      dt: ``[N, L]`` float32 days from the touch to the window end, H - t.
      mask: ``[N, L]`` bool, valid touches (a prefix; times increase along L).
      x: ``[N, d_x]`` float32 observed user features.
      w: ``[N]`` float64 hidden confounder (evaluation only; never a model input).
      y: ``[N]`` int8 upload indicator.
      yp: ``[N, L]`` float32 proxy y' (0 where y = 0 or padded).
      yp_music, yp_template, yp_cos: ``[N, L]`` float32 proxy components
        (music match, template match, max(cos, 0)) for diagnostics.
      src: ``[N]`` int32 the source touch j* of the upload; -1 when there is no
        upload or the source was replaced by a random catalog item.
      up_item, up_music, up_template: ``[N]`` int32 the upload's source item and
        content ids (-1 without upload).
      up_e: ``[N, d_e]`` float32 upload content embedding (0 without upload).
      r: ``[N, L]`` float64 per-touch mediator contributions rho * h (0 at padding).
      direct: ``[N, L]`` float64 per-touch direct terms rho * d (they enter the
        outcome only through ``gamma_TY``; 0 at padding).
      mediator: ``[N]`` float64 the realized mediator M = mu(full) + epsilon.
      serve_prob: ``[N, L]`` float64 the exposure policy's single-draw softmax
        probability of each shown item (what a serving system would log; it
        depends on the hidden w); 1/N_I in the randomized arm, 0 at padding.
      arm: ``[N]`` int8, 0 observational, 1 randomized.
      split: ``[N]`` int8, ``SPLIT_CODES``: 0/1/2 train/val/test (observational
        80/10/10), 3 randomized arm.
      p_unit: ``[N]`` float64 P(Y=1 | do(T=full), x, w) (w fixed).
      p_x: ``[N]`` float64 P(Y=1 | do(T=full), x) (w integrated out).
      delta_unit: ``[N, L]`` float64 exact deletion effect
        P^unit(full) - P^unit(full minus touch j); 0 at padding.
      delta_x: ``[N, L]`` float64 the same with w integrated out (the estimand of
        models that see only x).
      removal_x: ``[N, L]`` float64 P^x(full) - P^x(full minus every touch of
        touch j's cluster).
      rct_cluster_uplift: ``[K]`` float64 randomized-arm cluster uplift: mean p_x of
        the arm's users exposed to the cluster minus that of the unexposed (NaN
        when a side is empty); exact in the outcome noise.
      obs_cluster_removal: ``[K]`` float64 mean over exposed observational users of
        the exact cluster-removal effect (NaN when no user is exposed).
      item_e: ``[N_I, d_e]`` float32 item content embeddings.
      item_cluster, item_music, item_template: ``[N_I]`` int32 item ids.
      leak: ``[N, L]`` float32 the post-outcome log field v = Y B y' (0 where
        the journey is not logged, y = 0 or padded; all 0 when outcome_leak = 0).
      leak_logged: ``[N]`` bool B, whether the journey's log field was joined.
      outcome_leak: float, the switch that generated ``leak`` (``sim_to_batch``
        appends the leak column when it is > 0).
      item_s: ``[N_I]`` float64 inspiration potency s (standardized c^T e).
      item_sw: ``[N_I]`` float64 the confounder's exposure loading, standardized
        c_w^T e (``item_s`` when confounder_alignment = 1).
      item_d: ``[N_I]`` float64 direct score d (used by ``gamma_TY``).
      item_b: ``[N_I]`` float64 item popularity b.
      theta_0: float, the solved intercept.
      theta_x: ``[d_x]`` float64 outcome weights of x.
      c_vec: ``[d_e]`` float64 the mediator direction c.
      cw_vec: ``[d_e]`` float64 the confounder's exposure direction c_w.
      D: ``[d_x, d_e]`` float64 the mediator's user-item interaction.
      A: ``[d_e, d_x]`` float64 the exposure policy's user-item interaction.
    """

    item: np.ndarray
    cluster: np.ndarray
    music: np.ndarray
    template: np.ndarray
    dt: np.ndarray
    mask: np.ndarray
    x: np.ndarray
    w: np.ndarray
    y: np.ndarray
    yp: np.ndarray
    yp_music: np.ndarray
    yp_template: np.ndarray
    yp_cos: np.ndarray
    src: np.ndarray
    up_item: np.ndarray
    up_music: np.ndarray
    up_template: np.ndarray
    up_e: np.ndarray
    r: np.ndarray
    direct: np.ndarray
    mediator: np.ndarray
    serve_prob: np.ndarray
    arm: np.ndarray
    split: np.ndarray
    p_unit: np.ndarray
    p_x: np.ndarray
    delta_unit: np.ndarray
    delta_x: np.ndarray
    removal_x: np.ndarray
    rct_cluster_uplift: np.ndarray
    obs_cluster_removal: np.ndarray
    leak: np.ndarray
    leak_logged: np.ndarray
    outcome_leak: float
    item_e: np.ndarray
    item_cluster: np.ndarray
    item_music: np.ndarray
    item_template: np.ndarray
    item_s: np.ndarray
    item_sw: np.ndarray
    item_d: np.ndarray
    item_b: np.ndarray
    theta_0: float
    theta_x: np.ndarray
    c_vec: np.ndarray
    cw_vec: np.ndarray
    D: np.ndarray
    A: np.ndarray


def simulate_cdp(config: SimConfig | None = None, seed: int = 0) -> SimData:
    r"""Simulates the CDP world (docs/almmta.md, *CDP simulator*) with exact deletion truths.

    Items carry content embeddings, clusters, music/template ids, popularity
    ``b``, potency ``s = standardize(c^T e)`` and a direct score ``d``. Users have
    observed ``x ~ N(0, I)`` and hidden ``w ~ N(0, 1)``. Exposure draws L distinct
    items by Gumbel-top-L on

    .. math:: \ell_u(\tau) = \kappa (e_\tau^\top A x_u + \gamma_w w_u s^w_\tau + b_\tau),

    with ``s^w = standardize(c_w^T e)`` correlated ``confounder_alignment`` with
    ``s`` over the catalog (``s`` itself by default), times ``t ~ U(0, H)`` sorted. The mediator is
    ``mu_u(S) = sum_{j in S} rho(dt_j) softplus(c^T e_j + x^T D e_j - 1) + gamma_WM w_u``
    with ``M = mu(full) + eps``, ``eps ~ N(0, sigma_M^2)``, and

    .. math:: a_u(S) = \theta_0 + \theta_M \mu_u(S) + \theta_x^\top x_u + \theta_w w_u
      + \gamma_{TY} \sum_{j \in S} \rho(dt_j) d_j,
      \quad Y_u \sim \mathrm{Bern}(\sigma(a_u(\mathrm{full}) + \theta_M \varepsilon_u)).

    ``theta_0`` is solved so the observational arm's mean of ``p_unit`` is
    ``base_rate``; the randomized arm (kappa = gamma_w = 0) reuses it. Truths
    (docs/almmta.md, *Exact truth*):

    * ``P^unit(S) = Psi(a(S), theta_M sigma_M)`` and
      ``delta_unit_j = P^unit(full) - P^unit(full minus j)``;
    * ``P^x(S) = Psi(a^x(S), s_x)`` with the w terms dropped from ``a`` and
      ``s_x^2 = theta_M^2 sigma_M^2 + (theta_w + theta_M gamma_WM)^2``; ``delta_x``.

    Args:
      config: a ``SimConfig`` (default preset when None).
      seed: integer seed of the PCG64 generator.

    Returns:
      A ``SimData`` of NumPy arrays: observational users first, then the
      randomized arm.

    Example:
      >>> sim = simulate_cdp(SimConfig.preset("unit_test", n_users=200, n_rct=50), seed=0)
      >>> sim.item.shape, sim.delta_x.shape
      ((250, 8), (250, 8))

    References:
      Liu et al., "ALM-MTA: Front-Door Causal Multi-Touch Attribution Method for
      Creator-Ecosystem Optimization", ICLR 2026, https://arxiv.org/abs/2605.08881.
      Pearl, "Causal diagrams for empirical research", Biometrika 82(4), 1995.
    """
    cfg = SimConfig() if config is None else config
    if not isinstance(cfg, SimConfig):
        raise TypeError(f"config must be a SimConfig, got {type(cfg).__name__}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
    # The main stream is PCG64(seed) as it always was; the alignment direction and
    # the leak draw from child streams, so turning a switch moves no other draw.
    root = np.random.SeedSequence(int(seed))
    rng = np.random.Generator(np.random.PCG64(root))
    align_rng, leak_rng = (np.random.Generator(np.random.PCG64(s)) for s in root.spawn(2))
    world = make_world(cfg, rng, align_rng)
    n_obs, n_rct = cfg.n_users, cfg.num_rct
    obs = draw_arm(cfg, world, n_obs, False, rng)
    if n_rct > 0:
        rct = draw_arm(cfg, world, n_rct, True, rng)
        x, w, items, mask, dt, r, direct, serve = (np.concatenate([a, b]) for a, b in zip(obs, rct))
    else:
        x, w, items, mask, dt, r, direct, serve = obs
    n = n_obs + n_rct
    arm = np.concatenate([np.zeros(n_obs, np.int8), np.ones(n_rct, np.int8)])

    tm, tw, gwm, gty = cfg.theta_M, cfg.theta_w, cfg.gamma_WM, cfg.gamma_TY
    s_unit = tm * cfg.sigma_M
    s_x = float(np.sqrt(s_unit**2 + (tw + tm * gwm) ** 2))
    mu_full = r.sum(axis=1)
    dir_full = direct.sum(axis=1)
    xt = x @ world.theta_x
    # a(S) without theta_0; the w terms kept separately for the x-truth.
    ax_full = tm * mu_full + xt + gty * dir_full
    w_terms = (tw + tm * gwm) * w
    theta_0 = solve_theta0(ax_full[:n_obs] + w_terms[:n_obs], s_unit, cfg.base_rate, cfg.gh_nodes)
    ax_full = ax_full + theta_0
    # Deleting touch j removes its mediator and direct contributions (additivity).
    ax_del = ax_full[:, None] - tm * r - gty * direct
    psi = lambda a, s: gauss_hermite_psi(a, s, cfg.gh_nodes)
    p_unit = psi(ax_full + w_terms, s_unit)
    p_x = psi(ax_full, s_x)
    delta_unit = np.where(mask, p_unit[:, None] - psi(ax_del + w_terms[:, None], s_unit), 0.0)
    delta_x = np.where(mask, p_x[:, None] - psi(ax_del, s_x), 0.0)
    # Removing the whole cluster of touch j.
    clus = world.item_cluster[items]
    touch_logit = tm * r + gty * direct
    ax_rem = np.empty_like(ax_del)
    for lo in range(0, n, cfg.chunk_users):
        sl = slice(lo, lo + cfg.chunk_users)
        c, m = clus[sl], mask[sl]
        same = (c[:, :, None] == c[:, None, :]) & m[:, None, :] & m[:, :, None]
        ax_rem[sl] = ax_full[sl, None] - np.einsum("njk,nk->nj", same, touch_logit[sl])
    removal_x = np.where(mask, p_x[:, None] - psi(ax_rem, s_x), 0.0)

    eps = cfg.sigma_M * rng.standard_normal(n)
    mediator = mu_full + gwm * w + eps
    logit_y = ax_full + w_terms + tm * eps
    y = (rng.random(n) < sigmoid(logit_y)).astype(np.int8)
    yp, comp_m, comp_t, comp_c, src, up_item, up_music, up_template, up_e = draw_proxy(
        cfg, world, items, mask, r, y, rng
    )

    split = np.full(n, SPLIT_CODES["rct"], dtype=np.int8)
    perm = rng.permutation(n_obs)
    n_tr, n_va = int(round(0.8 * n_obs)), int(round(0.1 * n_obs))
    split[perm[:n_tr]] = SPLIT_CODES["train"]
    split[perm[n_tr : n_tr + n_va]] = SPLIT_CODES["val"]
    split[perm[n_tr + n_va :]] = SPLIT_CODES["test"]

    rct_cluster_uplift, obs_cluster_removal = cluster_truths(
        p_x, removal_x, clus, mask, n_obs, cfg.n_clusters
    )
    leak_logged, leak = draw_leak(cfg, yp.astype(np.float32), y, leak_rng)

    f32 = np.float32
    return SimData(
        item=items.astype(np.int32),
        cluster=np.where(mask, clus, 0).astype(np.int32),
        music=np.where(mask, world.item_music[items], 0).astype(np.int32),
        template=np.where(mask, world.item_template[items], 0).astype(np.int32),
        dt=dt.astype(f32),
        mask=mask,
        x=x.astype(f32),
        w=w,
        y=y,
        yp=yp.astype(f32),
        yp_music=comp_m.astype(f32),
        yp_template=comp_t.astype(f32),
        yp_cos=comp_c.astype(f32),
        src=src.astype(np.int32),
        up_item=up_item.astype(np.int32),
        up_music=up_music.astype(np.int32),
        up_template=up_template.astype(np.int32),
        up_e=up_e.astype(f32),
        r=r,
        direct=direct,
        mediator=mediator,
        serve_prob=serve,
        arm=arm,
        split=split,
        p_unit=p_unit,
        p_x=p_x,
        delta_unit=delta_unit,
        delta_x=delta_x,
        removal_x=removal_x,
        rct_cluster_uplift=rct_cluster_uplift,
        obs_cluster_removal=obs_cluster_removal,
        leak=leak.astype(f32),
        leak_logged=leak_logged,
        outcome_leak=float(cfg.outcome_leak),
        item_e=world.item_e.astype(f32),
        item_cluster=world.item_cluster,
        item_music=world.item_music,
        item_template=world.item_template,
        item_s=world.item_s,
        item_sw=world.item_sw,
        item_d=world.item_d,
        item_b=world.item_b,
        theta_0=float(theta_0),
        theta_x=world.theta_x,
        c_vec=world.c,
        cw_vec=world.c_w,
        D=world.D,
        A=world.A,
    )


def sim_to_batch(
    sim: SimData,
    split: Literal["train", "val", "test", "rct", "all"] = "train",
    *,
    ipw: np.ndarray | None = None,
    logged_propensity: bool = False,
) -> JourneyBatch:
    """The journeys of one split as a ``JourneyBatch`` of NumPy arrays.

    ``touch_ids`` columns are ``SIM_TOUCH_FIELDS`` = (item, cluster, music,
    template), with vocabularies ``SimConfig.vocab_sizes``. When the world was
    generated with ``outcome_leak > 0`` a fifth column carries the post-outcome log
    field ``sim.leak`` as an id: 0 where v = 0, else ``1 + round(SIM_LEAK_STEPS * v)``;
    it is there at train and test time alike, and every model that embeds
    ``touch_ids`` sees it in its touch embedding. ``tfeat`` holds
    log1p(hours to the window end H), log1p(hours since the previous touch; 0 for
    the first) and position-from-end / L. ``yp`` is ``[N, L, 1]`` and ``yp_mask``
    is ``touch_mask & (y == 1)``. ``user_id`` is the row of the user in ``sim``.

    Args:
      sim: the output of ``simulate_cdp``.
      split: "train", "val", "test" (observational 80/10/10), "rct" (randomized
        arm) or "all".
      ipw: optional ``[N_split]`` weights (ones when None).
      logged_propensity: fill ``propensity`` with ``serve_prob`` (1 at padding);
        otherwise it is None.

    Returns:
      A ``JourneyBatch`` with leading axis N_split.
    """
    if not isinstance(sim, SimData):
        raise TypeError(f"sim must be a SimData, got {type(sim).__name__}.")
    if split == "all":
        rows = np.arange(sim.y.shape[0])
    elif split in SPLIT_CODES:
        rows = np.flatnonzero(sim.split == SPLIT_CODES[split])
    else:
        raise ValueError(f"split must be one of {tuple(SPLIT_CODES) + ('all',)}, got {split!r}.")
    mask = sim.mask[rows]
    hours_to_end = sim.dt[rows].astype(np.float64) * 24.0
    y = sim.y[rows].astype(np.float32)
    n = rows.shape[0]
    ids = [sim.item[rows], sim.cluster[rows], sim.music[rows], sim.template[rows]]
    if sim.outcome_leak > 0:
        v = sim.leak[rows].astype(np.float64)
        ids.append(np.where(v > 0, 1 + np.rint(SIM_LEAK_STEPS * v), 0))
    if ipw is None:
        ipw = np.ones(n, np.float32)
    else:
        ipw = np.asarray(ipw, np.float32)
        if ipw.shape != (n,):
            raise ValueError(f"ipw has shape {ipw.shape}; expected ({n},) for split {split!r}.")
    return JourneyBatch(
        x=sim.x[rows],
        user_id=rows.astype(np.int32),
        touch_ids=np.stack(ids, axis=-1).astype(np.int32),
        tfeat=time_features(-hours_to_end * 3600.0, mask, end_time=np.zeros(n)),
        touch_mask=mask,
        y=y,
        yp=sim.yp[rows][..., None],
        yp_mask=mask & (y == 1)[:, None],
        ipw=ipw,
        propensity=(
            np.where(mask, sim.serve_prob[rows], 1.0).astype(np.float32)
            if logged_propensity
            else None
        ),
    )


# ------------------------------------------------------------------ Shapley


def _psi_parts(sim: SimData, config: SimConfig, rows, kind: str):
    """(empty-set logit [n], per-touch logit increments [n, L], noise sd) of P^kind."""
    cfg = config
    tm, gwm, tw = cfg.theta_M, cfg.gamma_WM, cfg.theta_w
    x = sim.x[rows].astype(np.float64)
    base = sim.theta_0 + x @ sim.theta_x
    inc = np.where(sim.mask[rows], tm * sim.r[rows] + cfg.gamma_TY * sim.direct[rows], 0.0)
    s_unit = tm * cfg.sigma_M
    if kind == "x":
        return base, inc, float(np.sqrt(s_unit**2 + (tw + tm * gwm) ** 2))
    if kind == "unit":
        return base + (tw + tm * gwm) * sim.w[rows], inc, s_unit
    raise ValueError(f"kind must be 'x' or 'unit', got {kind!r}.")


def shapley_truth(
    sim: SimData,
    config: SimConfig,
    rows=None,
    *,
    kind: Literal["x", "unit"] = "x",
    num_permutations: int = 256,
    exact_max_len: int = 10,
    seed: int = 0,
) -> np.ndarray:
    r"""Shapley values of the touches for the exact upload probability.

    See docs/almmta.md, *Exact truth*.

    The value of a touch set S is ``P(S) = Psi(a(S), s)`` (``kind="x"``: w
    integrated out; ``"unit"``: w fixed), with ``a(S)`` additive over touches, so
    every coalition is evaluated exactly. For ``L <= exact_max_len`` the Shapley
    value enumerates all subsets,

    .. math:: \phi_j = \sum_{S \subseteq N \setminus j}
      \frac{|S|!(L-|S|-1)!}{L!} [P(S \cup j) - P(S)],

    otherwise it averages marginal contributions over ``num_permutations``
    random permutations (padding positions are null players and get 0). Either
    way ``sum_j phi_j = P(full) - P(empty)``.

    Args:
      sim: the output of ``simulate_cdp(config, ...)``.
      config: the ``SimConfig`` that generated ``sim``.
      rows: user rows to evaluate (all when None); the permutation estimate costs
        ``rows * num_permutations * (L + 1)`` quadratures.
      kind: "x" or "unit".
      num_permutations: permutations of the Monte Carlo estimate.
      exact_max_len: largest L that is enumerated exactly.
      seed: permutation seed.

    Returns:
      ``[n_rows, L]`` float64 Shapley values.
    """
    if not isinstance(sim, SimData) or not isinstance(config, SimConfig):
        raise TypeError("shapley_truth needs a SimData and the SimConfig that generated it.")
    rows = np.arange(sim.y.shape[0]) if rows is None else np.asarray(rows)
    base, inc, sd = _psi_parts(sim, config, rows, kind)
    n, L = inc.shape
    psi = lambda a: gauss_hermite_psi(a, sd, config.gh_nodes)
    if L <= exact_max_len:
        subsets = ((np.arange(2**L)[:, None] >> np.arange(L)[None, :]) & 1).astype(bool)
        sizes = subsets.sum(axis=1)
        value = psi(base[:, None] + inc @ subsets.T.astype(np.float64))  # [n, 2^L]
        fact = np.array([np.prod(np.arange(1, k + 1), dtype=np.float64) for k in range(L + 1)])
        phi = np.zeros((n, L))
        for j in range(L):
            without = np.flatnonzero(~subsets[:, j])
            k = sizes[without]
            wts = fact[k] * fact[L - k - 1] / fact[L]
            gain = value[:, without + (1 << j)] - value[:, without]
            phi[:, j] = gain @ wts
        return phi
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    phi = np.zeros((n, L))
    for _ in range(int(num_permutations)):
        perm = np.argsort(rng.random((n, L)), axis=1)
        inc_p = np.take_along_axis(inc, perm, axis=1)
        cum = np.concatenate([np.zeros((n, 1)), np.cumsum(inc_p, axis=1)], axis=1)
        v = psi(base[:, None] + cum)
        np.put_along_axis(
            phi, perm, np.take_along_axis(phi, perm, axis=1) + np.diff(v, axis=1), axis=1
        )
    return phi / int(num_permutations)
