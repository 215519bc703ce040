"""ResNet-18/34/50 trunks whose parameter and buffer names match torchvision's.

A torchvision or timm ResNet state dict loads by name (the classifier ``fc`` is absent).
The trunk is split into named stages ``STAGES = ("stem", "layer1", ..., "layer4")`` so a
method can run parts of it (modality-specific stems, gating a mid-level map, cut points).
Optional non-local blocks live in ``nonlocal_blocks`` and never shift torchvision's indices.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from crossreid.errors import UserError
from crossreid.models.layers import NonLocalBlock

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def _conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, as torchvision v1.5) -> 1x1 with 4x expansion (ResNet-50)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetStem(nn.Module):
    """conv1 -> bn1 -> relu -> maxpool, named as in torchvision (a standalone stem copy)."""

    def __init__(self, conv1: nn.Conv2d, bn1: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = conv1
        self.bn1 = bn1
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class ResNet(nn.Module):
    """ResNet trunk without ``fc``; ``forward(x)`` returns the layer4 feature map.

    Args:
        block, layers: block type and blocks per stage (see ``resnet18/34/50``).
        last_stride: stride of layer4's first block and its downsample (1 doubles the map).
        zero_init_residual: zero the last BN weight of every block (torchvision option).
        in_channels: input channels of ``conv1`` (3 for ImageNet weights).
        base_width: channels of the stem and layer1, doubled at each later stage (64: the standard
            ResNet, the only width ImageNet weights fit; 32 does about a quarter of the work).
        nonlocal_after: ``{"layer2": [2, 3], "layer3": [3, 4, 5]}`` inserts a non-local block
            after those block indices (AGW); stored as ``nonlocal_blocks["layer2_2"]`` etc.
        nonlocal_inter: intermediate width of those blocks (None: C/2; AGW's released code: 1).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        last_stride: int = 2,
        zero_init_residual: bool = False,
        in_channels: int = 3,
        nonlocal_after: Mapping[str, Sequence[int]] | None = None,
        nonlocal_inter: int | None = None,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise UserError(f"last_stride must be 1 or 2, got {last_stride}; fix the model config")
        if base_width < 8:
            raise UserError(f"base_width must be at least 8 channels, got {base_width}; fix model.base_width")
        self.inplanes = base_width
        self.conv1 = nn.Conv2d(in_channels, base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base_width, layers[0])
        self.layer2 = self._make_layer(block, 2 * base_width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * base_width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * base_width, layers[3], stride=last_stride)
        self.out_channels = 8 * base_width * block.expansion
        self._init_weights(zero_init_residual)
        self.kept: tuple[str, ...] = STAGES
        self.nonlocal_blocks = self._make_nonlocal(nonlocal_after or {}, nonlocal_inter)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        modules = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        modules += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def _make_nonlocal(self, after: Mapping[str, Sequence[int]], inter: int | None) -> nn.ModuleDict:
        self.nonlocal_blocks = nn.ModuleDict()
        self.add_nonlocal(after, inter)
        return self.nonlocal_blocks

    def add_nonlocal(self, after: Mapping[str, Sequence[int]], inter: int | None = None) -> None:
        """Insert non-local blocks (identity at initialisation) after the given block indices,
        e.g. ``{"layer2": [2, 3]}``; the one way to add them, at construction or later."""
        for stage, indices in after.items():
            if stage not in STAGES[1:]:
                raise UserError(f"non-local blocks go in layer1..layer4, not {stage!r}; fix the model config")
            layer = getattr(self, stage)
            for i in indices:
                if not 0 <= i < len(layer):
                    raise UserError(f"{stage} has blocks 0..{len(layer) - 1}; non-local index {i} is out of range")
                self.nonlocal_blocks[f"{stage}_{i}"] = NonLocalBlock(layer[i].last_bn().num_features, inter)

    def keep_stages(self, start: str = "stem", end: str = "layer4") -> ResNet:
        """Keep stages ``start`` .. ``end`` only (in place; returns the trunk): the others' modules
        and non-local blocks are dropped, so their weights leave ``state_dict`` and the optimiser,
        and ``forward`` runs the kept range. E.g. ``keep_stages("layer1")`` for a trunk whose stem
        lives elsewhere (AGW), ``copy.deepcopy(t).keep_stages("layer3")`` for a layer3-4 branch."""
        first, last = stage_index(start), stage_index(end)
        for name in STAGES:
            if first <= stage_index(name) <= last:
                continue
            if name == "stem":
                self.conv1 = self.bn1 = None
            else:
                setattr(self, name, None)
                for key in [k for k in self.nonlocal_blocks if k.startswith(f"{name}_")]:
                    del self.nonlocal_blocks[key]
        self.kept = STAGES[first:last + 1]
        return self

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stage(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Run one stage of ``STAGES`` (with its non-local blocks, if any)."""
        if name not in self.kept:
            raise ValueError(f"stage {name!r} is not in this trunk (it keeps {', '.join(self.kept)})")
        if name == "stem":
            return self.forward_stem(x)
        for i, blk in enumerate(getattr(self, name)):
            x = blk(x)
            key = f"{name}_{i}"
            if key in self.nonlocal_blocks:
                x = self.nonlocal_blocks[key](x)
        return x

    def forward_stages(self, x: torch.Tensor, start: str | None = None, end: str | None = None) -> torch.Tensor:
        """Run stages ``start`` .. ``end`` inclusive (default: the kept ones), e.g.
        ``("layer3", "layer4")`` after a gate."""
        for name in STAGES[stage_index(start or self.kept[0]): stage_index(end or self.kept[-1]) + 1]:
            x = self.forward_stage(name, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)

    def make_stem(self) -> ResNetStem:
        """An independent copy of this trunk's stem (same weights, torchvision names).

        AGW-style two-stream nets keep one stem per modality and share layer1-4.
        """
        return ResNetStem(copy.deepcopy(self.conv1), copy.deepcopy(self.bn1))


def stage_index(name: str) -> int:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are {STAGES}")
    return STAGES.index(name)


_SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
ARCHS = tuple(_SPECS)


def build_resnet(arch: str, **kwargs) -> ResNet:
    """``build_resnet("resnet50", last_stride=1)``; kwargs as for ``ResNet``."""
    if arch not in _SPECS:
        raise UserError(f"unknown arch {arch!r}; use one of: {', '.join(ARCHS)}")
    block, layers = _SPECS[arch]
    return ResNet(block, layers, **kwargs)


def resnet18(**kwargs) -> ResNet:
    return build_resnet("resnet18", **kwargs)


def resnet34(**kwargs) -> ResNet:
    return build_resnet("resnet34", **kwargs)


def resnet50(**kwargs) -> ResNet:
    return build_resnet("resnet50", **kwargs)
