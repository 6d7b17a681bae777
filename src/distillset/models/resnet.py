"""ResNet18 as the dataset-distillation field uses it (DC's CIFAR variant): a 3x3 stem and no max pool.

Parameter names follow DC's networks.py (conv1, bn1, layerK.i.{conv1,bn1,conv2,bn2,shortcut}, classifier),
with "bn" kept even when the norm is the field's instance norm.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .registry import DistillModel, check_choice, register_model


def _norm(norm: str, c: int) -> nn.Module:
    # "instance" is the field's instancenorm: GroupNorm with one channel per group and a learnt affine.
    return nn.GroupNorm(c, c, affine=True) if norm == "instance" else nn.BatchNorm2d(c)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; the shortcut is a 1x1 conv + norm when the shape changes."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, norm: str = "instance"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), _norm(norm, planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        # Out of place (the original adds in place): safer under torch.func and double backward.
        return (out + self.shortcut(x)).relu()


@register_model("resnet18", aliases={"resnet18_bn": {"norm": "batch"}, "resnet18bn": {"norm": "batch"}})
class ResNet18(DistillModel):
    """Conv3x3(64) -> norm -> ReLU, four stages of two BasicBlocks (64, 128, 256, 512 planes; strides
    1, 2, 2, 2), global average pooling, Linear(512, num_classes).

    norm "instance" (the field's ResNet18) or "batch" (ResNet18BN). The global pooling is adaptive, which
    equals DC's avg_pool2d(4) at 32x32 and also fits other sizes.
    """

    def __init__(
        self, channel: int, num_classes: int, norm: str = "instance", im_size: Sequence[int] = (32, 32)
    ):
        super().__init__()
        check_choice("ResNet18 norm", norm, ("instance", "batch"))
        self.conv1 = nn.Conv2d(channel, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = _norm(norm, 64)
        in_planes = 64
        for i, (planes, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
            blocks = [BasicBlock(in_planes, planes, stride, norm), BasicBlock(planes, planes, 1, norm)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = planes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 512 * BasicBlock.expansion
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self._record_spec(channel, im_size, num_classes, norm=norm)

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.pool(out).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.classifier(features)
