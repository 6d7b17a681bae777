"""Meta-gradient engines: the trajectory-matching loss as a differentiable function of the synthetic set.

`meta_loss(engine, ...)` runs `plan.steps` inner steps from `theta0` and returns the matching loss
L = sum_k terms[k](theta_k) as a scalar whose autograd graph reaches the synthetic images, the label
logits and the lr (and whatever produced them, e.g. a decoder). Three engines, same forward value:

* `unroll`: autograd through every step (`create_graph=True`), the authors' way. Memory grows with the
  number of steps, since every step's graph stays alive until the backward pass.
* `adjoint`: exact at constant memory. The forward pass keeps only theta_0..theta_N (and the velocities
  under momentum); the backward pass sweeps i = N-1..0, rebuilds step i alone from its stored batch and
  augmentation, and in one double-backward gets the vector-Jacobian products with respect to theta_i
  (the Hessian-vector product), the images and the label logits. With u = lambda_v - alpha * lambda:
      d alpha += -<lambda_{i+1}, v_{i+1}>,  d S += (dg_i/dS)^T u,  lambda_i = lambda_{i+1} + H_i u,
      lambda_v,i = mu * u,
  and a loss term on an intermediate state k adds its gradient to lambda when the sweep reaches k.
* `tesla`: TESLA's approximation (Cui et al. 2023), the same sweep without the Hessian-vector products:
  lambda stays dL/dtheta_N (plus the intermediate terms' gradients), as if theta_i did not depend on
  the synthetic set. Same memory as `adjoint`, a biased gradient; offered for comparison.

The adjoint's backward pass is skipped entirely when the caller does not call `backward()` (DATM's
loss-threshold skip), so a skipped iteration costs only the forward rollout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .plan import InnerPlan
from .student import Student

ENGINES = ("unroll", "tesla", "adjoint")

Terms = Mapping[int, Callable[[Tensor], Tensor]]


def _check(engine: str, plan: InnerPlan, terms: Terms) -> None:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}.")
    bad = [k for k in terms if not 0 <= k <= plan.steps]
    if bad:
        raise ValueError(f"loss terms on steps {bad} lie outside 0..{plan.steps}.")
    if not terms:
        raise ValueError("the matching loss needs at least one term.")


def meta_loss(
    engine: str,
    student: Student,
    theta0: Tensor,
    images: Tensor,
    targets: Tensor,
    lr: Tensor,
    plan: InnerPlan,
    terms: Terms,
) -> Tensor:
    """The matching loss after `plan.steps` inner steps from `theta0`, differentiable by `engine`.

    `targets` are int labels (not learned) or label logits (learned when they require grad); `lr` is a
    0-d tensor. `terms[k]` maps the student's parameters after k steps to a scalar loss term.
    """
    _check(engine, plan, terms)
    if engine == "unroll":
        return _unroll(student, theta0, images, targets, lr, plan, terms)
    return _Sweep.apply(images, targets, lr, student, theta0, plan, terms, engine == "adjoint")


def rollout(
    student: Student, theta0: Tensor, images: Tensor, targets: Tensor, lr: Tensor, plan: InnerPlan
) -> tuple[list[Tensor], list[Tensor | None]]:
    """theta_0..theta_N and v_0..v_N (None without momentum), no graph kept."""
    mu = student.momentum
    alpha = lr.detach()
    images, targets = images.detach(), targets.detach()
    thetas: list[Tensor] = [theta0.detach()]
    velocities: list[Tensor | None] = [torch.zeros_like(theta0) if mu else None]
    for i in range(plan.steps):
        g = student.grad(thetas[-1], images, targets, plan.batches[i], plan.augment[i])
        v = mu * velocities[-1] + g if mu else g
        thetas.append(thetas[-1] - alpha * v)
        velocities.append(v if mu else None)
    return thetas, velocities


def _unroll(
    student: Student,
    theta0: Tensor,
    images: Tensor,
    targets: Tensor,
    lr: Tensor,
    plan: InnerPlan,
    terms: Terms,
) -> Tensor:
    mu = student.momentum
    theta = theta0.detach().requires_grad_(True)
    v: Tensor | None = None
    total = terms[0](theta) if 0 in terms else None
    for i in range(plan.steps):
        loss = student.loss(theta, images, targets, plan.batches[i], plan.augment[i])
        g = torch.autograd.grad(loss, theta, create_graph=True)[0]
        v = mu * v + g if (mu and v is not None) else g
        theta = theta - lr * v
        if i + 1 in terms:
            term = terms[i + 1](theta)
            total = term if total is None else total + term
    return total


def _term_grad(terms: Terms, k: int, theta: Tensor) -> Tensor:
    with torch.enable_grad():
        leaf = theta.detach().requires_grad_(True)
        return torch.autograd.grad(terms[k](leaf), leaf)[0]


class _Sweep(torch.autograd.Function):
    """Forward: roll out without a graph. Backward: the adjoint (exact) or TESLA (no Hessian) sweep."""

    @staticmethod
    def forward(ctx, images, targets, lr, student, theta0, plan, terms, exact):  # noqa: ANN001
        thetas, velocities = rollout(student, theta0, images, targets, lr, plan)
        with torch.no_grad():
            loss = sum(terms[k](thetas[k]) for k in sorted(terms))
        ctx.student, ctx.plan, ctx.terms, ctx.exact = student, plan, terms, exact
        ctx.thetas, ctx.velocities = thetas, velocities
        ctx.save_for_backward(images, targets, lr)
        return loss.detach().clone() if isinstance(loss, Tensor) else torch.tensor(float(loss))

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        images, targets, lr = ctx.saved_tensors
        student, plan, terms, exact = ctx.student, ctx.plan, ctx.terms, ctx.exact
        thetas, velocities = ctx.thetas, ctx.velocities
        need_img, need_tgt, need_lr = ctx.needs_input_grad[:3]
        soft = targets.is_floating_point()
        mu, alpha = student.momentum, lr.detach()
        n = plan.steps

        lam = _term_grad(terms, n, thetas[n]) if n in terms else torch.zeros_like(thetas[n])
        lam_v: Tensor | None = None
        d_img = torch.zeros_like(images) if need_img else None
        d_tgt = torch.zeros_like(targets) if (need_tgt and soft) else None
        d_lr = torch.zeros_like(alpha)
        img = images.detach().requires_grad_(need_img)
        tgt = targets.detach().requires_grad_(bool(need_tgt and soft))
        for i in reversed(range(n)):
            with torch.enable_grad():
                theta_i = thetas[i].detach().requires_grad_(True)
                loss = student.loss(theta_i, img, tgt, plan.batches[i], plan.augment[i])
                g = torch.autograd.grad(loss, theta_i, create_graph=True)[0]
            v_next = mu * velocities[i] + g.detach() if mu else g.detach()
            d_lr -= torch.dot(lam, v_next)
            u = -alpha * lam if lam_v is None else lam_v - alpha * lam
            wrt = [t for t, want in ((theta_i, exact), (img, need_img), (tgt, d_tgt is not None)) if want]
            if wrt:
                grads = list(torch.autograd.grad(g, wrt, grad_outputs=u, allow_unused=True))
                if exact:
                    hvp = grads.pop(0)
                    if hvp is not None:
                        lam = lam + hvp
                if need_img:
                    gi = grads.pop(0)
                    if gi is not None:
                        d_img += gi
                if d_tgt is not None:
                    gt = grads.pop(0)
                    if gt is not None:
                        d_tgt += gt
            lam_v = mu * u if mu else None
            if i in terms and i > 0:
                lam = lam + _term_grad(terms, i, thetas[i])
        scale = grad_out.to(lam.dtype)
        return (
            d_img * scale if d_img is not None else None,
            d_tgt * scale if d_tgt is not None else None,
            d_lr * scale if need_lr else None,
            None,
            None,
            None,
            None,
            None,
        )
