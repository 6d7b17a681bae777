"""DSA: each family pinned on hand-made tensors, replayability, siamese use and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from distillset.data.augment import (
    DEFAULT_STRATEGY,
    DIGITS_STRATEGY,
    DSA,
    FAMILIES,
    DSAParams,
    apply_dsa,
    parse_strategy,
    sample_dsa,
)


def _arange_image() -> torch.Tensor:
    return torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)


def _p(family: str, size: tuple[int, int] = (4, 4), **values) -> DSAParams:
    vals = {k: torch.as_tensor(v).flatten() for k, v in values.items()}
    n = len(next(iter(vals.values())))
    return DSAParams(family, vals, n, size)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- formulas on tiny tensors


def test_crop_shifts_with_zero_fill() -> None:
    x = _arange_image()
    out = apply_dsa(x, _p("crop", tx=[1], ty=[-1]))
    expected = torch.tensor([[0, 4, 5, 6], [0, 8, 9, 10], [0, 12, 13, 14], [0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(out[0, 0], expected)
    # Shifts beyond the one-pixel border read the clamped zero border too.
    out = apply_dsa(x, _p("crop", tx=[-2], ty=[0]))
    expected = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 2, 3], [4, 5, 6, 7]], dtype=torch.float32)
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(apply_dsa(x, _p("crop", tx=[0], ty=[0])), x)


def test_crop_range_follows_field() -> None:
    # shift = int(size * 0.125 + 0.5): 4 for 32 px, 1 for 4 px; both ends reachable.
    p = sample_dsa(4000, (32, 4), "crop", _gen(1))
    assert p.values["tx"].min() == -4 and p.values["tx"].max() == 4
    assert p.values["ty"].min() == -1 and p.values["ty"].max() == 1


def test_cutout_zeroes_expected_pixels() -> None:
    x = _arange_image() + 1  # no zero pixels before the cutout
    out = apply_dsa(x, _p("cutout", ox=[2], oy=[1]))
    # cutout_size = int(4 * 0.5 + 0.5) = 2; rows 2 + [0, 1] - 1 = 1..2, cols 1 + [0, 1] - 1 = 0..1.
    mask = torch.ones(4, 4)
    mask[1:3, 0:2] = 0
    assert torch.equal(out[0, 0], x[0, 0] * mask)
    # At the border the patch is clamped onto the edge: rows clamp([-1, 0]) = 0, cols clamp([3, 4]) = 3.
    out = apply_dsa(x, _p("cutout", ox=[0], oy=[4]))
    mask = torch.ones(4, 4)
    mask[0, 3] = 0
    assert torch.equal(out[0, 0], x[0, 0] * mask)


def test_cutout_offset_range_follows_field() -> None:
    # Even cutout (size 4 -> 2): offsets in [0, size]; odd cutout (size 5 -> 3): offsets in [0, size - 1].
    p = sample_dsa(2000, (4, 5), "cutout", _gen(2))
    assert set(p.values["ox"].tolist()) == {0, 1, 2, 3, 4}
    assert set(p.values["oy"].tolist()) == {0, 1, 2, 3, 4}


def test_cutout_zeroes_all_channels() -> None:
    x = torch.ones(2, 3, 4, 4)
    out = apply_dsa(x, _p("cutout", ox=[2, 2], oy=[2, 2]))
    assert torch.equal(out[:, :, 1:3, 1:3], torch.zeros(2, 3, 2, 2))
    assert out.sum() == 2 * 3 * 12


def test_flip() -> None:
    x = torch.cat([_arange_image(), _arange_image() + 100])
    out = apply_dsa(x, _p("flip", r=[0.2, 0.7]))
    assert torch.equal(out[0], x[0].flip(-1))
    assert torch.equal(out[1], x[1])
    assert torch.equal(out[0, 0, 0], torch.tensor([3.0, 2.0, 1.0, 0.0]))


def test_color_steps() -> None:
    # One image, 3 channels, 2 pixels: p0 = (0, .3, .6), p1 = (.3, .3, .3).
    x = torch.tensor([[0.0, 0.3], [0.3, 0.3], [0.6, 0.3]], dtype=torch.float64).reshape(1, 3, 1, 2)

    def color(b: float, s: float, c: float) -> torch.Tensor:
        return apply_dsa(x, _p("color", (1, 2), brightness=[b], saturation=[s], contrast=[c]))

    # Brightness alone (s = 0.5 and c = 0.5 make factors of 1): + (0.75 - 0.5) * 1.0.
    torch.testing.assert_close(color(0.75, 0.5, 0.5), x + 0.25)
    # Saturation alone: s = 0.25 -> factor 0.5 around the per-pixel channel mean (0.3 for both pixels).
    sat = torch.tensor([[0.15, 0.3], [0.3, 0.3], [0.45, 0.3]], dtype=torch.float64).reshape(1, 3, 1, 2)
    torch.testing.assert_close(color(0.5, 0.25, 0.5), sat)
    # Contrast alone: c = 0 -> factor 0.5 around the image mean (0.3).
    con = torch.tensor([[0.15, 0.3], [0.3, 0.3], [0.45, 0.3]], dtype=torch.float64).reshape(1, 3, 1, 2)
    torch.testing.assert_close(color(0.5, 0.5, 0.0), con)
    # All three, in order brightness -> saturation -> contrast (hand-computed).
    allx = torch.tensor([[0.475, 0.55], [0.55, 0.55], [0.625, 0.55]], dtype=torch.float64).reshape(1, 3, 1, 2)
    torch.testing.assert_close(color(0.75, 0.25, 0.0), allx)


def test_scale_and_rotate_identity() -> None:
    x = torch.rand(2, 3, 5, 7, generator=_gen(3))
    torch.testing.assert_close(
        apply_dsa(x, _p("scale", (5, 7), sx=[1.0, 1.0], sy=[1.0, 1.0])), x, atol=1e-6, rtol=0
    )
    torch.testing.assert_close(apply_dsa(x, _p("rotate", (5, 7), theta=[0.0, 0.0])), x, atol=1e-6, rtol=0)


def test_scale_and_rotate_values() -> None:
    # sx = 0.5 samples columns at half the normalised distance from the centre (align_corners=True):
    # on 0..4 that is 1, 1.5, 2, 2.5, 3.
    x = torch.arange(5, dtype=torch.float64).expand(1, 1, 3, 5).contiguous()
    out = apply_dsa(x, _p("scale", (3, 5), sx=[0.5], sy=[1.0]))
    torch.testing.assert_close(out[0, 0, 1], torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0], dtype=torch.float64))
    # A rotation by +90 degrees on a square grid is rot90 (out[i, j] = in[j, W - 1 - i]).
    x = _arange_image()
    out = apply_dsa(x, _p("rotate", theta=[math.pi / 2]))
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    assert abs(out[0, 0, 0, 0].item() - 3.0) < 1e-5


def test_sampled_ranges() -> None:
    g = _gen(4)
    s = sample_dsa(5000, (8, 8), "scale", g)
    for k in ("sx", "sy"):
        assert s.values[k].min() >= 1 / 1.2 and s.values[k].max() <= 1.2
        assert s.values[k].min() < 0.85 and s.values[k].max() > 1.18
    r = sample_dsa(5000, (8, 8), "rotate", g)
    assert r.values["theta"].abs().max() <= 15 / 180 * math.pi
    assert r.values["theta"].abs().max() > 14.9 / 180 * math.pi
    f = sample_dsa(5000, (8, 8), "flip", g)
    assert 0.45 < (f.values["r"] < 0.5).float().mean() < 0.55


# ---------------------------------------------------------------------- gradients


@pytest.mark.parametrize("family", ["scale", "rotate", "color"])
def test_gradcheck(family: str) -> None:
    x = torch.rand(2, 2, 3, 3, dtype=torch.float64, generator=_gen(5), requires_grad=True)
    params = sample_dsa(2, (3, 3), family, _gen(6))
    assert params.family == family
    assert torch.autograd.gradcheck(lambda t: apply_dsa(t, params), (x,))


def test_selection_gradients() -> None:
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    # Crop: each kept input pixel feeds exactly one output pixel.
    apply_dsa(x, _p("crop", tx=[1], ty=[-1])).sum().backward()
    mask = torch.zeros(4, 4, dtype=torch.float64)
    mask[1:4, 0:3] = 1
    assert torch.equal(x.grad, mask.expand(1, 2, 4, 4))
    # Its adjoint is the opposite shift: grad of <crop(x), w> is crop(w, -t).
    x.grad = None
    w = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    (apply_dsa(x, _p("crop", tx=[1], ty=[-1])) * w).sum().backward()
    assert torch.equal(x.grad, apply_dsa(w, _p("crop", tx=[-1], ty=[1])))
    # Cutout: the gradient is the mask.
    x.grad = None
    apply_dsa(x, _p("cutout", ox=[2], oy=[1])).sum().backward()
    mask = torch.ones(4, 4, dtype=torch.float64)
    mask[1:3, 0:2] = 0
    assert torch.equal(x.grad, mask.expand(1, 2, 4, 4))
    # Flip: the gradient is the flipped upstream gradient for flipped samples only.
    x2 = torch.rand(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    w2 = torch.rand(2, 1, 3, 4, dtype=torch.float64)
    (apply_dsa(x2, _p("flip", (3, 4), r=[0.1, 0.9])) * w2).sum().backward()
    assert torch.equal(x2.grad[0], w2[0].flip(-1)) and torch.equal(x2.grad[1], w2[1])


# ---------------------------------------------------------------------- replay and randomness


@pytest.mark.parametrize("family", FAMILIES)
def test_replay_is_bit_identical_and_select_replays_sub_batch(family: str) -> None:
    x = torch.rand(10, 3, 8, 8, generator=_gen(7))
    params = sample_dsa(10, (8, 8), family, _gen(8))
    out = apply_dsa(x, params)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, apply_dsa(x.clone(), params))
    idx = torch.tensor([7, 2, 2, 5])
    assert torch.equal(apply_dsa(x[idx], params[idx]), out[idx])
    assert torch.equal(apply_dsa(x[3:6], params.select(slice(3, 6))), out[3:6])
    assert len(params[idx]) == 4
    # float64 works and agrees with float32.
    out64 = apply_dsa(x.double(), params)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, atol=1e-5, rtol=0)


def test_siamese_same_params_same_transform() -> None:
    a = torch.rand(16, 3, 6, 6, generator=_gen(9))
    b = torch.rand(16, 3, 6, 6, generator=_gen(10))
    params = sample_dsa(16, (6, 6), "flip", _gen(11))
    oa, ob = apply_dsa(a, params), apply_dsa(b, params)
    flipped_a = [torch.equal(oa[i], a[i].flip(-1)) for i in range(16)]
    flipped_b = [torch.equal(ob[i], b[i].flip(-1)) for i in range(16)]
    assert flipped_a == flipped_b
    assert any(flipped_a) and not all(flipped_a)
    # Crop: the same translation on both batches, so the zero-filled region is the same.
    params = sample_dsa(16, (6, 6), "crop", _gen(12))
    ca, cb = apply_dsa(a + 1, params), apply_dsa(b + 1, params)
    assert torch.equal(ca == 0, cb == 0)


def test_same_seed_same_params_and_global_rng_untouched() -> None:
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    for _ in range(20):
        p1 = sample_dsa(6, (8, 8), DEFAULT_STRATEGY, _gen(42))
        p2 = sample_dsa(6, (8, 8), DEFAULT_STRATEGY, _gen(42))
        assert p1.family == p2.family
        assert all(torch.equal(p1.values[k], p2.values[k]) for k in p1.values)
    assert torch.equal(torch.get_rng_state(), state)
    # One generator advances: consecutive calls differ.
    g = _gen(42)
    draws = [sample_dsa(6, (8, 8), "scale", g).values["sx"] for _ in range(2)]
    assert not torch.equal(draws[0], draws[1])


def test_all_families_chosen_and_digits_never_flip() -> None:
    g = _gen(13)
    seen = {sample_dsa(1, (8, 8), DEFAULT_STRATEGY, g).family for _ in range(300)}
    assert seen == set(FAMILIES)
    seen = {sample_dsa(1, (8, 8), DIGITS_STRATEGY, g).family for _ in range(300)}
    assert seen == set(FAMILIES) - {"flip"}


def test_dsa_callable_and_identity() -> None:
    x = torch.rand(4, 3, 8, 8, generator=_gen(14))
    aug = DSA()
    assert aug.strategy == DEFAULT_STRATEGY
    out = aug(x, _gen(15))
    params = aug.sample(4, (8, 8), _gen(15))
    assert torch.equal(out, DSA.apply(x, params))
    for none in (DSA.none(), DSA(""), DSA("none"), DSA("None")):
        assert none.is_identity
        assert none(x, _gen(0)) is x
        p = none.sample(4, (8, 8), _gen(0))
        assert p.family == "none" and apply_dsa(x, p) is x and len(p[[0, 1]]) == 2


def test_batchwise_params_share_one_transform() -> None:
    params = sample_dsa(0, (6, 6), "flip", _gen(16), batchwise=True)
    a, b = torch.rand(3, 1, 6, 6), torch.rand(5, 1, 6, 6)
    oa, ob = apply_dsa(a, params), apply_dsa(b, params)
    flipped = params.values["r"].item() < 0.5
    assert torch.equal(oa, a.flip(-1) if flipped else a)
    assert torch.equal(ob, b.flip(-1) if flipped else b)


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="valid families are color, crop, cutout, flip, scale, rotate"):
        parse_strategy("color_blur")
    with pytest.raises(ValueError):
        DSA("color__crop")
    assert parse_strategy(DIGITS_STRATEGY) == ("color", "crop", "cutout", "scale", "rotate")
    params = sample_dsa(4, (8, 8), "crop", _gen(0))
    with pytest.raises(ValueError, match="4 samples"):
        apply_dsa(torch.rand(3, 1, 8, 8), params)
    with pytest.raises(ValueError, match="8x8"):
        apply_dsa(torch.rand(4, 1, 6, 6), params)
    with pytest.raises(ValueError):
        DSAParams("crop", {"tx": torch.zeros(2, dtype=torch.long)}, 2, (4, 4))


def test_params_to_device() -> None:
    params = sample_dsa(3, (8, 8), "rotate", _gen(0), device="cpu")
    moved = params.to("cpu")
    assert moved.device.type == "cpu" and torch.equal(moved.values["theta"], params.values["theta"])
