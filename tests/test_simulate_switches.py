"""The simulator's outcome-leak and confounder-alignment switches (docs/almmta.md, *CDP simulator*).

* defaults: the world recorded before the switches existed, bit for bit;
* ``outcome_leak``: a post-outcome log field v = Y B y' on the touches, which moves
  no other array (so no truth), and reaches the models through ``touch_ids``;
* ``confounder_alignment``: w loads exposure on a catalog direction whose
  correlation with the inspiration potency is rho, with the rest of the world's
  draws unchanged;
* out-of-domain values are refused naming the field.
"""

import dataclasses
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import almmta_jax as am
from almmta_jax._src.data import validate_journeys
from almmta_jax.simulate import SIM_LEAK_STEPS, SimConfig, sim_to_batch, simulate_cdp
from tests.fixtures.make_sim_tiny import WORLDS

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "sim_tiny.npz"
UNIT = SimConfig.preset("unit_test", n_rct=500)
LEAK_FIELDS = {"leak", "leak_logged", "outcome_leak"}


def _fields(sim):
    return sim._asdict()


# ------------------------------------------------------------------ defaults


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_defaults_generate_the_world_recorded_before_the_switches(world):
    """Every array of ``tests/fixtures/sim_tiny.npz`` (the old generator's output), bit for bit."""
    overrides, seed = WORLDS[world]
    recorded = np.load(FIXTURE)
    cfg = SimConfig.preset("unit_test", **overrides)
    explicit = dataclasses.replace(cfg, outcome_leak=0.0, confounder_alignment=1.0)
    for sim in (simulate_cdp(cfg, seed=seed), simulate_cdp(explicit, seed=seed)):
        fields = _fields(sim)
        names = [k.split("/", 1)[1] for k in recorded.files if k.startswith(f"{world}/")]
        assert len(names) == 43
        for name in names:
            np.testing.assert_array_equal(fields[name], recorded[f"{world}/{name}"], err_msg=name)
        # The new arrays say "no switch": no leak, the confounder loads on the potency.
        assert not sim.leak.any() and not sim.leak_logged.any() and sim.outcome_leak == 0.0
        np.testing.assert_array_equal(sim.item_sw, sim.item_s)
        np.testing.assert_array_equal(sim.cw_vec, sim.c_vec)
    assert cfg.vocab_sizes == (cfg.n_items, cfg.n_clusters, cfg.n_music, cfg.n_template)
    assert sim_to_batch(sim, "all").touch_ids.shape[-1] == 4


# ------------------------------------------------------------------ the leak


@pytest.fixture(scope="module")
def leak_pair():
    return simulate_cdp(UNIT, seed=11), simulate_cdp(
        dataclasses.replace(UNIT, outcome_leak=0.6), 11
    )


def test_leak_moves_no_other_array_so_no_truth(leak_pair):
    """Y, the mediator, the proxy and every exact truth are those of the world without the leak."""
    plain, leaky = leak_pair
    a, b = _fields(plain), _fields(leaky)
    for name in a.keys() - LEAK_FIELDS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for name in ("delta_x", "delta_unit", "removal_x", "p_x", "rct_cluster_uplift", "y"):
        assert name in a.keys() - LEAK_FIELDS


def test_leak_is_the_proxy_of_logged_uploaders(leak_pair):
    _, sim = leak_pair
    n = sim.y.shape[0]
    # B ~ Bern(0.6) once per journey: 4 binomial standard errors.
    assert abs(sim.leak_logged.mean() - 0.6) < 4 * np.sqrt(0.6 * 0.4 / n)
    for u in range(n):
        want = sim.yp[u] if (sim.y[u] == 1 and sim.leak_logged[u]) else np.zeros_like(sim.yp[u])
        np.testing.assert_array_equal(sim.leak[u], want)
    assert sim.leak.dtype == np.float32 and sim.outcome_leak == 0.6
    # Every journey it marks is an upload; it marks about 60 % of the uploads.
    marked = (sim.leak > 0).any(axis=1)
    assert (sim.y[marked] == 1).all()
    up_with_proxy = (sim.y == 1) & (sim.yp > 0).any(axis=1)
    assert abs(marked.sum() / up_with_proxy.sum() - 0.6) < 0.1
    full = simulate_cdp(dataclasses.replace(UNIT, outcome_leak=1.0, n_rct=0), seed=11)
    assert full.leak_logged.all()
    np.testing.assert_array_equal(full.leak, np.where(full.y[:, None] == 1, full.yp, 0.0))


def _leak_id(v: float) -> int:
    return 0 if v == 0.0 else 1 + int(round(SIM_LEAK_STEPS * float(v)))


@pytest.mark.parametrize("split", ["train", "test", "rct"])
def test_leak_reaches_every_split_as_a_fifth_touch_id(leak_pair, split):
    _, sim = leak_pair
    cfg = dataclasses.replace(UNIT, outcome_leak=0.6)
    assert cfg.vocab_sizes == UNIT.vocab_sizes + (SIM_LEAK_STEPS + 2,)
    b = validate_journeys(sim_to_batch(sim, split))
    rows = b.user_id
    assert b.touch_ids.shape[-1] == 5
    want = np.array([[_leak_id(v) for v in sim.leak[r]] for r in rows])
    np.testing.assert_array_equal(b.touch_ids[..., 4], want)
    np.testing.assert_array_equal(b.touch_ids[..., :4], sim_to_batch(sim, split).touch_ids[..., :4])
    assert b.touch_ids[..., 4].max() < cfg.vocab_sizes[4]
    # Id 0 exactly where nothing was logged, so any other id reveals an upload.
    assert ((b.touch_ids[..., 4] > 0) == (sim.leak[rows] > 0)).all()


def test_models_embed_the_leak_column():
    """ALM-MTA's touch embedding holds a table for the leak ids: changing one changes e_j."""
    cfg = SimConfig.preset("unit_test", n_users=60, n_rct=0, outcome_leak=1.0)
    batch = sim_to_batch(simulate_cdp(cfg, seed=2), "all")
    mc = am.ModelConfig(
        vocab_sizes=cfg.vocab_sizes, d_x=cfg.d_x, max_len=cfg.max_len, d_model=8, num_heads=2
    )
    model = am.ALMMTA(mc, rngs=nnx.Rngs(0))
    assert model.touch_embed.rows[-1] == SIM_LEAK_STEPS + 2
    ids = jnp.asarray(batch.touch_ids)
    other = ids.at[0, 0, 4].set((ids[0, 0, 4] + 1) % (SIM_LEAK_STEPS + 2))
    e = model.touch_embed(ids, jnp.asarray(batch.tfeat))
    e2 = model.touch_embed(other, jnp.asarray(batch.tfeat))
    table = model.touch_embed.tables[4].embedding[...]
    np.testing.assert_allclose(
        e2[0, 0] - e[0, 0], table[other[0, 0, 4]] - table[ids[0, 0, 4]], rtol=0, atol=1e-6
    )
    assert np.abs(e2[0, 0] - e[0, 0]).max() > 1e-3
    np.testing.assert_array_equal(e2[1:], e[1:])


# ---------------------------------------------------------------- alignment


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.7])
def test_alignment_is_the_catalog_correlation_of_the_loading_with_the_potency(rho):
    cfg = dataclasses.replace(UNIT, confounder_alignment=rho)
    sim = simulate_cdp(cfg, seed=5)
    assert abs(np.corrcoef(sim.item_sw, sim.item_s)[0, 1] - rho) < 1e-9
    # The loading is the standardized projection of the stored embeddings on c_w.
    proj = sim.item_e.astype(np.float64) @ sim.cw_vec
    np.testing.assert_allclose(sim.item_sw, (proj - proj.mean()) / proj.std(), atol=1e-9)
    # c_w has unit variance over the catalog (its own geometry's unit length).
    assert abs(proj.std() - 1.0) < 1e-9


@pytest.mark.parametrize("rho", [0.0, 0.3])
def test_alignment_moves_only_the_draws_that_see_the_exposure_loading(rho):
    """Items, users, times, splits and the randomized arm's journeys are those of rho = 1."""
    base = simulate_cdp(UNIT, seed=5)
    turned = simulate_cdp(dataclasses.replace(UNIT, confounder_alignment=rho), seed=5)
    for name in ("x", "w", "dt", "mask", "split", "arm", "item_e", "item_cluster", "item_s"):
        np.testing.assert_array_equal(getattr(base, name), getattr(turned, name), err_msg=name)
    np.testing.assert_array_equal(base.c_vec, turned.c_vec)
    np.testing.assert_array_equal(base.theta_x, turned.theta_x)
    rct = base.arm == 1
    np.testing.assert_array_equal(base.item[rct], turned.item[rct])
    assert not np.array_equal(base.item[~rct], turned.item[~rct])


def test_low_alignment_takes_the_confounding_off_the_inspiration_direction():
    def corrs(rho):
        s = simulate_cdp(dataclasses.replace(UNIT, confounder_alignment=rho), seed=2)
        obs = s.arm == 0
        pot, load = s.item_s[s.item].mean(axis=1), s.item_sw[s.item].mean(axis=1)
        return np.corrcoef(s.w[obs], pot[obs])[0, 1], np.corrcoef(s.w[obs], load[obs])[0, 1]

    aligned, aligned_load = corrs(1.0)
    off, off_load = corrs(0.0)
    assert aligned == aligned_load and aligned > 0.85
    # w still drives exposure as strongly, but no longer towards inspiring items.
    assert off_load > 0.85 and abs(off) < 0.3


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("field", ["outcome_leak", "confounder_alignment"])
@pytest.mark.parametrize("value", [-0.1, 1.1, -np.inf, np.inf, np.nan])
def test_out_of_domain_switches_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"SimConfig.{field} must be in \\[0, 1\\]"):
        SimConfig(**{field: value})


@pytest.mark.parametrize("field", ["outcome_leak", "confounder_alignment"])
def test_switch_domain_edges_are_accepted(field):
    for value in (0.0, 1.0):
        assert getattr(SimConfig(**{field: value}), field) == value


def test_alignment_below_one_needs_an_uncorrelated_catalog_direction():
    with pytest.raises(ValueError, match="confounder_alignment.*d_e >= 2"):
        SimConfig(d_e=1, confounder_alignment=0.5)
    with pytest.raises(ValueError, match="confounder_alignment.*n_items >= 3"):
        SimConfig(n_items=2, max_len=2, confounder_alignment=0.5)
    assert SimConfig(d_e=1).confounder_alignment == 1.0  # today's world needs no direction
