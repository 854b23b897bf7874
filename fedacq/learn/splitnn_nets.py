"""The torch networks of the split NN: bottom networks (MLP, DeepFM-style) and the top network.

Imported only when a split NN is trained (torch is the optional ``nn`` extra).
Every network is initialised from an explicit seed with its own
``torch.Generator`` (:func:`init_`), not the global RNG: the two parties run in
threads of one process in tests and simulation, and the centrally trained
reference must start from exactly the same weights as the federated one.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from fedacq.crypto import dp_noise


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear-ReLU layers ending in a linear layer of ``out_dim`` units."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class MLPBottom(nn.Module):
    """A party's dense features -> its embedding."""

    def __init__(self, n_dense: int, hidden: Sequence[int], out_dim: int) -> None:
        super().__init__()
        self.net = mlp(n_dense, hidden, out_dim)

    def forward(self, dense: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        return self.net(dense)


class DeepFMBottom(nn.Module):
    """DeepFM-style bottom for a party with sparse categorical columns.

    Each categorical column gets a k-dimensional embedding and a first-order
    weight; the FM term ``sum_f w_f + 0.5 * sum_k((sum_f v_f)^2 - sum_f v_f^2)``
    models pairwise interactions between the categories of one row, and the
    deep part is an MLP over the concatenated embeddings and dense columns.
    The party's embedding is the deep output (``out_dim - 1`` units) with the
    FM term as its last unit, so the top network can weigh both.
    """

    def __init__(self, n_dense: int, cardinalities: Sequence[int], embed_dim: int, hidden: Sequence[int],
                 out_dim: int) -> None:
        super().__init__()
        if out_dim < 2:
            raise ValueError("a DeepFM bottom needs embedding_dim >= 2 (deep units + the FM term)")
        self.embeddings = nn.ModuleList(nn.Embedding(c, embed_dim) for c in cardinalities)
        self.first_order = nn.ModuleList(nn.Embedding(c, 1) for c in cardinalities)
        self.deep = mlp(n_dense + embed_dim * len(cardinalities), hidden, out_dim - 1)

    def forward(self, dense: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        vs = torch.stack([e(cats[:, i]) for i, e in enumerate(self.embeddings)], dim=1)  # rows x F x k
        first = torch.cat([e(cats[:, i]) for i, e in enumerate(self.first_order)], dim=1).sum(1, keepdim=True)
        second = 0.5 * (vs.sum(1).pow(2) - vs.pow(2).sum(1)).sum(1, keepdim=True)
        deep = self.deep(torch.cat([vs.flatten(1), dense], dim=1))
        return torch.cat([deep, first + second], dim=1)


def init_(module: nn.Module, seed: int) -> nn.Module:
    """Deterministic init from ``seed``: PyTorch's default distributions, a private generator."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                # torch's own rule, 0 for a layer without inputs (a party with no feature columns)
                bound = 1.0 / math.sqrt(m.in_features) if m.in_features > 0 else 0.0
                m.weight.uniform_(-bound, bound, generator=gen)
                m.bias.uniform_(-bound, bound, generator=gen)
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(0.0, 0.1, generator=gen)
    return module


def bottom(n_dense: int, cardinalities: Sequence[int], params: dict, seed: int) -> nn.Module:
    """The bottom network a party builds for its columns (DeepFM when it has categorical ones)."""
    hidden, out_dim = list(params["hidden_layer_sizes"]), int(params["embedding_dim"])
    if cardinalities:
        net: nn.Module = DeepFMBottom(n_dense, cardinalities, int(params["fm_embedding_dim"]), hidden, out_dim)
    else:
        net = MLPBottom(n_dense, hidden, out_dim)
    return init_(net, seed)


def top(in_dim: int, params: dict, seed: int) -> nn.Module:
    """The lender's top network: both embeddings -> one logit."""
    return init_(mlp(in_dim, list(params["top_layer_sizes"]), 1), seed)


def optimizer(module: nn.Module, params: dict) -> torch.optim.Optimizer:
    """Adam with ``learning_rate_init`` and L2 ``alpha`` as weight decay (MLPClassifier's names)."""
    return torch.optim.Adam(module.parameters(), lr=float(params["learning_rate_init"]),
                            weight_decay=float(params["alpha"]))


def tensors(dense: np.ndarray, cats: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(dense, dtype=torch.float32), torch.as_tensor(cats, dtype=torch.int64)


def clip_and_noise(x: torch.Tensor, clip: float | None, noise: float) -> torch.Tensor:
    """Per-row L2 clipping to ``clip`` then Gaussian noise of std ``noise * clip`` (the Gaussian mechanism).

    The noise comes from the OS CSPRNG (:func:`fedacq.crypto.dp_noise.gaussian`), never from a
    seeded generator the peer could share. It has derivative 1, so back-propagation through
    the result is that of the clipping.
    """
    if clip is None:
        return x
    norms = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    x = x * torch.clamp(clip / norms, max=1.0)
    if noise > 0:
        x = x + torch.as_tensor(dp_noise.gaussian(noise * clip, tuple(x.shape)), dtype=x.dtype)
    return x
