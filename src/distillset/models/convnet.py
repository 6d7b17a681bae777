"""ConvNet, the field's standard distillation network: `depth` conv-norm-act-pool blocks and one linear layer.

Faithful to networks.py of DC/DSA/DM/MTT/DATM/PAD, so that parameter names, shapes and their flat order
(which PAD masks by leading fraction) match: features.0 conv, features.1 norm, ..., classifier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from .registry import DistillModel, ModelError, check_choice, register_model

NORMS = ("instance", "batch", "layer", "group", "none")
ACTS = ("relu", "leakyrelu", "sigmoid")
POOLINGS = ("avg", "max", "none")


def default_convnet_depth(im_size: Sequence[int] | int) -> int:
    """The field's ConvNet depth for an image size: 3 up to 32x32, 4 at 64, 5 at 128; 2 for 8x8 digits.

    Larger sizes add one block per doubling, so the last maps stay around 4x4.
    """
    s = im_size if isinstance(im_size, int) else min(int(v) for v in im_size)
    if s <= 8:
        # 8 -> 4 -> 2; tinier inputs get as many halvings as they allow.
        return max(1, min(2, s.bit_length() - 1))
    if s <= 32:
        return 3
    return 3 + math.ceil(math.log2(s / 32))


def _norm_layer(norm: str, width: int, h: int, w: int) -> nn.Module:
    if norm == "instance":
        # The field's "instancenorm": one group per channel, with a learnt affine (unlike InstanceNorm2d).
        return nn.GroupNorm(width, width, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(width)
    if norm == "layer":
        return nn.LayerNorm([width, h, w], elementwise_affine=True)
    return nn.GroupNorm(4, width, affine=True)  # "group"


def _activation(act: str) -> nn.Module:
    # Not in place: the inner loop of trajectory matching differentiates through these twice.
    return {"relu": nn.ReLU, "leakyrelu": lambda: nn.LeakyReLU(0.01), "sigmoid": nn.Sigmoid}[act]()


@register_model(
    "convnet",
    aliases={"convnet_bn": {"norm": "batch"}, "convnetbn": {"norm": "batch"}},
    defaults=lambda in_shape: {"depth": default_convnet_depth(in_shape[1:])},
)
class ConvNet(DistillModel):
    """`depth` blocks of Conv3x3(width) -> norm -> act -> 2x2 pool, then Linear(width * h * w, num_classes).

    norm: "instance" (GroupNorm(width, width), the field's default), "batch", "layer", "group" (4 groups) or
    "none". For 1-channel 28x28 inputs the first conv pads by 3, so maps go 32 -> 16 -> 8 -> 4 as for CIFAR.
    """

    def __init__(
        self,
        channel: int,
        num_classes: int,
        width: int = 128,
        depth: int = 3,
        act: str = "relu",
        norm: str = "instance",
        pooling: str = "avg",
        im_size: Sequence[int] = (32, 32),
    ):
        super().__init__()
        check_choice("ConvNet norm", norm, NORMS)
        check_choice("ConvNet act", act, ACTS)
        check_choice("ConvNet pooling", pooling, POOLINGS)
        if int(width) < 1 or int(depth) < 1:
            raise ModelError(f"ConvNet width and depth must be at least 1, got width={width}, depth={depth}.")
        width, depth = int(width), int(depth)
        H, W = (int(s) for s in im_size)

        pad0 = 3 if channel == 1 and (H, W) == (28, 28) else 1
        layers: list[nn.Module] = []
        in_ch, h, w = channel, H, W
        for d in range(depth):
            pad = pad0 if d == 0 else 1
            layers.append(nn.Conv2d(in_ch, width, kernel_size=3, padding=pad))
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            if norm != "none":
                layers.append(_norm_layer(norm, width, h, w))
            layers.append(_activation(act))
            if pooling != "none":
                if h < 2 or w < 2:
                    default = default_convnet_depth((H, W))
                    fix = f"Use depth <= {d} (the default for this size is {default}), or" if d else "Use"
                    raise ModelError(
                        f"ConvNet depth {depth} is too deep for {H}x{W} inputs: block {d + 1} would pool "
                        f"{h}x{w} maps below 1x1. {fix} pooling='none'."
                    )
                layers.append(nn.AvgPool2d(2, 2) if pooling == "avg" else nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            in_ch = width

        self.features = nn.Sequential(*layers)
        self.feature_dim = width * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self._record_spec(
            channel, (H, W), num_classes, width=width, depth=depth, act=act, norm=norm, pooling=pooling
        )

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.classifier(features)
