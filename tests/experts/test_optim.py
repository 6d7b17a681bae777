"""GSAM (FTD/DATM's expert optimiser) against the formula computed by hand."""

from __future__ import annotations

import torch

from distillset.config import load_config
from distillset.experts.optim import GSAM
from distillset.experts.train import build_expert_model, store_identity, train_experts
from distillset.identity import mismatch
from tests.conftest import TINY


def _loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(x @ w, y)


def test_gsam_step_matches_the_formula():
    torch.manual_seed(0)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    w0 = torch.randn(5, 3, dtype=torch.float64)
    lr, rho, alpha = 0.1, 0.05, 0.3

    w0r = w0.clone().requires_grad_()
    g = torch.autograd.grad(_loss(w0r, x, y), w0r)[0]
    wp = (w0 + rho * g / g.norm()).requires_grad_()
    gp = torch.autograd.grad(_loss(wp, x, y), wp)[0]
    cos = (g * gp).sum() / (g.norm() * gp.norm())
    vertical = g - cos * g.norm() * gp / gp.norm()
    expected = w0 - lr * (gp - alpha * vertical)

    w = torch.nn.Parameter(w0.clone())
    opt = GSAM([w], lr=lr, rho=rho, alpha=alpha)
    _loss(w, x, y).backward()
    opt.step(lambda: _loss(w, x, y).backward())
    assert torch.allclose(w.detach(), expected, atol=1e-12)
    assert not torch.allclose(expected, w0 - lr * g, atol=1e-6)  # it is not plain SGD


def test_gsam_without_perturbation_is_sgd():
    torch.manual_seed(1)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    w = torch.nn.Parameter(torch.randn(4, 2))
    ref = torch.nn.Parameter(w.detach().clone())
    opt = GSAM([w], lr=0.1, rho=0.0, alpha=0.0, momentum=0.9)
    sgd = torch.optim.SGD([ref], lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        _loss(w, x, y).backward()
        opt.step(lambda: _loss(w, x, y).backward())
        sgd.zero_grad()
        _loss(ref, x, y).backward()
        sgd.step()
    assert torch.allclose(w, ref, atol=1e-6)


def test_gsam_experts_train_and_record_their_optimizer(tmp_path, digits_data):
    cfg = load_config("random-digits", [*TINY, "experts.num_experts=1", "experts.train_epochs=2"])
    gsam = load_config(
        "random-digits", [*TINY, "experts.num_experts=1", "experts.train_epochs=2", "experts.optimizer=gsam"]
    )
    a = train_experts(cfg, tmp_path / "sgd", digits_data, progress=False).load(0)
    b = train_experts(gsam, tmp_path / "gsam", digits_data, progress=False).load(0)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[-1], b[-1])  # same start, other path
    probe = build_expert_model(cfg, digits_data, ("expert", 0, "init"))
    sgd_identity = store_identity(cfg, digits_data, probe)
    assert "rho" not in sgd_identity["experts"]  # GSAM's knobs do not change SGD experts
    plain_keys = {k: v for k, v in sgd_identity["experts"].items() if k != "optimizer"}
    older = {**sgd_identity, "experts": plain_keys}
    assert mismatch(older, sgd_identity) is None  # stores older than GSAM still match
    gsam_identity = store_identity(gsam, digits_data, probe)
    assert gsam_identity["experts"]["optimizer"] == "gsam" and "rho" in gsam_identity["experts"]
    assert mismatch(older, gsam_identity) is not None
