"""The meta-gradient engines: adjoint == unroll exactly (float64), TESLA's documented bias, the plan."""

from __future__ import annotations

import pytest
import torch

from distillset.inner import Student, meta_loss, rollout, sample_plan
from distillset.models import build_model
from distillset.models.params import flat_params
from distillset.objectives import ParameterMatch

STRATEGY = "color_crop_cutout_scale_rotate"


def _problem(seed: int = 0, n: int = 9, classes: int = 3):
    torch.manual_seed(seed)
    model = build_model("convnet", (1, 8, 8), classes, width=4, depth=2).double()
    theta0 = flat_params(model)
    target = theta0 + 0.05 * torch.randn_like(theta0)
    images = torch.randn(n, 1, 8, 8, dtype=torch.float64)
    logits = torch.randn(n, classes, dtype=torch.float64)
    labels = torch.arange(n) % classes
    return model, theta0, target, images, logits, labels


def _grads(engine, model, theta0, images, targets, alpha, plan, terms, momentum=0.0):
    imgs = images.clone().requires_grad_(True)
    tg = targets.clone().requires_grad_(True) if targets.is_floating_point() else targets
    lr = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
    loss = meta_loss(engine, Student.of(model, momentum=momentum), theta0, imgs, tg, lr, plan, terms)
    loss.backward()
    return loss.detach(), imgs.grad, (tg.grad if tg.is_floating_point() else None), lr.grad


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("soft", [True, False])
def test_adjoint_equals_unroll_in_float64(momentum, soft):
    """DSA on every step, batch_syn (4) smaller than the set (9), momentum, soft or hard labels, and a loss
    term on an intermediate state (AST): image, lr and label gradients agree to 1e-12 relative (1e-15 to
    2e-15 measured); an HVP accumulated in single precision would be off by about 1e-9."""
    model, theta0, target, images, logits, labels = _problem()
    plan = sample_plan(9, 7, 4, (8, 8), STRATEGY, torch.Generator().manual_seed(3))
    assert [b.numel() for b in plan.batches[:3]] == [4, 4, 1]  # a permutation walked in chunks
    terms = {7: ParameterMatch(theta0, target), 3: ParameterMatch(theta0, 0.9 * target)}
    targets = logits if soft else labels
    unroll = _grads("unroll", model, theta0, images, targets, 0.05, plan, terms, momentum)
    adjoint = _grads("adjoint", model, theta0, images, targets, 0.05, plan, terms, momentum)
    assert torch.allclose(adjoint[0], unroll[0], rtol=1e-12)
    assert _rel(adjoint[1], unroll[1]) < 1e-12
    assert _rel(adjoint[3], unroll[3]) < 1e-12
    if soft:
        assert _rel(adjoint[2], unroll[2]) < 1e-12
    assert unroll[1].abs().sum() > 0 and unroll[3].abs() > 0  # the test compares something


def test_tesla_drops_the_hessian_terms():
    """TESLA's gradient is the sweep without Hessian-vector products. Measured here (ConvNet-4-2, 6 steps):
    about 0.5% off on the images at lr 0.01 and about 90% off at lr 1, against the exact gradient."""
    model, theta0, target, images, logits, _ = _problem()
    terms = {6: ParameterMatch(theta0, target)}
    errors = {}
    for alpha in (0.01, 1.0):
        plan = sample_plan(9, 6, 4, (8, 8), STRATEGY, torch.Generator().manual_seed(1))
        exact = _grads("adjoint", model, theta0, images, logits, alpha, plan, terms)
        tesla = _grads("tesla", model, theta0, images, logits, alpha, plan, terms)
        assert torch.allclose(tesla[0], exact[0], rtol=1e-12)  # same forward value
        errors[alpha] = _rel(tesla[1], exact[1])
    assert 1e-4 < errors[0.01] < 0.05
    assert 0.3 < errors[1.0]
    assert errors[1.0] > 10 * errors[0.01]  # the bias grows with the inner lr


def test_tesla_equals_adjoint_for_one_step():
    """With one inner step there is no Hessian product to drop: TESLA is exact."""
    model, theta0, target, images, logits, _ = _problem()
    plan = sample_plan(9, 1, None, (8, 8), STRATEGY, torch.Generator().manual_seed(2))
    terms = {1: ParameterMatch(theta0, target)}
    exact = _grads("unroll", model, theta0, images, logits, 0.1, plan, terms)
    tesla = _grads("tesla", model, theta0, images, logits, 0.1, plan, terms)
    assert _rel(tesla[1], exact[1]) < 1e-10
    assert _rel(tesla[3], exact[3]) < 1e-10


@pytest.mark.parametrize("engine", ["unroll", "tesla", "adjoint"])
def test_normalised_loss_is_one_with_zero_steps(engine):
    model, theta0, target, images, logits, _ = _problem()
    start = theta0 + 0.01 * torch.randn_like(theta0)
    plan = sample_plan(9, 0, None, (8, 8), STRATEGY, torch.Generator())
    loss = meta_loss(
        engine,
        Student.of(model),
        start,
        images.requires_grad_(True),
        logits,
        torch.tensor(0.01, dtype=torch.float64, requires_grad=True),
        plan,
        {0: ParameterMatch(start, target)},
    )
    assert float(loss.detach()) == pytest.approx(1.0, abs=1e-12)


def test_rollout_matches_torch_sgd():
    """The student's plain-SGD steps are torch.optim.SGD's steps on the same batches (no augmentation)."""
    model, theta0, _, images, _, labels = _problem()
    plan = sample_plan(9, 3, 5, (8, 8), None, torch.Generator().manual_seed(0))
    thetas, _ = rollout(
        Student.of(model), theta0, images, labels, torch.tensor(0.1, dtype=torch.float64), plan
    )
    ref = build_model("convnet", (1, 8, 8), 3, width=4, depth=2).double()
    from distillset.models.params import load_flat_

    load_flat_(ref, theta0)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for idx in plan.batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(images[idx]), labels[idx]).backward()
        opt.step()
    assert torch.allclose(thetas[-1], flat_params(ref), atol=1e-12)


def test_plan_is_replayable_and_seeded():
    a = sample_plan(10, 5, 3, (8, 8), STRATEGY, torch.Generator().manual_seed(7))
    b = sample_plan(10, 5, 3, (8, 8), STRATEGY, torch.Generator().manual_seed(7))
    for x, y in zip(a.batches, b.batches, strict=True):
        assert torch.equal(x, y)
    for p, q in zip(a.augment, b.augment, strict=True):
        assert p.family == q.family and all(torch.equal(p.values[k], q.values[k]) for k in p.values)
    # the first permutation covers every image exactly once
    assert sorted(torch.cat(a.batches[:4]).tolist()) == list(range(10))


def test_bad_engine_and_terms_are_refused():
    model, theta0, target, images, logits, _ = _problem()
    plan = sample_plan(9, 2, None, (8, 8), None, torch.Generator())
    lr = torch.tensor(0.01, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown engine"):
        meta_loss(
            "exact", Student.of(model), theta0, images, logits, lr, plan, {2: ParameterMatch(theta0, target)}
        )
    with pytest.raises(ValueError, match="outside"):
        meta_loss(
            "adjoint",
            Student.of(model),
            theta0,
            images,
            logits,
            lr,
            plan,
            {5: ParameterMatch(theta0, target)},
        )


def _tesla_by_unroll(student, theta0, images, targets, lr, plan, terms):
    """TESLA restated as an unroll: each step's gradient g_i is taken at a detached theta_i, so the synthetic
    set reaches theta_N only through the g_i themselves (no Hessian products), momentum included."""
    theta, v, total = theta0.detach(), None, 0.0
    for i in range(plan.steps):
        leaf = theta.detach().requires_grad_(True)
        loss = student.loss(leaf, images, targets, plan.batches[i], plan.augment[i])
        g = torch.autograd.grad(loss, leaf, create_graph=True)[0]
        v = g if v is None else student.momentum * v + g
        theta = theta - lr * v
        if i + 1 in terms:
            total = total + terms[i + 1](theta)
    return total


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_all_three_engines_with_ast_terms_momentum_and_loss_scale(momentum):
    """AST's inner loop: intermediate terms at k_i = (N // M) i with adaptive betas, heavy-ball momentum and
    a balanced-loss weight. In float64 the adjoint equals the unroll, and TESLA equals its own definition
    (the unroll without Hessian products); all three give the same forward value."""
    from distillset.objectives import Weighted, intermediate_steps

    model, theta0, target, images, logits, _ = _problem(seed=4)
    n, m = 6, 3
    plan = sample_plan(9, n, 5, (8, 8), STRATEGY, torch.Generator().manual_seed(5))
    mids = [theta0 + (target - theta0) * (i / m) + 0.01 * torch.randn_like(theta0) for i in range(m)]
    terms = {n: ParameterMatch(theta0, target)}
    for k, i, beta in intermediate_steps(n, m, "adaptive"):
        terms[k] = Weighted(ParameterMatch(theta0, mids[i]), beta)
    assert sorted(terms) == [2, 4, 6]
    student = Student.of(model, momentum=momentum, loss_scale=1.3)

    def grads(engine):
        imgs, tg = images.clone().requires_grad_(True), logits.clone().requires_grad_(True)
        lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        if engine == "tesla-by-unroll":
            loss = _tesla_by_unroll(student, theta0, imgs, tg, lr, plan, terms)
        else:
            loss = meta_loss(engine, student, theta0, imgs, tg, lr, plan, terms)
        loss.backward()
        return loss.detach(), imgs.grad, tg.grad, lr.grad

    unroll, adjoint = grads("unroll"), grads("adjoint")
    tesla, tesla_ref = grads("tesla"), grads("tesla-by-unroll")
    for got, want in ((adjoint, unroll), (tesla, tesla_ref)):
        assert torch.allclose(got[0], unroll[0], rtol=1e-12)
        for a, b in zip(got[1:], want[1:], strict=True):
            assert _rel(a, b) < 1e-12
    assert _rel(tesla[1], unroll[1]) > 1e-6  # TESLA does differ from the exact gradient
