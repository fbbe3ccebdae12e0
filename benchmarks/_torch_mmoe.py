"""The ``mtl_speed`` MMoE in PyTorch, and its training steps with PyTorch and TorchJD.

Imported by ``benchmarks.vs_torchjd`` only once PyTorch and TorchJD are known
to be installed (the ``compare`` extra), so nothing else depends on them.

The network is ours layer for layer: experts ``relu(x W1 + b1) -> relu(. W2 + b2)``
stored stacked as ``[E, in, out]``, one linear softmax gate per task mixing the
expert outputs, towers ``Linear -> relu -> Linear(1)``, per-task binary
cross-entropy averaged over the batch. ``from_params`` copies the weights of
``drgrad_jax.models.MMoE`` across (a Flax kernel ``[in, out]`` is a PyTorch
weight ``[out, in]``), so both compute the same losses from the same weights.

The steps follow TorchJD's documented multi-task usage
(https://torchjd.org/stable/examples/mtl/): ``autojac.mtl_backward`` gives the
task-specific parameters their ordinary gradients and the shared ones one
Jacobian row per task, and ``autojac.jac_to_grad`` aggregates those rows.
Every step runs eagerly: ``mtl_backward`` relies on ``torch.vmap``, which
TorchJD documents as not working on compiled functions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchjd import aggregation, autojac

AGGREGATORS = {"upgrad": aggregation.UPGrad, "pcgrad": aggregation.PCGrad, "mgda": aggregation.MGDA}


class ExpertPool(nn.Module):
    """``E`` MLP experts stored stacked, ``x [B, in] -> [B, E, out]``, relu after every layer.

    The first layer reads the same ``x`` for every expert, so it is one GEMM
    against the experts' kernels side by side; deeper layers are one batched
    matmul with the experts as the batch (``torch.bmm``).
    """

    def __init__(self, kernels: list[np.ndarray], biases: list[np.ndarray]):
        super().__init__()
        self.kernels = nn.ParameterList([nn.Parameter(torch.tensor(w)) for w in kernels])
        self.biases = nn.ParameterList([nn.Parameter(torch.tensor(b)) for b in biases])

    def forward(self, x):
        w0 = self.kernels[0]
        e, d_in, d_out = w0.shape
        h = x @ w0.permute(1, 0, 2).reshape(d_in, e * d_out)
        h = F.relu(h.view(-1, e, d_out) + self.biases[0])
        h = h.transpose(0, 1)  # expert-major [E, B, d] for bmm
        for w, b in zip(list(self.kernels)[1:], list(self.biases)[1:]):
            h = F.relu(torch.bmm(h, w) + b[:, None, :])
        return h.transpose(0, 1)


def _linear(p: dict) -> nn.Linear:
    kernel = np.asarray(p["kernel"])
    layer = nn.Linear(*kernel.shape)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(kernel.T))
        layer.bias.copy_(torch.tensor(np.asarray(p["bias"])))
    return layer


def _mlp(layers: dict) -> nn.Sequential:
    mods = []
    for i in range(len(layers)):
        mods += [_linear(layers[i]), nn.ReLU()]
    return nn.Sequential(*mods[:-1])  # no activation after the last layer


class MMoE(nn.Module):
    """MMoE split as ours is: ``trunk`` (the experts) and ``heads`` (gates and towers)."""

    def __init__(self, params: dict):
        super().__init__()
        experts = params["experts"]
        num = len(experts["kernels"])
        self.experts = ExpertPool(
            [np.asarray(experts["kernels"][i]) for i in range(num)],
            [np.asarray(experts["biases"][i]) for i in range(num)],
        )
        tasks = range(len(params["towers"]))
        self.gates = nn.ModuleList([_mlp(params["gates"][k]["mlp"]["layers"]) for k in tasks])
        self.towers = nn.ModuleList([_mlp(params["towers"][k]["mlp"]["layers"]) for k in tasks])

    def heads(self, x, experts) -> list:
        """Per-task logits ``[B]`` from the gates' input and the expert outputs ``[B, E, d]``."""
        out = []
        for gate, tower in zip(self.gates, self.towers):
            weights = torch.softmax(gate(x), dim=-1)
            mixed = torch.bmm(weights[:, None, :], experts)[:, 0]
            out.append(tower(mixed)[:, 0])
        return out

    def forward(self, x):
        return self.heads(x, self.experts(x))


def from_params(params: dict) -> MMoE:
    """A PyTorch MMoE holding the weights of ``drgrad_jax.models.MMoE``'s params dict."""
    kernels = params["experts"]["kernels"]
    if any(np.ndim(kernels[i]) != 3 for i in range(len(kernels))):
        raise ValueError(
            "expected the MMoE expert kernels stacked as [num_experts, in, out]; got shapes "
            f"{[np.shape(kernels[i]) for i in range(len(kernels))]} (update benchmarks/_torch_mmoe.py "
            "to the new layout)."
        )
    return MMoE(params)


def task_losses(logits: list, y) -> list:
    """Per-task binary cross-entropy, each averaged over the batch (ours: ``mtl_speed.build``)."""
    return [F.binary_cross_entropy_with_logits(z, y[:, k]) for k, z in enumerate(logits)]


def steps(params: dict, dense: np.ndarray, y: np.ndarray, methods=tuple(AGGREGATORS)) -> dict:
    """``{name: (fn, ())}``: one training step each, in ``mtl_speed``'s naming.

    ``plain``: summed-loss backward and Adam. ``<m>_params``: ``mtl_backward``
    with the expert outputs as features, the aggregator on the Jacobian of
    every shared (expert) parameter. ``<m>_rep``: the same calls with the
    shared representation itself as the shared "parameters" (the gates' input
    and the expert outputs, as ``MMoE.trunk`` returns them), then ONE backward
    of the aggregated cotangent through the experts. Each name has its own
    model and Adam, all starting from ``params``.
    """
    x, t = torch.tensor(np.asarray(dense)), torch.tensor(np.asarray(y))
    out = {"plain": (plain_step(from_params(params), x, t), ())}
    for name in methods:
        for level, make in (("params", params_step), ("rep", rep_step)):
            out[f"{name}_{level}"] = (make(from_params(params), x, t, AGGREGATORS[name]()), ())
    return out


def _adam(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3)


def plain_step(model, x, y):
    """One summed-loss step of ``model`` on ``(x, y)``; its gradients stay in ``.grad``."""
    opt = _adam(model)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.stack(task_losses(model(x), y)).sum().backward()
        opt.step()

    return step


def params_step(model, x, y, aggregator):
    """One TorchJD step, ``aggregator`` on the Jacobian of the expert parameters."""
    opt = _adam(model)
    shared = list(model.experts.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        experts = model.experts(x)
        losses = task_losses(model.heads(x, experts), y)
        autojac.mtl_backward(losses, features=experts)
        autojac.jac_to_grad(shared, aggregator)
        opt.step()

    return step


def rep_step(model, x, y, aggregator):
    """One TorchJD step, ``aggregator`` on the Jacobian at the shared representation."""
    opt = _adam(model)
    tasks = [[*g.parameters(), *t.parameters()] for g, t in zip(model.gates, model.towers)]

    def step():
        opt.zero_grad(set_to_none=True)
        experts = model.experts(x)
        reps = [x.detach().requires_grad_(True), experts.detach().requires_grad_(True)]
        losses = task_losses(model.heads(*reps), y)
        autojac.mtl_backward(losses, features=reps, shared_params=reps, tasks_params=tasks)
        autojac.jac_to_grad(reps, aggregator)
        experts.backward(reps[1].grad)
        opt.step()

    return step
