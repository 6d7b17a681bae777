"""The shared training pieces: the two losses against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from distillset.training import classification_loss, soft_cross_entropy

LN2, LN5 = math.log(2), math.log(5)
# label logits t and network logits z; softmax(t) rows: (1/8, 2/8, 5/8) and (1/3, 1/3, 1/3),
# softmax(z) rows: (1/4, 1/4, 1/2) and (1/8, 2/8, 5/8)
T = torch.tensor([[0.0, LN2, LN5], [0.0, 0.0, 0.0]], dtype=torch.float64)
Z = torch.tensor([[0.0, 0.0, LN2], [0.0, LN2, LN5]], dtype=torch.float64)


def test_soft_cross_entropy_by_hand():
    """-sum_k softmax(t)_k log softmax(z)_k, averaged over the batch.

    Row 1: log softmax(z) = (-2 ln 2, -2 ln 2, -ln 2), so the loss is (1/8 + 2/8) 2 ln 2 + 5/8 ln 2
    = 11/8 ln 2. Row 2: log softmax(z) = (-3 ln 2, -2 ln 2, -(3 ln 2 - ln 5)) under the uniform target:
    (8 ln 2 - ln 5) / 3. The loss is their mean."""
    want = (11 / 8 * LN2 + (8 * LN2 - LN5) / 3) / 2
    assert soft_cross_entropy(Z, T).item() == pytest.approx(want, rel=1e-12)
    # the target side is the softmax of the label logits, not of the network's logits
    assert soft_cross_entropy(T, Z).item() != pytest.approx(want, rel=1e-3)


def test_soft_cross_entropy_gradient_is_softmax_minus_target():
    """d/dz of the batch mean is (softmax(z) - softmax(t)) / B; the label logits receive a gradient too."""
    t, z = T.clone().requires_grad_(True), Z.clone().requires_grad_(True)
    soft_cross_entropy(z, t).backward()
    want = torch.tensor(
        [[1 / 4 - 1 / 8, 1 / 4 - 2 / 8, 1 / 2 - 5 / 8], [1 / 8 - 1 / 3, 2 / 8 - 1 / 3, 5 / 8 - 1 / 3]],
        dtype=torch.float64,
    )
    assert torch.allclose(z.grad, want / 2, atol=1e-12)
    assert t.grad.abs().sum() > 0


def test_classification_loss_picks_the_loss_by_the_targets():
    """Integer labels: ordinary cross-entropy (row 1's label 2: ln 2; row 2's label 0: 3 ln 2). Float label
    logits: soft cross-entropy, which is not the cross-entropy of their argmax."""
    hard = torch.tensor([2, 0])
    assert classification_loss(Z, hard).item() == pytest.approx((LN2 + 3 * LN2) / 2, rel=1e-12)
    assert classification_loss(Z, T).item() == pytest.approx(soft_cross_entropy(Z, T).item(), rel=1e-15)
    assert classification_loss(Z, T).item() != pytest.approx(
        classification_loss(Z, T.argmax(1)).item(), rel=1e-3
    )
