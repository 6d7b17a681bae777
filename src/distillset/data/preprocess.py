"""Map [0, 1] images into a network's input space: per-channel normalisation or ZCA whitening.

Both follow the dataset-distillation literature (DC/DSA, MTT, DATM, PAD) exactly:

* the default is ``(x - mean) / std`` per channel with the dataset's published statistics;
* with ``zca=True`` the images stay in [0, 1] (no mean/std first) and are whitened with the
  regularised ZCA of kornia's ``ZCAWhitening(eps=0.1)``, fitted on the training split only and then
  applied unchanged to validation, test and synthetic images.

ZCA, with ``X`` the N x D matrix of flattened training images (D = C*H*W)::

    mean  = X.mean(0)
    C     = (X - mean)^T (X - mean) / (N - 1)        # unbiased, as kornia
    C     = U diag(S) U^T
    T     = U diag((S + eps)^-1/2) U^T               # whitening matrix
    T_inv = U diag((S + eps)^+1/2) U^T
    z     = (x - mean) @ T,     x = z @ T_inv + mean

Cost of a fit: the covariance is accumulated in float64 over chunks of the training set
(``N * D^2`` multiply-adds, never a float64 copy of the whole set) and decomposed with
``torch.linalg.eigh`` (same result as kornia's SVD on a symmetric PSD matrix: ``T`` does not depend
on the choice of eigenbasis). Measured on a 2-core CPU for D = 3072, N = 10k: ~4 s for the
covariance, 10-35 s for the decomposition. The covariance scales as N * D^2 and the decomposition
as D^3, so Tiny ImageNet (D = 12288, N = 100k) needs 160x the covariance work and 64x the
decomposition work: tens of minutes on a small CPU, a few minutes on a many-core one, far less on a
GPU (pass ``device=``; the result is moved back to the CPU). Peak memory is about 4 * D^2 * 8 bytes
(covariance, eigenvectors, LAPACK workspace, one product): ~5 GB at D = 12288, ~300 MB at D = 3072.
The stored state holds ``T`` and ``T_inv`` in float32: 2 * D^2 * 4 bytes (75 MB for CIFAR, 1.2 GB for
Tiny ImageNet).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from distillset.errors import StoreError

ZCA_EPS = 0.1
"""The field's ZCA regularisation (kornia ``ZCAWhitening(eps=0.1)`` in MTT, DATM, PAD)."""

_FIT_CHUNK = 4096
_APPLY_CHUNK = 4096


def _as_stat_tensor(values: Sequence[float] | Tensor, name: str) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise ValueError(f"{name} must have one value per channel, got none")
    return t


class Normalize:
    """Per-channel ``(x - mean) / std`` on N x C x H x W (or C x H x W) tensors, with its inverse."""

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        m = _as_stat_tensor(mean, "mean")
        s = _as_stat_tensor(std, "std")
        if m.shape != s.shape:
            raise ValueError(f"mean and std must have the same length, got {m.numel()} and {s.numel()}")
        if bool((s <= 0).any()):
            raise ValueError(f"std must be positive, got {s.tolist()}")
        self.mean: list[float] = m.tolist()
        self.std: list[float] = s.tolist()

    @property
    def channels(self) -> int:
        return len(self.mean)

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() < 3 or x.shape[-3] != self.channels:
            raise ValueError(
                f"expected images with {self.channels} channels (.. x C x H x W), got shape {tuple(x.shape)}"
            )
        dtype = x.dtype if x.is_floating_point() else torch.float32
        shape = (self.channels, 1, 1)
        m = torch.tensor(self.mean, dtype=dtype, device=x.device).view(shape)
        s = torch.tensor(self.std, dtype=dtype, device=x.device).view(shape)
        return m, s

    def __call__(self, x: Tensor) -> Tensor:
        return self.apply(x)

    def apply(self, x: Tensor) -> Tensor:
        m, s = self._stats(x)
        return (x - m) / s

    def inverse(self, x: Tensor) -> Tensor:
        m, s = self._stats(x)
        return x * s + m

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class ZCA:
    """Regularised ZCA whitening fitted on training images in [0, 1] (see the module docstring)."""

    def __init__(self, eps: float = ZCA_EPS) -> None:
        if not eps > 0:
            raise ValueError(f"ZCA eps must be positive, got {eps}")
        self.eps = float(eps)
        self.transform: Tensor | None = None  # D x D, float32
        self.inverse_transform: Tensor | None = None  # D x D, float32
        self.mean: Tensor | None = None  # D, float32
        self.image_shape: tuple[int, ...] | None = None

    # ------------------------------------------------------------------ fitting
    @property
    def fitted(self) -> bool:
        return self.transform is not None

    @property
    def dim(self) -> int:
        self._check_fitted()
        assert self.mean is not None
        return int(self.mean.numel())

    def fit(
        self, x_train: Tensor, *, device: torch.device | str | None = None, chunk_size: int = _FIT_CHUNK
    ) -> ZCA:
        """Fit on the training images (N x C x H x W in [0, 1]); returns self.

        The computation runs in float64 on ``device`` (default: the images' device) and reads the
        training set in chunks of ``chunk_size`` images, so only the D x D matrices are held in float64.
        """
        if x_train.dim() < 2:
            raise ValueError(f"expected a batch of images, got shape {tuple(x_train.shape)}")
        n = int(x_train.shape[0])
        if n < 2:
            raise ValueError(f"ZCA needs at least 2 training images for an unbiased covariance, got {n}")
        dev = torch.device(device) if device is not None else x_train.device
        flat = x_train.reshape(n, -1)
        d = int(flat.shape[1])

        # Two passes (mean, then centred products) rather than E[xx^T] - mm^T: the one-pass form
        # loses digits to cancellation when pixel means are large relative to their spread.
        total = torch.zeros(d, dtype=torch.float64, device=dev)
        for i in range(0, n, chunk_size):
            total += flat[i : i + chunk_size].to(device=dev, dtype=torch.float64).sum(0)
        mean = total / n
        cov = torch.zeros(d, d, dtype=torch.float64, device=dev)
        for i in range(0, n, chunk_size):
            xc = flat[i : i + chunk_size].to(device=dev, dtype=torch.float64) - mean
            cov.addmm_(xc.T, xc)
        cov /= n - 1
        # eigh reads only one triangle; symmetrising removes the rounding asymmetry of the sum.
        cov = (cov + cov.T) / 2

        evals, evecs = torch.linalg.eigh(cov)
        del cov
        # A PSD matrix has no negative eigenvalues; rounding can make tiny ones, which SVD would
        # report as their absolute value. Either way they are ~1e-16 and eps = 0.1 dominates.
        evals = evals.clamp_min(0.0)
        self.transform = ((evecs * torch.rsqrt(evals + self.eps)) @ evecs.T).float().cpu()
        self.inverse_transform = ((evecs * torch.sqrt(evals + self.eps)) @ evecs.T).float().cpu()
        self.mean = mean.float().cpu()
        self.image_shape = tuple(int(s) for s in x_train.shape[1:])
        return self

    def _check_fitted(self) -> None:
        if self.transform is None:
            raise RuntimeError("ZCA is not fitted: call fit(x_train) or from_state_dict(...) first")

    # ------------------------------------------------------------------ applying
    def _matmul(
        self, x: Tensor, mat: Tensor, shift_in: Tensor | None, shift_out: Tensor | None, chunk: int
    ) -> Tensor:
        d = self.dim
        n = int(x.shape[0])
        flat = x.reshape(n, -1)
        if flat.shape[1] != d:
            raise ValueError(
                f"ZCA was fitted on images of {d} values ({self.image_shape}), got shape {tuple(x.shape)}"
            )
        dtype = x.dtype if x.is_floating_point() else torch.float32
        mat = mat.to(device=x.device, dtype=dtype)
        out = torch.empty(n, d, dtype=dtype, device=x.device)
        # Row chunks keep the (chunk x D) temporaries small for 12288-dim images; slice assignment
        # into a fresh tensor stays differentiable.
        for i in range(0, n, chunk):
            rows = flat[i : i + chunk].to(dtype)
            if shift_in is not None:
                rows = rows - shift_in.to(device=x.device, dtype=dtype)
            rows = rows @ mat
            if shift_out is not None:
                rows = rows + shift_out.to(device=x.device, dtype=dtype)
            out[i : i + chunk] = rows
        return out.reshape(x.shape)

    def apply(self, x: Tensor, *, chunk_size: int = _APPLY_CHUNK) -> Tensor:
        """Whiten images with the fitted matrix: ``(x - mean) @ T``, reshaped back to ``x.shape``."""
        self._check_fitted()
        assert self.transform is not None
        return self._matmul(x, self.transform, self.mean, None, chunk_size)

    __call__ = apply

    def inverse(self, z: Tensor, *, chunk_size: int = _APPLY_CHUNK) -> Tensor:
        """Undo the whitening: ``z @ T_inv + mean``."""
        self._check_fitted()
        assert self.inverse_transform is not None
        return self._matmul(z, self.inverse_transform, None, self.mean, chunk_size)

    def to(self, device: torch.device | str) -> ZCA:
        """Move the matrices to ``device`` (in place) so that repeated ``apply`` calls do not copy them."""
        self._check_fitted()
        assert self.transform is not None and self.inverse_transform is not None and self.mean is not None
        self.transform = self.transform.to(device)
        self.inverse_transform = self.inverse_transform.to(device)
        self.mean = self.mean.to(device)
        return self

    # ------------------------------------------------------------------ identity and state
    def fingerprint(self) -> str:
        """A short hash of the fitted matrix, mean and eps: equal fingerprints mean equal whitening."""
        self._check_fitted()
        assert self.transform is not None and self.mean is not None
        h = hashlib.blake2b(digest_size=8)
        h.update(repr(("zca", self.eps, tuple(self.transform.shape))).encode())
        h.update(self.transform.detach().cpu().contiguous().numpy().tobytes())
        h.update(self.mean.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def state_dict(self) -> dict[str, Tensor]:
        """Contiguous CPU tensors, ready for ``safetensors.torch.save_file``."""
        self._check_fitted()
        assert self.transform is not None and self.inverse_transform is not None and self.mean is not None
        assert self.image_shape is not None
        return {
            "transform": self.transform.detach().cpu().contiguous(),
            "inverse_transform": self.inverse_transform.detach().cpu().contiguous(),
            "mean": self.mean.detach().cpu().contiguous(),
            "eps": torch.tensor([self.eps], dtype=torch.float64),
            "image_shape": torch.tensor(self.image_shape, dtype=torch.int64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> ZCA:
        missing = {"transform", "inverse_transform", "mean", "eps", "image_shape"} - set(state)
        if missing:
            raise StoreError(f"ZCA state lacks {sorted(missing)}; save it with ZCA.state_dict()")
        zca = cls(eps=float(state["eps"].flatten()[0]))
        zca.transform = state["transform"].float().cpu()
        zca.inverse_transform = state["inverse_transform"].float().cpu()
        zca.mean = state["mean"].float().cpu().flatten()
        zca.image_shape = tuple(int(s) for s in state["image_shape"].tolist())
        d = zca.mean.numel()
        if zca.transform.shape != (d, d) or zca.inverse_transform.shape != (d, d):
            raise StoreError(
                f"ZCA state is inconsistent: mean has {d} values but the matrices are "
                f"{tuple(zca.transform.shape)} and {tuple(zca.inverse_transform.shape)}; "
                "re-fit and save again"
            )
        return zca

    def __repr__(self) -> str:
        if not self.fitted:
            return f"ZCA(eps={self.eps}, unfitted)"
        return f"ZCA(eps={self.eps}, dim={self.dim}, fingerprint={self.fingerprint()})"


class Preprocessor:
    """The dataset's map from [0, 1] images to network inputs: ``Normalize`` or ``ZCA``.

    ``mean``/``std`` are the dataset's statistics; they are recorded in the manifest in both modes
    but only used in ``normalize`` mode, since the field applies ZCA to raw [0, 1] pixels.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        zca: ZCA | None = None,
    ) -> None:
        self.normalize = Normalize(mean, std)
        self.zca = zca
        if zca is not None and not zca.fitted:
            raise ValueError("Preprocessor needs a fitted ZCA")

    @property
    def kind(self) -> str:
        return "zca" if self.zca is not None else "normalize"

    @property
    def is_zca(self) -> bool:
        return self.zca is not None

    def apply(self, x: Tensor) -> Tensor:
        """[0, 1] images -> network input space."""
        return self.zca.apply(x) if self.zca is not None else self.normalize.apply(x)

    __call__ = apply

    def inverse(self, x: Tensor) -> Tensor:
        """Network input space -> [0, 1] images (not clamped) for viewing and saving."""
        return self.zca.inverse(x) if self.zca is not None else self.normalize.inverse(x)

    def to(self, device: torch.device | str) -> Preprocessor:
        if self.zca is not None:
            self.zca.to(device)
        return self

    def fingerprint(self) -> str:
        """A short hash of what ``apply`` does."""
        if self.zca is not None:
            return self.zca.fingerprint()
        h = hashlib.blake2b(digest_size=8)
        h.update(repr(("normalize", self.normalize.mean, self.normalize.std)).encode())
        return h.hexdigest()

    def to_manifest(self) -> dict:
        """JSON-safe description; with ``state_dict()`` it rebuilds the same preprocessor."""
        return {
            "kind": self.kind,
            "mean": list(self.normalize.mean),
            "std": list(self.normalize.std),
            "zca": self.is_zca,
            "zca_eps": self.zca.eps if self.zca is not None else ZCA_EPS,
            "zca_fingerprint": self.zca.fingerprint() if self.zca is not None else None,
        }

    def state_dict(self) -> dict[str, Tensor]:
        """The ZCA tensors under ``zca.*`` keys (empty in normalize mode)."""
        if self.zca is None:
            return {}
        return {f"zca.{k}": v for k, v in self.zca.state_dict().items()}

    @classmethod
    def from_state(cls, manifest: dict, tensors: dict[str, Tensor] | None = None) -> Preprocessor:
        """Rebuild from ``to_manifest()`` and ``state_dict()``; checks the ZCA fingerprint."""
        try:
            kind, mean, std = manifest["kind"], manifest["mean"], manifest["std"]
        except KeyError as e:
            raise StoreError(
                f"preprocessing manifest lacks {e.args[0]!r}; write it with to_manifest()"
            ) from e
        if kind == "normalize":
            return cls(mean, std)
        if kind != "zca":
            raise StoreError(f"unknown preprocessing kind {kind!r}; expected 'normalize' or 'zca'")
        state = {k[len("zca.") :]: v for k, v in (tensors or {}).items() if k.startswith("zca.")}
        if not state:
            raise StoreError(
                "the manifest says ZCA but no zca.* tensors were given; load them with the manifest"
            )
        zca = ZCA.from_state_dict(state)
        expected = manifest.get("zca_fingerprint")
        if expected is not None and zca.fingerprint() != expected:
            raise StoreError(
                f"ZCA tensors have fingerprint {zca.fingerprint()} but the manifest expects {expected}; "
                "the files come from different runs"
            )
        return cls(mean, std, zca=zca)

    def __repr__(self) -> str:
        return f"Preprocessor(kind={self.kind!r}, fingerprint={self.fingerprint()})"


def fit_preprocessor(
    train_x: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    zca: bool,
    *,
    eps: float = ZCA_EPS,
    device: torch.device | str | None = None,
) -> Preprocessor:
    """Build the dataset's preprocessing; with ``zca=True`` fit ZCA on ``train_x`` (training split only)."""
    if not zca:
        return Preprocessor(mean, std)
    return Preprocessor(mean, std, zca=ZCA(eps).fit(train_x, device=device))
