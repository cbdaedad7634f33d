"""mmclassification's ResNet_CIFAR (resnet50_b16x8_cifar100) as a plain torchvision model, for seeds/000.

ResNet_CIFAR swaps ResNet's 7x7 stride-2 stem and its max-pool for one 3x3 stride-1 convolution, so
32x32 images keep their resolution into layer1. Its checkpoint keys are torchvision's below the
`backbone.` and `head.` prefixes, which the spec's weightsPrefixMap strips. Upload this file where
the spec's source.code points.
"""

from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet


def resnet50_cifar(num_classes: int = 100) -> nn.Module:
    model = ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
