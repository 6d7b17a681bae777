"""The field's other cross-architecture networks: MLP, LeNet, AlexNet and VGG11 (as in DC's networks.py).

Each follows the original layer for layer; the only changes make it build for any input size (the flat
size of the head is computed from the input shape) and keep it working on 8x8 digits (documented per class).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from .registry import DistillModel, ModelError, check_choice, conv_out, register_model


def _check_map(model: str, h: int, w: int, H: int, W: int) -> None:
    if h < 1 or w < 1:
        raise ModelError(f"{model} cannot take {H}x{W} inputs: its feature maps would shrink below 1x1.")


@register_model("mlp")
class MLP(DistillModel):
    """Linear(C*H*W, 128) -> ReLU -> Linear(128, 128) -> ReLU -> Linear(128, num_classes)."""

    def __init__(self, channel: int, num_classes: int, im_size: Sequence[int] = (32, 32)):
        super().__init__()
        H, W = (int(s) for s in im_size)
        self.fc_1 = nn.Linear(channel * H * W, 128)
        self.fc_2 = nn.Linear(128, 128)
        self.fc_3 = nn.Linear(128, num_classes)
        self.feature_dim = 128
        self._record_spec(channel, (H, W), num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.fc_1(x.flatten(1)).relu()
        return self.fc_2(x).relu()

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc_3(features)


@register_model("lenet")
class LeNet(DistillModel):
    """Conv5(6) -> ReLU -> MaxPool2 -> Conv5(16) -> ReLU -> MaxPool2 -> fc 120 -> ReLU -> fc 84 -> ReLU -> fc.

    The first conv pads by 2 for 1-channel inputs, by 0 otherwise, as in the field. Inputs smaller than 16x16
    (8x8 digits) would leave no map for the second conv, so there the first conv pads by just enough,
    ceil((16 - size) / 2), to end on 1x1 maps (4 at 8x8).
    """

    def __init__(self, channel: int, num_classes: int, im_size: Sequence[int] = (32, 32)):
        super().__init__()
        H, W = (int(s) for s in im_size)
        pad = max(2 if channel == 1 else 0, math.ceil((16 - min(H, W)) / 2))
        self.features = nn.Sequential(
            nn.Conv2d(channel, 6, kernel_size=5, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        h, w = (conv_out(conv_out(conv_out(conv_out(s, 5, 1, pad), 2, 2), 5), 2, 2) for s in (H, W))
        _check_map("LeNet", h, w, H, W)
        self.fc_1 = nn.Linear(16 * h * w, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)
        self.feature_dim = 84
        self._record_spec(channel, (H, W), num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.features(x).flatten(1)
        x = self.fc_1(x).relu()
        return self.fc_2(x).relu()

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc_3(features)


def _conv_norm(norm: str, c: int) -> list[nn.Module]:
    if norm == "batch":
        return [nn.BatchNorm2d(c)]
    if norm == "instance":
        return [nn.GroupNorm(c, c, affine=True)]
    return []


@register_model("alexnet", aliases={"alexnet_bn": {"norm": "batch"}, "alexnetbn": {"norm": "batch"}})
class AlexNet(DistillModel):
    """DC's AlexNet: five convs (128, 192, 256, 192, 192 channels), three 2x2 max pools, one linear layer.

    norm "none" (the field's AlexNet), "batch" (AlexNetBN) or "instance" puts a norm after each conv.
    The first conv pads by 4 for 1-channel inputs (28x28 -> 32x32), by 2 otherwise.
    """

    def __init__(self, channel: int, num_classes: int, norm: str = "none", im_size: Sequence[int] = (32, 32)):
        super().__init__()
        check_choice("AlexNet norm", norm, ("none", "batch", "instance"))
        H, W = (int(s) for s in im_size)
        pad0 = 4 if channel == 1 else 2
        # (out channels, kernel, padding, pool after)
        cfg = [
            (128, 5, pad0, True),
            (192, 5, 2, True),
            (256, 3, 1, False),
            (192, 3, 1, False),
            (192, 3, 1, True),
        ]
        layers: list[nn.Module] = []
        in_ch, h, w = channel, H, W
        for out_ch, k, p, pool in cfg:
            layers += [
                nn.Conv2d(in_ch, out_ch, kernel_size=k, padding=p),
                *_conv_norm(norm, out_ch),
                nn.ReLU(),
            ]
            h, w = conv_out(h, k, 1, p), conv_out(w, k, 1, p)
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                h, w = h // 2, w // 2
            _check_map("AlexNet", h, w, H, W)
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.feature_dim = 192 * h * w
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self._record_spec(channel, (H, W), num_classes, norm=norm)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features)


VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


@register_model("vgg11", aliases={"vgg11_bn": {"norm": "batch"}, "vgg11bn": {"norm": "batch"}})
class VGG11(DistillModel):
    """DC's VGG11: Conv3x3 -> norm -> ReLU blocks with 2x2 max pools, then Linear(512 * h * w, num_classes).

    norm "instance" (GroupNorm(c, c), the field's VGG11) or "batch" (VGG11BN). The first conv pads by 3 for
    1-channel 28x28 inputs. A max pool whose input is already 1 pixel high or wide is replaced by an
    Identity (so parameter names stay the same): 8x8 digits end on 1x1 maps after three pools.
    """

    def __init__(
        self, channel: int, num_classes: int, norm: str = "instance", im_size: Sequence[int] = (32, 32)
    ):
        super().__init__()
        check_choice("VGG11 norm", norm, ("instance", "batch"))
        H, W = (int(s) for s in im_size)
        pad0 = 3 if channel == 1 and (H, W) == (28, 28) else 1
        layers: list[nn.Module] = []
        in_ch, h, w = channel, H, W
        for i, v in enumerate(VGG11_CFG):
            if v == "M":
                if min(h, w) < 2:
                    layers.append(nn.Identity())
                else:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    h, w = h // 2, w // 2
                continue
            p = pad0 if i == 0 else 1
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=p), *_conv_norm(norm, v), nn.ReLU()]
            h, w = conv_out(h, 3, 1, p), conv_out(w, 3, 1, p)
            in_ch = v
        self.features = nn.Sequential(*layers)
        self.feature_dim = 512 * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self._record_spec(channel, (H, W), num_classes, norm=norm)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.classifier(features)
