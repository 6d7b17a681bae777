"""Normalisation and ZCA whitening, checked against formulas computed independently in numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from distillset.data.preprocess import ZCA, ZCA_EPS, Normalize, Preprocessor, fit_preprocessor
from distillset.errors import StoreError

SHAPE = (3, 4, 4)  # D = 48


def _train(n: int = 300, seed: int = 0) -> torch.Tensor:
    """Correlated images in [0, 1]: a random mix of uniform noise, so the covariance is not diagonal."""
    g = torch.Generator().manual_seed(seed)
    d = int(np.prod(SHAPE))
    mix = torch.rand(d, d, generator=g) / d
    x = torch.rand(n, d, generator=g) @ mix * 2 + 0.1 * torch.rand(n, d, generator=g)
    x = (x - x.min()) / (x.max() - x.min())
    return x.reshape(n, *SHAPE)


def _numpy_zca(x: np.ndarray, eps: float):
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean = flat.mean(0)
    cov = np.cov(flat, rowvar=False)  # unbiased, N - 1
    u, s, _ = np.linalg.svd(cov)
    return mean, u, s


def test_whitened_train_covariance_matches_formula() -> None:
    x = _train()
    zca = ZCA().fit(x)
    z = zca.apply(x).reshape(len(x), -1).double().numpy()
    mean, u, s = _numpy_zca(x.numpy(), ZCA_EPS)
    expected = u @ np.diag(s / (s + ZCA_EPS)) @ u.T
    np.testing.assert_allclose(np.cov(z, rowvar=False), expected, atol=2e-5)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    # The matrix itself, against U diag((S+eps)^-1/2) U^T.
    t = u @ np.diag((s + ZCA_EPS) ** -0.5) @ u.T
    np.testing.assert_allclose(zca.transform.double().numpy(), t, rtol=1e-5, atol=1e-5)
    t_inv = u @ np.diag((s + ZCA_EPS) ** 0.5) @ u.T
    np.testing.assert_allclose(zca.inverse_transform.double().numpy(), t_inv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(zca.mean.double().numpy(), mean, atol=1e-6)


def test_inverse_recovers_input() -> None:
    x = _train()
    zca = ZCA().fit(x)
    z = zca.apply(x)
    assert z.shape == x.shape and z.dtype == torch.float32
    torch.testing.assert_close(zca.inverse(z), x, atol=1e-5, rtol=0)


def test_chunking_does_not_change_results() -> None:
    x = _train(n=97)
    a = ZCA().fit(x)
    b = ZCA().fit(x, chunk_size=10)
    torch.testing.assert_close(a.transform, b.transform, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.apply(x), a.apply(x, chunk_size=7), atol=1e-6, rtol=0)


def test_test_set_uses_train_fit() -> None:
    x = _train()
    zca = ZCA().fit(x)
    # Another distribution: independent uniform pixels, brighter on average and uncorrelated.
    x_test = torch.rand(200, *SHAPE, generator=torch.Generator().manual_seed(5))
    z = zca.apply(x_test)
    mean, u, s = _numpy_zca(x.numpy(), ZCA_EPS)
    t = u @ np.diag((s + ZCA_EPS) ** -0.5) @ u.T
    expected = (x_test.reshape(200, -1).double().numpy() - mean) @ t
    np.testing.assert_allclose(z.reshape(200, -1).double().numpy(), expected, atol=1e-4)
    # A fit redone on the test images would centre them and give another result.
    refit = ZCA().fit(x_test).apply(x_test)
    assert (z - refit).abs().max() > 0.5
    assert z.reshape(200, -1).mean(0).abs().max() > 0.3
    # And the fitted state is untouched by applying.
    assert zca.fingerprint() == ZCA().fit(x).fingerprint()


def test_fingerprint_changes_with_data() -> None:
    x = _train()
    f1 = ZCA().fit(x).fingerprint()
    assert f1 == ZCA().fit(x.clone()).fingerprint()
    x2 = x.clone()
    x2[0, 0, 0, 0] = 1 - x2[0, 0, 0, 0]
    assert ZCA().fit(x2).fingerprint() != f1
    assert ZCA(eps=0.2).fit(x).fingerprint() != f1
    assert isinstance(f1, str) and len(f1) == 16


def test_zca_state_round_trip_through_safetensors(tmp_path) -> None:
    x = _train()
    zca = ZCA().fit(x)
    path = tmp_path / "zca.safetensors"
    save_file(zca.state_dict(), str(path))
    back = ZCA.from_state_dict(load_file(str(path)))
    assert back.fingerprint() == zca.fingerprint()
    assert back.eps == zca.eps and back.image_shape == SHAPE
    y = torch.rand(5, *SHAPE)
    assert torch.equal(back.apply(y), zca.apply(y))
    assert torch.equal(back.inverse(y), zca.inverse(y))


def test_zca_rejects_wrong_size_and_unfitted() -> None:
    zca = ZCA()
    with pytest.raises(RuntimeError):
        zca.apply(torch.rand(2, *SHAPE))
    zca.fit(_train(n=20))
    with pytest.raises(ValueError, match="48 values"):
        zca.apply(torch.rand(2, 3, 5, 5))
    with pytest.raises(ValueError):
        ZCA().fit(torch.rand(1, *SHAPE))


def test_zca_is_differentiable() -> None:
    zca = ZCA().fit(_train(n=50))
    x = torch.rand(3, *SHAPE, dtype=torch.float64, requires_grad=True)
    zca.apply(x, chunk_size=2).sum().backward()
    # d/dx sum((x - m) @ T) = T 1, for every row.
    expected = zca.transform.double().sum(1).reshape(SHAPE)
    torch.testing.assert_close(x.grad, expected.expand_as(x))


def test_normalize_round_trip_and_values() -> None:
    norm = Normalize([0.5, 0.25, 0.0], [0.5, 0.25, 2.0])
    x = torch.rand(4, *SHAPE)
    y = norm(x)
    torch.testing.assert_close(y[:, 0], (x[:, 0] - 0.5) / 0.5)
    torch.testing.assert_close(y[:, 2], x[:, 2] / 2.0)
    torch.testing.assert_close(norm.inverse(y), x, atol=1e-6, rtol=0)
    # A single image (C x H x W) works too.
    torch.testing.assert_close(norm(x[0]), y[0])
    with pytest.raises(ValueError):
        norm(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError):
        Normalize([0.5], [0.0])


def test_preprocessor_normalize_manifest_round_trip() -> None:
    mean, std = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
    x = _train()
    pre = fit_preprocessor(x, mean, std, zca=False)
    man = pre.to_manifest()
    assert json.loads(json.dumps(man)) == man
    assert man == {
        "kind": "normalize",
        "mean": mean,
        "std": std,
        "zca": False,
        "zca_eps": 0.1,
        "zca_fingerprint": None,
    }
    assert pre.state_dict() == {}
    back = Preprocessor.from_state(man, {})
    assert torch.equal(back.apply(x), Normalize(mean, std).apply(x))
    torch.testing.assert_close(back.inverse(back.apply(x)), x, atol=1e-6, rtol=0)


def test_preprocessor_zca_uses_raw_pixels_and_round_trips(tmp_path) -> None:
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    x = _train()
    pre = fit_preprocessor(x, mean, std, zca=True)
    # ZCA straight on [0, 1] pixels: no mean/std before it.
    assert torch.equal(pre.apply(x), ZCA().fit(x).apply(x))
    man = pre.to_manifest()
    assert json.loads(json.dumps(man)) == man
    assert man["kind"] == "zca" and man["zca"] is True and man["zca_eps"] == 0.1
    assert man["zca_fingerprint"] == pre.zca.fingerprint()
    path = tmp_path / "pre.safetensors"
    save_file(pre.state_dict(), str(path))
    back = Preprocessor.from_state(man, load_file(str(path)))
    y = torch.rand(6, *SHAPE)
    assert torch.equal(back.apply(y), pre.apply(y))
    assert torch.equal(back.inverse(y), pre.inverse(y))
    torch.testing.assert_close(back.inverse(back.apply(x)), x, atol=1e-5, rtol=0)


def test_preprocessor_from_state_detects_mismatch() -> None:
    x = _train()
    a = fit_preprocessor(x, [0.5] * 3, [0.5] * 3, zca=True)
    b = fit_preprocessor(x * 0.5, [0.5] * 3, [0.5] * 3, zca=True)
    with pytest.raises(StoreError, match="fingerprint"):
        Preprocessor.from_state(a.to_manifest(), b.state_dict())
    with pytest.raises(StoreError):
        Preprocessor.from_state(a.to_manifest(), {})
    with pytest.raises(StoreError):
        Preprocessor.from_state({"kind": "pca", "mean": [0.5], "std": [0.5]}, {})
