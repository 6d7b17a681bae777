"""AST's smooth experts: the clipping loss, the input-gradient penalty (double backprop), the step decay."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillset.config import ExpertsConfig, load_config
from distillset.experts.optim import GSAM
from distillset.experts.smooth import clip_factor, clipped_epochs, input_gradient_penalty, lr_at
from distillset.experts.train import build_expert_model, store_identity, train_experts
from distillset.identity import mismatch
from distillset.training import classification_loss, train_epoch
from tests.conftest import TINY, dies_on_call

NEW_KEYS = ("clip_loss", "clip_fraction", "grad_penalty", "grad_penalty_norm", "lr_decay", "lr_decay_at")


# ---- the clipping loss -------------------------------------------------------------------------------


def test_clip_factor_is_asts_schedule_at_50_epochs():
    ecfg = ExpertsConfig(train_epochs=50, clip_loss=True, clip_fraction=0.2)
    assert clipped_epochs(ecfg) == 10
    factors = [clip_factor(e, ecfg) for e in range(50)]
    for e in range(10):
        assert factors[e] == pytest.approx(0.5 + 0.05 * e, abs=1e-12)
    assert all(f == 1.0 for f in factors[10:])
    assert all(a < b for a, b in zip(factors[:10], factors[1:11], strict=True))  # rising to 1
    assert factors[0] == 0.5


def test_clip_factor_is_one_when_off_and_clips_at_least_one_epoch():
    off = ExpertsConfig(train_epochs=50, clip_loss=False)
    assert all(clip_factor(e, off) == 1.0 for e in range(50))
    short = ExpertsConfig(train_epochs=2, clip_loss=True, clip_fraction=0.1)
    assert clipped_epochs(short) == 1
    assert [clip_factor(e, short) for e in range(2)] == [0.5, 1.0]


# ---- the learning rate -------------------------------------------------------------------------------


def test_lr_decays_from_the_decay_epoch_on():
    ecfg = ExpertsConfig(train_epochs=10, lr_teacher=0.003, lr_decay=0.6, lr_decay_at=0.35)
    start = int(0.35 * 10)  # 3
    lrs = [lr_at(e, ecfg) for e in range(10)]
    assert lrs[:start] == [0.003] * start
    assert lrs[start:] == pytest.approx([0.003 * 0.6] * (10 - start))
    assert [lr_at(e, ExpertsConfig(train_epochs=10, lr_teacher=0.003)) for e in range(10)] == [0.003] * 10


# ---- the input-gradient penalty ----------------------------------------------------------------------


def _smooth_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)
    ).double()


def _reference_penalty(grad: torch.Tensor, norm: str) -> torch.Tensor:
    norms = grad.norm(dim=1) if norm == "channel" else grad.flatten(1).norm(dim=1)
    return ((norms - 1) ** 2).mean()


def test_input_gradient_matches_finite_differences():
    model = _smooth_net()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(xr).sum(), xr)
    h = 1e-6
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.numel()):
            step = torch.zeros(x.numel(), dtype=x.dtype)
            step[i] = h
            step = step.view_as(x)
            fd.view(-1)[i] = (model(x + step).sum() - model(x - step).sum()) / (2 * h)
    assert torch.allclose(grad, fd, atol=1e-8)
    for norm in ("channel", "image"):
        value = input_gradient_penalty(model, x, norm)
        assert value.item() == pytest.approx(_reference_penalty(fd, norm).item(), abs=1e-8)


@pytest.mark.parametrize("norm", ["channel", "image"])
def test_penalty_parameter_gradient_matches_finite_differences(norm):
    model = _smooth_net()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    params = list(model.parameters())
    # the last bias does not enter the input gradient: its gradient is None, i.e. 0 (checked below)
    grads = torch.autograd.grad(input_gradient_penalty(model, x, norm), params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    # nothing flows into the data, even when the batch itself requires a gradient
    watched = x.clone().requires_grad_(True)
    value = input_gradient_penalty(model, watched, norm)
    assert torch.autograd.grad(value, watched, allow_unused=True)[0] is None
    h = 1e-6
    gen = torch.Generator().manual_seed(1)
    for p, g in zip(params, grads, strict=True):
        for j in torch.randint(0, p.numel(), (3,), generator=gen).tolist():
            flat = p.data.view(-1)
            old = flat[j].item()
            flat[j] = old + h
            up = input_gradient_penalty(model, x, norm).item()
            flat[j] = old - h
            down = input_gradient_penalty(model, x, norm).item()
            flat[j] = old
            assert g.reshape(-1)[j].item() == pytest.approx((up - down) / (2 * h), abs=1e-7)


def test_penalty_of_a_linear_model_by_hand():
    torch.manual_seed(2)
    C, H, W, K = 3, 2, 2, 4
    lin = nn.Linear(C * H * W, K).double()
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.randn(5, C, H, W, dtype=torch.float64)
    g = lin.weight.detach().sum(0).view(C, H, W)  # d(sum_k f_k)/dx, the same for every image
    per_pixel = torch.sqrt((g**2).sum(0))  # (H, W)
    channel = ((per_pixel - 1) ** 2).mean()
    image = (torch.sqrt((g**2).sum()) - 1) ** 2
    assert input_gradient_penalty(model, x, "channel").item() == pytest.approx(channel.item(), rel=1e-12)
    assert input_gradient_penalty(model, x, "image").item() == pytest.approx(image.item(), rel=1e-12)
    with pytest.raises(ValueError, match="norm"):
        input_gradient_penalty(model, x, "pixel")


# ---- train_epoch with a loss scale and a penalty ------------------------------------------------------


def _tiny_problem(dtype=torch.float32):
    torch.manual_seed(3)
    x = torch.randn(12, 2, 4, 4, dtype=dtype)
    y = torch.randint(0, 3, (12,))
    return _smooth_net().to(dtype), x, y


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _run(model, x, y, opt, batch, seed=0, **kw):
    return train_epoch(model, x, y, opt, batch, torch.Generator().manual_seed(seed), **kw)


def test_default_loss_scale_and_no_penalty_are_bit_identical():
    base, x, y = _tiny_problem()
    a, b = _smooth_net().float(), _smooth_net().float()
    oa = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    ob = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for seed in range(2):
        ra = _run(a, x, y, oa, 5, seed)
        rb = _run(b, x, y, ob, 5, seed, loss_scale=1.0, penalty=None)
        assert ra == rb
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_half_loss_scale_moves_half_as_far():
    model, x, y = _tiny_problem(torch.float64)
    start = _params(model)
    moves = {}
    for scale in (1.0, 0.5):
        for p, s in zip(model.parameters(), start, strict=True):
            p.data.copy_(s)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss, _ = _run(model, x, y, opt, 12, loss_scale=scale)  # one batch: one step
        moves[scale] = [p.detach() - s for p, s in zip(model.parameters(), start, strict=True)]
        moves[f"loss{scale}"] = loss
    for full, half in zip(moves[1.0], moves[0.5], strict=True):
        assert full.abs().max() > 0
        assert torch.allclose(half, 0.5 * full, rtol=0, atol=1e-15)
    assert moves["loss1.0"] == moves["loss0.5"]  # the logged loss is the plain cross-entropy


def test_penalty_is_added_unscaled_on_the_clean_batch():
    model, x, y = _tiny_problem(torch.float64)
    lam, scale, lr = 2.0, 0.5, 0.1
    shift = lambda xb, gen: xb + 1.0  # noqa: E731 - a stand-in augmentation the penalty must not see

    # by hand: one step on scale * CE(augmented batch) + lambda * penalty(clean batch)
    objective = scale * classification_loss(model(x + 1.0), y) + lam * input_gradient_penalty(model, x)
    grads = torch.autograd.grad(objective, list(model.parameters()))
    expected = [p.detach() - lr * g for p, g in zip(model.parameters(), grads, strict=True)]
    plain = classification_loss(model(x + 1.0), y).item()

    seen = []

    def penalty(m, xb):
        seen.append(xb)
        return lam * input_gradient_penalty(m, xb)

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(0)
    loss, _ = train_epoch(model, x, y, opt, 12, order, shift, None, loss_scale=scale, penalty=penalty)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 1 and torch.equal(seen[0], x[perm])  # the clean batch, in the epoch's order
    assert loss == pytest.approx(plain, rel=1e-12)  # the logged loss: CE, unscaled, without the penalty
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p.detach(), e, atol=1e-12)


def test_gsam_closure_recomputes_the_same_total_loss():
    # GSAM without perturbation or decomposition is SGD on the closure's gradient: it must be the gradient
    # of the same scaled CE + penalty as the first pass.
    model, x, y = _tiny_problem(torch.float64)
    ref, _, _ = _tiny_problem(torch.float64)

    def penalty(m, xb):
        return 2.0 * input_gradient_penalty(m, xb, "image")

    gsam = GSAM(model.parameters(), lr=0.1, rho=0.0, alpha=0.0, momentum=0.9)
    sgd = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for seed in range(2):
        _run(model, x, y, gsam, 5, seed, loss_scale=0.7, penalty=penalty)
        _run(ref, x, y, sgd, 5, seed, loss_scale=0.7, penalty=penalty)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-12)


# ---- smooth experts end to end ------------------------------------------------------------------------

SMOOTH = [
    "experts.clip_loss=true",
    "experts.grad_penalty=2.0",
    "experts.lr_decay=0.6",
    "experts.momentum=0.9",
]


def test_smooth_experts_record_their_lr_and_have_their_own_identity(tmp_path, digits_data):
    plain = load_config("random-digits", [*TINY, "experts.num_experts=1"])
    smooth = load_config("random-digits", [*TINY, "experts.num_experts=1", *SMOOTH])
    store = train_experts(smooth, tmp_path / "smooth", digits_data, progress=False)
    lr = plain.experts.lr_teacher
    decay_at = int(0.5 * smooth.experts.train_epochs)  # 1 of 3
    assert store.record(0)["lr"] == pytest.approx([lr] * decay_at + [0.6 * lr] * (3 - decay_at))
    traj = store.load(0)
    assert torch.isfinite(traj).all()
    reference = train_experts(plain, tmp_path / "plain", digits_data, progress=False)
    assert reference.record(0)["lr"] == [lr] * 3
    assert torch.equal(traj[0], reference.load(0)[0]) and not torch.equal(traj[-1], reference.load(0)[-1])

    probe = build_expert_model(plain, digits_data, ("expert", 0, "init"))
    plain_id = store_identity(plain, digits_data, probe)
    older = {**plain_id, "experts": {k: v for k, v in plain_id["experts"].items() if k not in NEW_KEYS}}
    assert mismatch(older, plain_id) is None  # stores made before these keys stay valid
    smooth_id = store_identity(smooth, digits_data, probe)
    assert smooth_id != plain_id
    assert {k: smooth_id["experts"][k] for k in NEW_KEYS} == {
        "clip_loss": True,
        "clip_fraction": 0.2,
        "grad_penalty": 2.0,
        "grad_penalty_norm": "channel",
        "lr_decay": 0.6,
        "lr_decay_at": 0.5,
    }
    only_decay = load_config("random-digits", [*TINY, "experts.lr_decay=0.5"])
    keys = set(store_identity(only_decay, digits_data, probe)["experts"])
    assert {"lr_decay", "lr_decay_at"} <= keys and not {"clip_fraction", "grad_penalty_norm"} & keys
    assert (
        mismatch(older, store_identity(only_decay, digits_data, probe))
        == "experts.lr_decay (1.0 there, 0.5 now)"
    )


def test_interrupted_smooth_expert_resumes_to_the_same_trajectory(tmp_path, digits_data, monkeypatch):
    cfg = load_config("random-digits", [*TINY, "experts.num_experts=1", *SMOOTH])
    reference = train_experts(cfg, tmp_path / "a", digits_data, progress=False)

    import distillset.experts.train as train_mod

    real = train_mod.train_epoch
    # killed at epoch 2, after the decay and two checkpoints
    monkeypatch.setattr(train_mod, "train_epoch", dies_on_call(3, real))
    with pytest.raises(KeyboardInterrupt):
        train_experts(cfg, tmp_path / "b", digits_data, progress=False)
    assert (tmp_path / "b" / "partial-00000.safetensors").exists()
    monkeypatch.setattr(train_mod, "train_epoch", real)
    resumed = train_experts(cfg, tmp_path / "b", digits_data, progress=False)
    assert torch.equal(resumed.load(0), reference.load(0))
    assert resumed.record(0)["lr"] == reference.record(0)["lr"]
