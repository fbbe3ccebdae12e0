"""The PyTorch comparison benchmark: its skip path, and that both sides compute the same thing.

The oracle for a fair comparison is the forward pass: the PyTorch MMoE, given
our weights, computes our losses and our gradients; the TorchJD
representation-level step gives the shared parameters the update ours does.
These run only where the ``compare`` extra (PyTorch, TorchJD) is installed.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import drgrad_jax
from benchmarks import mtl_speed, vs_torchjd
from drgrad_jax import models


def test_without_torch_it_names_the_compare_extra_and_returns(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    path = tmp_path / "vs.json"
    payload = vs_torchjd.main(["--json", str(path)])
    out = capsys.readouterr().out
    assert "skipped" in out and 'pip install -e ".[compare]"' in out
    assert set(payload) == {"skipped"} and json.loads(path.read_text()) == payload
    with pytest.raises(ImportError, match="torch"):
        vs_torchjd.build(2, 8, size=vs_torchjd.TINY)


def _tiny(k, batch=16):
    model = mtl_speed.make_model(k, vs_torchjd.TINY)
    graphdef, params = models.params_of(model)
    dense, y = mtl_speed.make_batch(k, batch, vs_torchjd.TINY)

    def heads(p, reps):
        logits = nnx.merge(graphdef, p).heads(reps)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y), axis=0)

    def trunk(p):
        return nnx.merge(graphdef, p).trunk(None, dense)

    return params, dense, y, trunk, heads


def _torch(params, dense, y):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchjd")
    from benchmarks import _torch_mmoe

    x, t = torch.tensor(np.asarray(dense)), torch.tensor(np.asarray(y))
    return _torch_mmoe, _torch_mmoe.from_params(jax.device_get(params)), x, t


def _assert_grads_match(model, grads, *, rtol=1e-4, atol=1e-6):
    """Our params-shaped gradients against the ``.grad`` of the PyTorch model's parameters."""
    ex = grads["experts"]
    pairs = [(model.experts.kernels[i].grad, ex["kernels"][i]) for i in range(len(ex["kernels"]))]
    for k, (gate, tower) in enumerate(zip(model.gates, model.towers)):
        pairs.append((gate[0].weight.grad.T, grads["gates"][k]["mlp"]["layers"][0]["kernel"]))
        pairs.append((tower[0].weight.grad.T, grads["towers"][k]["mlp"]["layers"][0]["kernel"]))
        pairs.append((tower[2].bias.grad, grads["towers"][k]["mlp"]["layers"][1]["bias"]))
    for theirs, ours in pairs:
        np.testing.assert_allclose(theirs.numpy(), np.asarray(ours), rtol=rtol, atol=atol)


@pytest.mark.parametrize("k", [2, 3])
def test_the_torch_mmoe_computes_our_losses_and_gradients(k):
    params, dense, y, trunk, heads = _tiny(k)
    tm, model, x, t = _torch(params, dense, y)
    theirs = tm.task_losses(model(x), t)
    ours = heads(params, trunk(params))
    np.testing.assert_allclose([float(v.detach()) for v in theirs], np.asarray(ours), rtol=1e-5)
    # The plain step leaves its gradients in `.grad` (Adam does not clear them).
    tm.plain_step(model, x, t)()
    _assert_grads_match(model, jax.grad(lambda p: jnp.sum(heads(p, trunk(p))))(params))


@pytest.mark.parametrize("method", ["pcgrad", "upgrad"])
def test_torchjd_rep_step_gives_our_representation_level_gradients(method):
    """Same maths at the representation: TorchJD's aggregator there, pulled back, is ours."""
    params, dense, y, trunk, heads = _tiny(2)
    tm, model, x, t = _torch(params, dense, y)
    rg = drgrad_jax.per_task_rep_grads(trunk, heads, params)
    tx = getattr(drgrad_jax, method)()
    update, _ = tx.update(rg.rep_task_grads, tx.init(rg.reps), rg.reps, losses=rg.losses)
    tm.rep_step(model, x, t, tm.AGGREGATORS[method]())()
    # UPGrad's dual problem is solved by different solvers on the two sides.
    _assert_grads_match(model, rg.finish(update), rtol=2e-3, atol=1e-6)


def test_a_tiny_run_writes_every_ratio(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("torchjd")
    path = tmp_path / "vs.json"
    argv = ["--tiny", "--rounds", "1", "--tasks", "2", "--methods", "pcgrad", "--json", str(path)]
    payload = vs_torchjd.main(argv)
    pairs = {"plain_K2", "pcgrad_params_K2", "pcgrad_rep_K2", "pcgrad_rep_vs_rep_K2"}
    assert set(payload["ratios"]) == pairs and set(payload["targets_met"]) == pairs - {
        "pcgrad_rep_vs_rep_K2"
    }
    saved = json.loads(path.read_text())
    for field in ("ratios", "times", "compile_s", "env"):
        assert set(saved[field]) >= (
            {"torch", "torchjd"} if field == "env" else set(payload["ratios"])
        )
    assert saved["env"]["torch_threads"] == saved["env"]["cores"]
    assert set(saved["env"]["torch_plain_s_by_threads"]) == {str(saved["env"]["cores"]), "1"}
