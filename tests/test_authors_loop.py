"""The authors' loop restated for the engine benchmark: it runs, its meta-gradient is right, its settings
and network match the benchmark's."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import authors_loop  # noqa: E402
from engine_bench import MODELS  # noqa: E402

TINY = {"width": 8, "depth": 2, "shape": (1, 8, 8), "ipc": 2, "classes": 10, "syn_steps": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    # Problems this small run faster on one thread; two threads' hand-offs cost more than the work, and
    # many times more on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("labels", ["soft", "hard"])
def test_iteration_runs_and_steps_the_optimisers(labels):
    state = authors_loop.build(None, **TINY, labels=labels, seed=1)
    before = state.images.detach().clone()
    loss = authors_loop.iteration(state)
    assert math.isfinite(loss) and loss > 0
    g = state.images.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert state.syn_lr.grad is not None and torch.isfinite(state.syn_lr.grad)
    if labels == "soft":
        assert state.label_syn.grad is not None and state.label_syn.grad.abs().sum() > 0
    else:
        assert state.optimizer_y is None and not state.label_syn.requires_grad
    # threshold inf: the SGD steps are taken.
    assert not torch.equal(state.images.detach(), before)
    assert state.forward_seconds > 0 and state.backward_seconds > 0
    # A shorter warm-up iteration, and mini-batches of 7 of the 20 images (chunks of a permutation).
    assert math.isfinite(authors_loop.iteration(state, syn_steps=1))
    small_batches = authors_loop.build(None, **TINY, labels=labels, batch_syn=7)
    assert math.isfinite(authors_loop.iteration(small_batches))


def test_meta_gradient_matches_finite_differences():
    # float64, no DSA (a deterministic loss; with every image in every step the permutation only reorders
    # the batch); threshold -inf: no optimiser step, so the gradients stay those at the point.
    state = authors_loop.build(
        None, **TINY, labels="soft", dsa=False, lr=0.1, threshold=-math.inf, dtype=torch.float64, seed=2
    )
    authors_loop.iteration(state)
    eps = 1e-4

    def central(t: torch.Tensor, index: tuple[int, ...]) -> float:
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                t[index] += sign * eps
            values.append(float(authors_loop.matching_loss(state).detach()))
            with torch.no_grad():
                t[index] -= sign * eps
        return (values[0] - values[1]) / (2 * eps)

    for t, index in ((state.images, (3, 0, 4, 5)), (state.label_syn, (7, 2)), (state.syn_lr, ())):
        assert t.grad is not None
        analytic = float(t.grad[index])
        assert analytic != 0.0
        assert analytic == pytest.approx(central(t, index), rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("channels", [1, 3])
def test_each_augmentation_keeps_the_shape_and_an_nchw_layout(channels):
    x = torch.randn(4, channels, 8, 8)
    for family in authors_loop.AUGMENTATIONS:
        torch.manual_seed(0)
        y = authors_loop.diff_augment(x, family, authors_loop.ParamDiffAug())
        assert y.shape == x.shape and torch.isfinite(y).all()
        # A batch the convolutions take as NCHW, so that the flatten's view works.
        assert y.stride() == torch.empty(x.shape).stride(), family
    assert authors_loop.diff_augment(x, "none", authors_loop.ParamDiffAug()) is x


def test_settings_and_network_match_the_benchmark():
    from distillset.models import build_model

    assert authors_loop.MODELS == MODELS
    for name, spec in MODELS.items():
        state = authors_loop.build(name, syn_steps=1)
        assert len(state.images) == spec["images"] and state.strategy == spec["strategy"]
        ours = build_model(
            "convnet", tuple(spec["shape"]), spec["classes"], width=spec["width"], depth=spec["depth"]
        )
        assert state.names == [n for n, _ in ours.named_parameters()]
        assert state.shapes == [p.shape for p in ours.parameters()]
