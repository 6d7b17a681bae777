"""D3's decoders: a latent code z in R^z -> an image of the data's shape and value range.

Three sizes, as in the authors' code (LeakyReLU 0.01, BatchNorm, tanh output), for any resolution and
channel count: the decoder grows a 2 x 2 map by `blocks = log2(canvas / 2)` upsampling blocks to a
square canvas, the smallest power of two at least the image's side, then crops the centre to the
image (28 x 28 decodes to 32 x 32 and crops 2 pixels a side; the authors support 32, 64, 128 and 256
only). With `k` the top width:

- small (k = 256, z = 64; 789,187 parameters at 64 x 64 x 3): Linear z -> 4k, reshape k x 2 x 2;
  blocks of [ConvTranspose 4x4 stride 2 pad 1, BN, LReLU] with widths k / [1, 2, 4, 8, 8, ...]
  (halving to k/8, then constant); Conv 3x3 -> channels.
- medium (k = 512, z = 2048; 5,774,691 parameters): Linear z -> 4k, reshape k x 2 x 2;
  blocks of [ConvTranspose 3x3 stride 2 pad 1 output_padding 1, BN, LReLU], each halving the width
  but the last (the authors' `final_layer`), which keeps it; Conv 3x3 -> channels.
- large (k = 1024, z = 4096 = 4k; 6,308,547 parameters): as medium without the Linear: the latent is
  reshaped to k x 2 x 2.

BatchNorm always uses the statistics of the batch it decodes (no running statistics), so a
sub-task's priors are decoded as one batch. The tanh output in [-1, 1] is mapped per channel to the
data's value range [low, high] (the authors feed tanh's range to mean/std-normalised networks; here
the decoder's images live where the real images do).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..errors import ConfigError

SIZES = ("small", "medium", "large")
DEFAULT_WIDTH = {"small": 256, "medium": 512, "large": 1024}
SLOPE = 0.01  # LeakyReLU's negative slope (PyTorch's default, as the authors use)


@dataclass(frozen=True)
class DecoderSpec:
    """Everything that builds a decoder: stored in the artifact's manifest."""

    size: str
    z_dim: int
    channels: int
    height: int
    width: int
    kernel_num: int  # the top width k
    low: tuple[float, ...]  # per channel: the value tanh's -1 maps to
    high: tuple[float, ...]  # ... and +1

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ConfigError(f"d3.decoder must be one of {', '.join(SIZES)}, got {self.size!r}.")
        if self.size == "large" and self.z_dim != 4 * self.kernel_num:
            raise ConfigError(
                f"the large decoder reshapes the latent to k x 2 x 2, so d3.z_dim must be 4 x k = "
                f"{4 * self.kernel_num} (got {self.z_dim})."
            )
        if self.size == "small" and self.kernel_num % 8:
            raise ConfigError(f"the small decoder's width k must divide by 8 (got {self.kernel_num}).")
        if len(self.low) != self.channels or len(self.high) != self.channels:
            raise ValueError("low and high need one value per channel.")

    @property
    def canvas(self) -> int:
        return max(4, 2 ** math.ceil(math.log2(max(self.height, self.width))))

    @property
    def blocks(self) -> int:
        return int(math.log2(self.canvas // 2))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["low"], out["high"] = list(self.low), list(self.high)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> DecoderSpec:
        return cls(**{**d, "low": tuple(d["low"]), "high": tuple(d["high"])})

    @classmethod
    def for_data(
        cls, size: str, z_dim: int, kernel_num: int | None, image_shape: tuple[int, int, int], train_x: Tensor
    ) -> DecoderSpec:
        """The spec for data of `image_shape` whose (preprocessed) training images are `train_x`."""
        c, h, w = image_shape
        low = tuple(float(v) for v in train_x.detach().amin(dim=(0, 2, 3)).cpu())
        high = tuple(float(v) for v in train_x.detach().amax(dim=(0, 2, 3)).cpu())
        return cls(size, z_dim, c, h, w, kernel_num or DEFAULT_WIDTH.get(size, 0), low, high)


def _block(c_in: int, c_out: int, kernel: int, output_padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=1, output_padding=output_padding),
        nn.BatchNorm2d(c_out, track_running_stats=False),
        nn.LeakyReLU(SLOPE),
    )


class Decoder(nn.Module):
    """z (B x z_dim) -> images (B x C x H x W) in [low, high] per channel."""

    def __init__(self, spec: DecoderSpec):
        super().__init__()
        self.spec = spec
        k, b = spec.kernel_num, spec.blocks
        if spec.size == "small":
            widths = [k // min(2**i, 8) for i in range(b + 1)]
            kernel, pad = 4, 0
        else:
            widths = [k // 2**i for i in range(b)] + [k // 2 ** (b - 1)]
            kernel, pad = 3, 1
        if min(widths) < 1:
            raise ConfigError(f"the decoder's width k={k} is too small for {b} blocks; raise d3.kernel_num.")
        self.project = nn.Linear(spec.z_dim, 4 * k) if spec.size != "large" else None
        self.blocks = nn.Sequential(*[_block(widths[i], widths[i + 1], kernel, pad) for i in range(b)])
        self.out = nn.Conv2d(widths[-1], spec.channels, 3, padding=1)
        self.register_buffer("low", torch.tensor(spec.low).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("high", torch.tensor(spec.high).view(1, -1, 1, 1), persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z) if self.project is not None else z
        h = self.out(self.blocks(h.reshape(z.shape[0], self.spec.kernel_num, 2, 2)))
        x = self.low + (torch.tanh(h) + 1) * 0.5 * (self.high - self.low)
        top = (self.spec.canvas - self.spec.height) // 2
        left = (self.spec.canvas - self.spec.width) // 2
        return x[:, :, top : top + self.spec.height, left : left + self.spec.width]


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
