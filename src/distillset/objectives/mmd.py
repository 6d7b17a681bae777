"""D3's second objective: the MMD between a distributional set's samples and real images, per class.

One step: a random expert (drawn independently of the trajectory step's) at its final snapshot embeds
images by its trunk (the classifier's input). With `s = mmd_samples // lpc`: per class c, X = the
embeddings of s fresh samples of each of the class's lpc priors (each draw decodes every prior as one
batch), Y = those of s * lpc random real images of the class (unaugmented, no gradient), and

    MMD^2(X, Y) = mean_{i != j} k(X_i, X_j) + mean_{i != j} k(Y_i, Y_j) - 2 mean_{i, j} k(X_i, Y_j),
    k(a, b) = sum_{sigma in 1, 2, 4, 8, 16} exp(-||a - b||^2 / (2 sigma^2))

(unbiased; on raw features). The loss is `mmd_weight` times the sum over classes; it moves the latents
and the decoder, not the lr.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import D3Config
from ..data.prepared import PreparedData
from ..experts.store import TrajectoryStore
from ..models.params import ParamLayout, functional_features
from .base import Term

SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)


def rbf_mixture(a: Tensor, b: Tensor, sigmas: tuple[float, ...] = SIGMAS) -> Tensor:
    """k(a_i, b_j) for every pair: the sum of RBF kernels of bandwidths `sigmas`."""
    d2 = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)
    return sum(torch.exp(-d2 / (2 * s * s)) for s in sigmas)


def mmd2_unbiased(x: Tensor, y: Tensor, sigmas: tuple[float, ...] = SIGMAS) -> Tensor:
    """The unbiased estimate of MMD^2 between samples x (m x d) and y (n x d); m, n >= 2."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least two samples a side (got {m} and {n}).")
    kxx, kyy, kxy = rbf_mixture(x, x, sigmas), rbf_mixture(y, y, sigmas), rbf_mixture(x, y, sigmas)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2 * kxy.mean()


class MMDStep:
    """The MMD term of a D3 iteration, on the experts `experts` of `store` and the network `model`."""

    def __init__(
        self,
        dcfg: D3Config,
        data: PreparedData,
        store: TrajectoryStore,
        experts: list[int],
        model: torch.nn.Module,
    ):
        self.cfg, self.data, self.store, self.experts, self.model = dcfg, data, store, experts, model
        self.layout = ParamLayout.from_model(model)
        self.final = int(store.manifest.get("train_epochs"))
        self.by_class = [torch.nonzero(data.train_y == c).flatten() for c in range(data.num_classes)]
        self.value = float("nan")

    def features(self, flat: Tensor, x: Tensor) -> Tensor:
        self.model.train()
        return functional_features(self.model, flat, x, layout=self.layout)

    def term(self, gen: torch.Generator, synthetic) -> Term:  # noqa: ANN001 (a LatentPriors)
        lpc, device = self.cfg.lpc, self.data.train_x.device
        expert = self.experts[int(torch.randint(len(self.experts), (1,), generator=gen))]
        flat = self.store.snapshot(expert, self.final, device=device)
        s = self.cfg.mmd_samples // lpc
        drawn = synthetic.samples(gen, s)  # s x N x C x H x W
        loss = torch.zeros((), device=device)
        for c, pool in enumerate(self.by_class):
            pick = pool[torch.randperm(pool.numel(), generator=gen)[: s * lpc].to(pool.device)]
            with torch.no_grad():
                real = self.features(flat, self.data.train_x[pick])
            syn = self.features(flat, drawn[:, c * lpc : (c + 1) * lpc].flatten(0, 1))
            loss = loss + mmd2_unbiased(syn, real)
        loss = self.cfg.mmd_weight * loss
        self.value = float(loss.detach())
        return Term(loss, ("latents", "decoder"))
