"""The student of trajectory matching: a network run functionally on a flat parameter vector.

One inner step on the synthetic set S is
    g_i = grad_theta  scale * loss(f(theta_i; DSA_i(S[B_i])), Y[B_i])
    v_{i+1} = mu * v_i + g_i          (mu = 0: plain SGD, v_{i+1} = g_i)
    theta_{i+1} = theta_i - alpha * v_{i+1}
with hard labels (cross-entropy) or label logits (soft cross-entropy, DATM). `alpha` is the learnable
synthetic lr, `mu` the heavy-ball momentum (AST), `scale` a per-iteration weight on the inner loss (AST's
balanced loss). Everything a step depends on besides theta_i is an argument, so any step can be rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.augment import DSAParams, apply_dsa
from ..models.params import ParamLayout, functional_forward
from ..training import classification_loss


@dataclass
class Student:
    model: nn.Module
    layout: ParamLayout
    momentum: float = 0.0
    loss_scale: float = 1.0

    @classmethod
    def of(cls, model: nn.Module, momentum: float = 0.0, loss_scale: float = 1.0) -> Student:
        return cls(model, ParamLayout.from_model(model), momentum, loss_scale)

    def loss(
        self, theta: Tensor, images: Tensor, targets: Tensor, idx: Tensor, aug: DSAParams | None
    ) -> Tensor:
        """The inner loss of one step at parameters `theta` on the mini-batch `idx` of the synthetic set."""
        x = images[idx]
        if aug is not None:
            x = apply_dsa(x, aug)
        out = functional_forward(self.model, theta, x, layout=self.layout)
        loss = classification_loss(out, targets[idx])
        return loss * self.loss_scale if self.loss_scale != 1.0 else loss

    def grad(
        self,
        theta: Tensor,
        images: Tensor,
        targets: Tensor,
        idx: Tensor,
        aug: DSAParams | None,
        create_graph: bool = False,
    ) -> Tensor:
        """`g_i`, the gradient of the inner loss with respect to the flat parameters `theta`."""
        with torch.enable_grad():
            if not theta.requires_grad:
                theta = theta.detach().requires_grad_(True)
            loss = self.loss(theta, images, targets, idx, aug)
            return torch.autograd.grad(loss, theta, create_graph=create_graph)[0]
