"""Differentiable siamese augmentation (DSA) with explicit, replayable parameters.

The operations and constants are those of the DSA/MTT code (``DiffAugment`` with ``ParamDiffAug``,
mode "S"): each call picks one family uniformly at random for the whole batch, then draws one set of
parameters per sample. Unlike the field's code, which reseeds the global RNG, the randomness here is
split from the arithmetic:

* ``sample_dsa`` draws a :class:`DSAParams` from a caller-owned CPU ``torch.Generator`` (so CPU and
  CUDA runs draw the same parameters), and
* ``apply_dsa`` applies it deterministically and differentiably, batched, in any float dtype.

Applying the same ``DSAParams`` to two batches is the siamese augmentation of DSA; ``params[idx]``
replays the transform of a sub-batch. Families and their per-sample parameters:

========  ============================================  =============================================
family    parameters (per sample)                       operation
========  ============================================  =============================================
color     brightness b, saturation s, contrast c        ``x + (b-0.5)*1.0``; then
          (raw U[0, 1) draws)                           ``(x-m1)*(2s)+m1``, m1 = mean over channels;
                                                        then ``(x-m)*(c+0.5)+m``, m = mean over C,H,W
crop      tx, ty (int, in [-shift, shift])              translate with zero fill, shift = round(size/8)
cutout    ox, oy (int, patch centre)                    zero a (size/2)^2 patch
flip      r (U[0, 1))                                   horizontal flip where r < 0.5
scale     sx, sy (U[1/1.2, 1.2])                        affine ``[[sx,0,0],[0,sy,0]]``
rotate    theta (radians, U[-15, 15] degrees)           affine ``[[cos,-sin,0],[sin,cos,0]]``
========  ============================================  =============================================

``tx``/``ox`` act on rows (dim 2) and ``ty``/``oy`` on columns (dim 3), as in the field's code; in
the affine families ``sx`` scales the grid's x, i.e. columns (``F.affine_grid`` convention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# ParamDiffAug of the DSA/MTT code.
PROB_FLIP = 0.5
RATIO_SCALE = 1.2
RATIO_ROTATE = 15.0
RATIO_CROP_PAD = 0.125
RATIO_CUTOUT = 0.5
BRIGHTNESS = 1.0
SATURATION = 2.0
CONTRAST = 0.5

FAMILIES: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGITS_STRATEGY = "color_crop_cutout_scale_rotate"
"""For handwritten digits, where a mirrored digit is another symbol."""

NONE = "none"
_NONE_NAMES = ("", "none", "None")

_PARAM_KEYS: dict[str, tuple[str, ...]] = {
    NONE: (),
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("tx", "ty"),
    "cutout": ("ox", "oy"),
    "flip": ("r",),
    "scale": ("sx", "sy"),
    "rotate": ("theta",),
}


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split ``"color_crop_..."`` into its families; ``""``/``"none"`` give ``()``.

    Raises ``ValueError`` naming the valid families for an unknown one.
    """
    if not isinstance(strategy, str):
        raise ValueError(f"a DSA strategy is a string such as {DEFAULT_STRATEGY!r}, got {strategy!r}")
    if strategy.strip() in _NONE_NAMES:
        return ()
    parts = strategy.strip().split("_")
    bad = [p for p in parts if p not in FAMILIES]
    if bad:
        raise ValueError(
            f"unknown DSA augmentation {', '.join(repr(b) for b in bad)} in strategy {strategy!r}; "
            f"valid families are {', '.join(FAMILIES)} joined by '_' (e.g. {DEFAULT_STRATEGY!r}), or 'none'"
        )
    return tuple(parts)


@dataclass
class DSAParams:
    """Everything needed to replay one DSA call: the family and its per-sample parameter tensors.

    ``values`` holds 1-D tensors of length ``n`` (or length 1 when ``batchwise``: one transform
    shared by every sample of any batch, which is how DC/DM augment real and synthetic batches of
    different sizes identically). ``image_size`` is the (H, W) the parameters were drawn for: crop
    and cutout ranges depend on it.
    """

    family: str
    values: dict[str, Tensor]
    n: int
    image_size: tuple[int, int]
    batchwise: bool = False

    def __post_init__(self) -> None:
        if self.family not in _PARAM_KEYS:
            raise ValueError(f"unknown DSA family {self.family!r}; valid: {', '.join(_PARAM_KEYS)}")
        keys = _PARAM_KEYS[self.family]
        if set(self.values) != set(keys):
            raise ValueError(
                f"DSA family {self.family!r} takes parameters {list(keys)}, got {sorted(self.values)}"
            )
        length = 1 if self.batchwise else self.n
        for k, v in self.values.items():
            if v.dim() != 1 or v.shape[0] != length:
                raise ValueError(f"DSA parameter {k!r} must have shape ({length},), got {tuple(v.shape)}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def __len__(self) -> int:
        return self.n

    @property
    def device(self) -> torch.device:
        for v in self.values.values():
            return v.device
        return torch.device("cpu")

    def select(self, idx: int | slice | Sequence[int] | Tensor) -> DSAParams:
        """The parameters of the samples ``idx`` (indices, slice or boolean mask), in that order."""
        if isinstance(idx, int):
            idx = [idx]
        positions = torch.arange(self.n)[idx if not isinstance(idx, Tensor) else idx.cpu()]
        n = int(positions.numel())
        if self.batchwise:
            return DSAParams(self.family, dict(self.values), n, self.image_size, batchwise=True)
        values = {k: v[positions.to(v.device)] for k, v in self.values.items()}
        return DSAParams(self.family, values, n, self.image_size)

    __getitem__ = select

    def to(self, device: torch.device | str) -> DSAParams:
        values = {k: v.to(device) for k, v in self.values.items()}
        return DSAParams(self.family, values, self.n, self.image_size, batchwise=self.batchwise)


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"sample_dsa needs a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        # A CUDA generator would make the parameters depend on the device the run happens on.
        raise ValueError(
            f"DSA parameters are drawn on a CPU generator, got one on {generator.device}; "
            "pass torch.Generator() and the target device as device="
        )


def sample_dsa(
    n: int,
    image_size: tuple[int, int],
    strategy: str,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    *,
    batchwise: bool = False,
) -> DSAParams:
    """Draw the parameters of one DSA call for ``n`` images of size ``image_size`` = (H, W).

    All randomness comes from ``generator`` (a CPU generator): first the family, uniformly among
    the strategy's, then the per-sample parameters, which are moved to ``device``. With
    ``batchwise=True`` one set of parameters is drawn and shared by every sample.
    """
    families = parse_strategy(strategy)
    _check_generator(generator)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    h, w = int(image_size[0]), int(image_size[1])
    if not families:
        return DSAParams(NONE, {}, n, (h, w), batchwise=batchwise)
    family = families[int(torch.randint(0, len(families), (1,), generator=generator).item())]
    m = 1 if batchwise else n
    g = generator

    def rand() -> Tensor:
        return torch.rand(m, generator=g)

    if family == "color":
        values = {"brightness": rand(), "saturation": rand(), "contrast": rand()}
    elif family == "crop":
        shift_h, shift_w = int(h * RATIO_CROP_PAD + 0.5), int(w * RATIO_CROP_PAD + 0.5)
        values = {
            "tx": torch.randint(-shift_h, shift_h + 1, (m,), generator=g),
            "ty": torch.randint(-shift_w, shift_w + 1, (m,), generator=g),
        }
    elif family == "cutout":
        cut_h, cut_w = int(h * RATIO_CUTOUT + 0.5), int(w * RATIO_CUTOUT + 0.5)
        values = {
            "ox": torch.randint(0, h + (1 - cut_h % 2), (m,), generator=g),
            "oy": torch.randint(0, w + (1 - cut_w % 2), (m,), generator=g),
        }
    elif family == "flip":
        values = {"r": rand()}
    elif family == "scale":
        lo = 1.0 / RATIO_SCALE
        values = {"sx": rand() * (RATIO_SCALE - lo) + lo, "sy": rand() * (RATIO_SCALE - lo) + lo}
    else:  # rotate
        values = {"theta": (rand() - 0.5) * 2 * RATIO_ROTATE / 180 * math.pi}
    params = DSAParams(family, values, n, (h, w), batchwise=batchwise)
    return params.to(device) if torch.device(device) != params.device else params


# ---------------------------------------------------------------------- the operations


def _color(x: Tensor, b: Tensor, s: Tensor, c: Tensor) -> Tensor:
    x = x + (b.view(-1, 1, 1, 1) - 0.5) * BRIGHTNESS
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (s.view(-1, 1, 1, 1) * SATURATION) + m
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - m) * (c.view(-1, 1, 1, 1) + CONTRAST) + m


def _crop(x: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    # The field's index gather: read from the image padded by one zero pixel, clamping indices into
    # the padded range so that anything shifted further than the border also reads a zero.
    n, _, h, w = x.shape
    dev = x.device
    rows = (torch.arange(h, device=dev).view(1, h, 1) + tx.view(n, 1, 1) + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=dev).view(1, 1, w) + ty.view(n, 1, 1) + 1).clamp(0, w + 1)
    batch = torch.arange(n, device=dev).view(n, 1, 1)
    x_pad = F.pad(x, [1, 1, 1, 1])
    return x_pad.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def _cutout(x: Tensor, ox: Tensor, oy: Tensor) -> Tensor:
    n, _, h, w = x.shape
    dev = x.device
    cut_h, cut_w = int(h * RATIO_CUTOUT + 0.5), int(w * RATIO_CUTOUT + 0.5)
    # Clamping (not cropping) the patch at the border is the field's choice: a patch hanging over
    # the edge is squashed onto the edge row/column, so it zeroes fewer pixels.
    rows = (torch.arange(cut_h, device=dev).view(1, cut_h, 1) + ox.view(n, 1, 1) - cut_h // 2).clamp(0, h - 1)
    cols = (torch.arange(cut_w, device=dev).view(1, 1, cut_w) + oy.view(n, 1, 1) - cut_w // 2).clamp(0, w - 1)
    batch = torch.arange(n, device=dev).view(n, 1, 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=dev)
    mask[batch, rows, cols] = 0
    return x * mask.unsqueeze(1)


def _flip(x: Tensor, r: Tensor) -> Tensor:
    return torch.where(r.view(-1, 1, 1, 1) < PROB_FLIP, x.flip(3), x)


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _scale(x: Tensor, sx: Tensor, sy: Tensor) -> Tensor:
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
    return _affine(x, theta)


def _rotate(x: Tensor, angle: Tensor) -> Tensor:
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(x, theta)


def apply_dsa(x: Tensor, params: DSAParams) -> Tensor:
    """Apply ``params`` to the batch ``x`` (N x C x H x W, floating point).

    Deterministic given ``params`` and differentiable with respect to ``x``; parameters are moved
    to ``x``'s device and cast to its dtype.
    """
    if x.dim() != 4:
        raise ValueError(f"DSA expects a batch N x C x H x W, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"DSA expects floating-point images, got {x.dtype}")
    n = int(x.shape[0])
    if (int(x.shape[2]), int(x.shape[3])) != params.image_size:
        raise ValueError(
            f"DSA parameters were drawn for {params.image_size[0]}x{params.image_size[1]} images, "
            f"got {x.shape[2]}x{x.shape[3]}"
        )
    if not params.batchwise and len(params) != n:
        raise ValueError(
            f"DSA parameters are for {len(params)} samples but the batch has {n}; "
            "draw them for this batch or select the matching sub-batch with params[idx]"
        )
    if params.family == NONE or n == 0:
        return x

    def get(key: str, dtype: torch.dtype) -> Tensor:
        v = params.values[key].to(device=x.device, dtype=dtype)
        return v.expand(n) if params.batchwise else v

    fdt, idt = x.dtype, torch.long
    if params.family == "color":
        return _color(x, get("brightness", fdt), get("saturation", fdt), get("contrast", fdt))
    if params.family == "crop":
        return _crop(x, get("tx", idt), get("ty", idt))
    if params.family == "cutout":
        return _cutout(x, get("ox", idt), get("oy", idt))
    if params.family == "flip":
        return _flip(x, get("r", fdt))
    if params.family == "scale":
        return _scale(x, get("sx", fdt), get("sy", fdt))
    return _rotate(x, get("theta", fdt))


class DSA:
    """A DSA strategy: ``aug(x, generator)`` samples parameters for ``x`` and applies them.

    For siamese use (the same transform on two batches) call ``sample`` once and ``apply`` twice.
    """

    def __init__(self, strategy: str = DEFAULT_STRATEGY) -> None:
        self.families = parse_strategy(strategy)
        self.strategy = "_".join(self.families) if self.families else NONE

    @classmethod
    def none(cls) -> DSA:
        return cls(NONE)

    @property
    def is_identity(self) -> bool:
        return not self.families

    def sample(
        self,
        n: int,
        image_size: tuple[int, int],
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        *,
        batchwise: bool = False,
    ) -> DSAParams:
        return sample_dsa(n, image_size, self.strategy, generator, device, batchwise=batchwise)

    @staticmethod
    def apply(x: Tensor, params: DSAParams) -> Tensor:
        return apply_dsa(x, params)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.is_identity:
            return x
        if x.dim() != 4:
            raise ValueError(f"DSA expects a batch N x C x H x W, got shape {tuple(x.shape)}")
        params = self.sample(int(x.shape[0]), (int(x.shape[2]), int(x.shape[3])), generator, x.device)
        return apply_dsa(x, params)

    def __repr__(self) -> str:
        return f"DSA({self.strategy!r})"
