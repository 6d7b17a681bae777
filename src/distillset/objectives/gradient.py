"""Gradient matching (DC, Zhao et al. 2021; DSA, Zhao & Bilen 2021) as an objective of the loop.

One iteration (the authors' outer iteration): a fresh randomly initialised network and its SGD(lr_net,
momentum 0); then `outer_loop` rounds of
  - BatchNorm networks only: forward 16 real images per class in train mode, then freeze the statistics;
  - L = sum_c D(grad_theta CE(f(real_c)), grad_theta CE(f(S_c))), a batch of `batch_real` real images
    of class c against the class's synthetic images, the real gradient detached (DSA: both batches of a
    class under one shared augmentation draw);
  - one step of the images on L (the loop's step: SGD(lr_img, momentum_img));
  - except after the last round: `inner_loop` EPOCHS of training the network on S (batch `batch_train`;
    DSA: per-sample augmentation on every batch).
(outer_loop, inner_loop) by IPC as in the authors' code: 1:(1,1), 10:(10,50), 20:(20,25), 30:(30,20),
40:(40,15), 50:(50,10); other IPCs must set both.

The distance D, over the network's parameter tensors (`dis_metric`):
  - `ours` (default): every 1-D tensor (biases, norm affines) skipped; conv weights reshaped to
    (out, in*k*k), 3-D LayerNorm affines to (C, H*W), linear weights kept (out, in); per row
    `1 - <a, b> / (||a|| ||b|| + 1e-6)`, summed over rows and tensors;
  - `mse`: sum (g_syn - g_real)^2 over all parameters;
  - `cos`: 1 - cos of the two whole concatenated vectors (1e-6 in the denominator).

PAD's parameter selection on DC (the paper's figures only; the cut is ours to define): skip the distance
terms of the shallowest parameters, with the cut of trajectory matching (`depth_ratio`, `mask`): `flat`
drops the flat indices below `int(depth_ratio * P)` (`ours`: a row counts only when it starts at or after
the cut; `mse`/`cos`: the elements from the cut), `layers` drops whole leading layers.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import Config
from ..data.augment import DSA
from ..data.prepared import PreparedData
from ..errors import ConfigError
from ..models.params import ParamLayout
from ..synthetic import Prototypes
from ..training import train_epoch
from .base import Term, register_objective
from .real import RealMatching, RealPool, has_batchnorm, siamese
from .trajectory.loss import deep_parameters

LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
BN_IMAGES_PER_CLASS = 16
EPS = 1e-6


def loops(ipc: int, outer: int | None, inner: int | None) -> tuple[int, int]:
    """(outer_loop, inner_loop): the configured ones, else the authors' by IPC."""
    if outer is not None and inner is not None:
        return outer, inner
    if ipc not in LOOPS:
        raise ConfigError(
            f"DC's loops are known for IPC {', '.join(map(str, LOOPS))}; at IPC {ipc} set "
            "distill.outer_loop and distill.inner_loop."
        )
    default = LOOPS[ipc]
    return (outer if outer is not None else default[0]), (inner if inner is not None else default[1])


def _rows(g: Tensor) -> Tensor | None:
    """A gradient as DC's `ours` distance sees it: rows of a matrix, or None for a skipped 1-D tensor."""
    if g.dim() == 1:
        return None
    if g.dim() == 4:
        return g.reshape(g.shape[0], -1)
    if g.dim() == 3:
        return g.reshape(g.shape[0], g.shape[1] * g.shape[2])
    return g  # 2-D: linear weights stay (out, in)


def kept_rows(layout: ParamLayout, cut: int) -> list[int]:
    """Per parameter tensor, the first row (of its `ours` matrix) that starts at or after flat index `cut`."""
    out = []
    for e in layout:
        rows = e.shape[0] if len(e.shape) > 1 else 1
        row_len = e.numel // rows
        first = max(0, -(-(cut - e.offset) // row_len))  # ceil((cut - offset) / row_len), at least 0
        out.append(min(rows, first))
    return out


def gradient_distance(
    gw_syn: list[Tensor],
    gw_real: list[Tensor],
    metric: str = "ours",
    layout: ParamLayout | None = None,
    cut: int = 0,
) -> Tensor:
    """D(gw_syn, gw_real) of the module docstring, over the parameters from flat index `cut` on."""
    if metric == "ours":
        starts = kept_rows(layout, cut) if cut else [0] * len(gw_syn)
        dis = gw_syn[0].new_zeros(())
        for gs, gr, first in zip(gw_syn, gw_real, starts, strict=True):
            a, b = _rows(gs), _rows(gr)
            if a is None:
                continue
            a, b = a[first:], b[first:]
            if a.shape[0] == 0:
                continue
            cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + EPS)
            dis = dis + (1 - cos).sum()
        return dis
    syn = torch.cat([g.reshape(-1) for g in gw_syn])[cut:]
    real = torch.cat([g.reshape(-1) for g in gw_real])[cut:]
    if metric == "mse":
        return ((syn - real) ** 2).sum()
    if metric == "cos":
        return 1 - (syn * real).sum() / (syn.norm() * real.norm() + EPS)
    raise ConfigError(f"distill.dis_metric must be ours, mse or cos, got {metric!r}.")


@register_objective
class GradientMatching(RealMatching):
    name = "gradient"
    label = "gradient matching"

    @classmethod
    def check(cls, cfg: Config) -> None:
        super().check(cfg)
        loops(cfg.data.ipc, cfg.distill.outer_loop, cfg.distill.inner_loop)

    def __init__(self, cfg: Config, data: PreparedData, pool: RealPool, pool_info: dict):
        super().__init__(cfg, data, pool, pool_info)
        self.outer, self.inner = loops(cfg.data.ipc, self.dcfg.outer_loop, self.dcfg.inner_loop)
        self.layout = ParamLayout.from_model(self.network(0))
        keep = deep_parameters(self.layout, self.dcfg.depth_ratio, self.dcfg.mask)
        self.cut = keep.start if keep is not None else 0
        self._losses: list[float] = []

    def filter_info(self) -> dict:
        if not self.cut:
            return {}
        return {
            "matched_parameters": {
                "from_index": self.cut,
                "of": self.layout.numel,
                "metric": self.dcfg.dis_metric,
            }
        }

    def class_loss(self, net: torch.nn.Module, c: int, syn: Tensor, gen: torch.Generator) -> Tensor:
        """D of class c: the gradient on a real batch against the gradient on the class's synthetic images."""
        params = list(net.parameters())
        real = self.pool.batch(c, self.dcfg.batch_real, gen)
        real, syn = siamese(real, syn, self.strategy, gen)
        y_real = torch.full((real.shape[0],), c, device=real.device)
        y_syn = torch.full((syn.shape[0],), c, device=syn.device)
        gw_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), y_real), params)]
        gw_syn = torch.autograd.grad(F.cross_entropy(net(syn), y_syn), params, create_graph=True)
        return gradient_distance(list(gw_syn), gw_real, self.dcfg.dis_metric, self.layout, self.cut)

    def terms(self, it: int, gen: torch.Generator, synthetic: Prototypes) -> Iterator[Term]:
        dcfg, ipc, num_classes = self.dcfg, self.cfg.data.ipc, self.data.num_classes
        net = self.network(it)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=dcfg.lr_net, momentum=0.0)
        aug = DSA(self.strategy) if self.strategy else None
        bn = has_batchnorm(net)
        self._losses = []
        for rnd in range(self.outer):
            if bn:  # the authors' BatchNorm handling: statistics of real images, then frozen
                net.train()
                with torch.no_grad():
                    net(torch.cat([self.pool.batch(c, BN_IMAGES_PER_CLASS, gen) for c in range(num_classes)]))
                for m in net.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()
            images, _ = synthetic.decode()
            loss = sum(
                self.class_loss(net, c, images[c * ipc : (c + 1) * ipc], gen) for c in range(num_classes)
            )
            self._losses.append(float(loss.detach()))
            yield Term(loss, ("images",))
            if rnd == self.outer - 1:
                break
            x, y = synthetic.images.detach().clone(), synthetic.labels
            for _ in range(self.inner):
                train_epoch(net, x, y, opt, dcfg.batch_train, gen, aug, gen)

    def _mean_loss(self) -> float:
        return sum(self._losses) / (self.data.num_classes * len(self._losses))

    def record(self, synthetic: Prototypes) -> dict:
        return {"loss": self._mean_loss(), "rounds": len(self._losses)}

    def describe(self) -> str:
        return f"loss {self._mean_loss():.4f}"
