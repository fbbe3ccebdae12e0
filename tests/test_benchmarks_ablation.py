"""The ablation tables: paired intervals, best-baseline tests, routing agreement, the rows."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats
from flax import nnx

import drgrad_jax
from benchmarks import _rows, drgrad_census
from benchmarks import drgrad_synthetic as bench
from drgrad_jax import data, models


def _row(rng, mean, n=5):
    return {
        "test_auc_per_seed": rng.normal(mean, 0.003, (n, 2)).tolist(),
        "task1_auc_mean": mean,
        "task1_auc_std": 0.003,
        "task2_auc_mean": mean,
        "task2_auc_std": 0.003,
    }


def test_paired_interval_is_scipys_paired_t_interval():
    rng = np.random.default_rng(0)
    a, b = _row(rng, 0.90), _row(rng, 0.89)
    for task in (0, 1):
        got = _rows.paired(a, b, task)
        x = np.asarray(a["test_auc_per_seed"])[:, task]
        y = np.asarray(b["test_auc_per_seed"])[:, task]
        ci = scipy.stats.ttest_rel(x, y).confidence_interval(0.95)
        assert got["ci95"] == pytest.approx([ci.low, ci.high], rel=1e-9)
        assert got["mean_diff"] == pytest.approx(np.mean(x - y))
    with pytest.raises(ValueError, match="same number"):
        _rows.paired(a, _row(rng, 0.9, n=4))


def test_world_tests_pick_the_best_baseline_and_report_both_tasks():
    rng = np.random.default_rng(1)
    res = {
        "MMoE": _row(rng, 0.90),
        "Split-MMoE": _row(rng, 0.91),
        "PCGrad": _row(rng, 0.93),  # the best baseline
        "DRGrad": _row(rng, 0.92),
        "+ router (fixed mu)": _row(rng, 0.915),
    }
    tests = bench.world_tests({"results": res})
    assert set(tests) == {
        "DRGrad vs MMoE",
        "DRGrad vs best baseline (PCGrad)",
        "+ router (fixed mu) vs MMoE",
        "+ router (fixed mu) vs best baseline (PCGrad)",
    }
    t = tests["DRGrad vs best baseline (PCGrad)"]
    assert set(t) == {"task1", "task2"}
    assert t["task2"] == _rows.paired(res["DRGrad"], res["PCGrad"], 1)
    md = bench.markdown_table2({"w": {"mean_task_cos": -0.2, "results": res}})
    assert md.count("| w | -0.200 |") == len(res) + 1 and "p = " in md  # + the world's line
    quick = bench.markdown_table2({"w": {"mean_task_cos": -0.2, "results": res}}, compare=False)
    assert "p = " not in quick and "MMoE [95% CI]" not in quick


def test_routing_agreement_and_table1_case_shares():
    xi_aux = np.array([0.3, -0.2, 0.1, 0.0, -0.5, 0.2, 0.4, -0.1])
    xi_shared = np.array([0.1, 0.1, -0.3, -0.2, -0.1, 0.5, 0.0, 0.2])
    tr = {"cos": xi_aux, "ratio": np.ones(8), "mu1": np.full(8, 0.5), "xi_aux": xi_aux,
          "xi_shared": xi_shared}  # fmt: skip
    assert bench.routing_agreement(tr, +1.0) == pytest.approx(5 / 8)  # 0.0 counts as >= 0
    assert bench.routing_agreement(tr, -1.0) == pytest.approx(3 / 8)
    shares = bench.trace_summary(tr)["table1_case_shares"]
    # (xs>=0, xa>=0): steps 0, 5, 6, 7?; steps by hand:
    cases = [(s >= 0, a >= 0) for s, a in zip(xi_shared, xi_aux)]
    want = [
        cases.count(c) / 8 for c in ((True, True), (True, False), (False, True), (False, False))
    ]
    assert shares == pytest.approx(want) and sum(shares) == pytest.approx(1.0)
    assert np.isnan(bench.routing_agreement(tr | {"xi_aux": np.full(8, np.nan)}, 1.0))


@pytest.fixture(scope="module")
def small_world():
    return data.conflict_world(256, 32, 32, dim=4, seed=0)


def test_activation_space_trace_reads_the_router_at_v1_and_vs(small_world):
    """Step 0's xi_aux in activation space is cos(dL1/dv1, dL2/dv_s), computed by hand."""
    d = small_world
    split = functools.partial(
        models.SplitMMoE, d.vocab_sizes, d.num_dense, 2, num_experts=2, expert_hidden=(8,),
        tower=(4,),
    )  # fmt: skip
    act = lambda m: drgrad_jax.drgrad(
        m.drgrad_towers("activations"), space="activations", num_tasks=2
    )
    method = _rows.Method("DRGrad, activation space", split, act, space="activations")
    tr = bench.gradient_trace(method, d, steps=3, batch_size=16, lr=1e-2, seed=0)
    assert np.all(np.isfinite(tr["xi_aux"])) and np.all(np.isfinite(tr["xi_shared"]))
    # The same first batch and initialization as gradient_trace(seed=0).
    init_key, data_key = jax.random.split(jax.random.key(0))
    model = split(rngs=nnx.Rngs(init_key))
    idx = jax.random.randint(jax.random.split(data_key, 3)[0], (16,), 0, d.train.num_examples)
    dense, labels = jnp.asarray(d.train.dense)[idx], jnp.asarray(d.train.labels)[idx]
    cat = jnp.asarray(d.train.cat)[idx]
    reps = model.drgrad_trunk(cat, dense)

    def task_loss(reps, k):
        logits = model.drgrad_heads(reps, mu=jnp.array([0.5, 0.5]))
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits[:, k], labels[:, k]))

    g1 = jax.grad(task_loss)(reps, 0)["v1"].ravel()
    g2 = jax.grad(task_loss)(reps, 1)["vs"].ravel()
    want = float(g1 @ g2 / jnp.linalg.norm(g1) / jnp.linalg.norm(g2))
    assert tr["xi_aux"][0] == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_census_rows_build_and_the_released_row_routes_first_kernels_only():
    shape = types.SimpleNamespace(vocab_sizes=(5, 7), num_dense=3)  # all the rows read
    sizes = {"experts": 2, "expert_width": 8, "tower": 4, "embed": 2}
    rows = {m.name: m for m in drgrad_census.all_methods(shape, sizes)}
    new = set(drgrad_census.NEW_ZOO) | {"Equal weighting (tuned)", "+ updater (no router)"}
    assert new <= set(rows)
    abstract = nnx.eval_shape(lambda: rows["MMoE"].model(rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(nnx.state(abstract))
    for name in drgrad_census.NEW_ZOO:  # every new transform builds and initializes
        jax.eval_shape(rows[name].transform(abstract).init, params)
    rel = rows["DRGrad (released-code mode)"]
    assert rel.lrs == (5e-4,) and rel.pos_weights == (3.0, 1.0)
    params = nnx.to_pure_dict(nnx.state(rel.model(rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)
    tg = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(2,) + p.shape), jnp.float32), params)
    tx = rel.transform(None)
    out, _ = jax.jit(tx.update)(tg, tx.init(params), params)
    flat_out = dict(jax.tree_util.tree_flatten_with_path(out)[0])
    for path, g in jax.tree_util.tree_flatten_with_path(tg)[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        routed = name in drgrad_census.RELEASED_HEADS.values()
        same = np.allclose(flat_out[path], np.sum(g, 0), atol=1e-6)
        assert same != routed, name  # exactly the two first head kernels receive routing


def test_table2_renders_into_its_own_span_and_refuses_a_quick_run(tmp_path):
    import json

    rng = np.random.default_rng(2)
    res = {"DRGrad": _row(rng, 0.92), "PCGrad": _row(rng, 0.93), "MMoE": _row(rng, 0.90)}
    res[bench.ALONE] = _row(rng, 0.95)  # a world with negative transfer
    w = {"mean_task_cos": -0.2, "results": res}
    w["paired_tests"] = bench.world_tests(w)
    payload = {
        "worlds": {"conflict": w}, "mode": "medium", "quick": False, "split": "10/2/2",
        "seeds": 5, "epochs": 10, "sizes": {}, "lr_grid": [1e-3], "duration_s": 60.0,
        "markdown": bench.markdown_table2({"conflict": w}),
    }  # fmt: skip
    path, md = tmp_path / "run.json", tmp_path / "RESULTS.md"
    path.write_text(json.dumps(payload))
    md.write_text("<!-- drgrad:begin -->\nCensus kept\n<!-- drgrad:end -->\n")
    bench.main(["--from-json", str(path), "--results", str(md)])
    text = md.read_text()
    assert "Census kept" in text and "<!-- drgrad-synthetic:begin -->" in text
    assert "conflict: DRGrad vs best baseline (PCGrad): task 1" in text
    nt = _rows.paired(res[bench.ALONE], res["MMoE"])  # the world's line, before Table 2
    assert f"| conflict | -0.200 | – | {nt['mean_diff']:+.4f} [{nt['ci95'][0]:+.4f}," in text
    assert f"{bench.ALONE} vs" not in text  # a measurement of the world, not a contender
    assert f"| {bench.ALONE} | 0.9500 ± 0.0030 | not trained |" in text
    table2 = [ln.split(" | ") for ln in text.splitlines() if ln.startswith("| conflict | -0.200 |")]
    rows = [cells[2] for cells in table2 if len(cells) > 5]
    assert rows == ["MMoE", bench.ALONE, "DRGrad", "PCGrad"]  # table order, not the JSON's
    assert "](figures/drgrad_synthetic_table2.png)" in text
    png = tmp_path / "figures" / "drgrad_synthetic_table2.png"
    assert png.stat().st_size < 200_000 and png.read_bytes()[:4] == b"\x89PNG"
    path.write_text(json.dumps(payload | {"quick": True}))
    with pytest.raises(ValueError, match="not a medium or full run"):
        bench.main(["--from-json", str(path), "--results", str(md)])
