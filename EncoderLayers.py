"""The frozen ImageNet VGG16 encoder: weight loading and multi-scale feature taps.

Owns where the backbone weights come from (an explicit file, torchvision's
IMAGENET1K_V1 cache/download, or explicitly random) and the frozen module that turns
a normalised L channel into a list of ReLU taps. Nothing here is ever trained.

Usage:
    features = load_vgg16_features("weights/vgg16_features_imagenet.pth")  # or None, or "none"
    encoder = FrozenVGG16Encoder(features, taps=("relu2_2", "relu3_3", "relu4_3", "relu5_3"))
    taps = encoder(L)  # L: (B, 1, H, W) in [-1, 1] -> list of (B, C_i, H/s_i, W/s_i)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG16_Weights, vgg, vgg16

from References import IMAGENET_MEAN, IMAGENET_STD, LAB, VGG16_TAPS


class BackboneUnavailableError(RuntimeError):
    """No ImageNet weights could be found; the message says how to supply them."""


_HOW_TO = ("pass --backbone-weights PATH to a torchvision-layout state dict of vgg16().features "
           "or of the full vgg16() (e.g. vgg16_features_imagenet.pth), or connect to the internet once "
           "so torchvision can cache VGG16_Weights.IMAGENET1K_V1, or pass --backbone-weights none "
           "for an untrained (random) encoder")


def features_state_dict(raw: dict, source: Path) -> dict[str, torch.Tensor]:
    """Accept a state dict of ``vgg16().features`` or of the full ``vgg16()``, or a colourizer checkpoint (its
    frozen encoder is the ImageNet VGG16); return ``vgg16().features``' keys."""
    if not isinstance(raw, dict) or not raw:
        raise BackboneUnavailableError(f"{source}: not a state dict")
    if isinstance(raw.get("encoder"), dict) and "model_config" in raw:  # a colourizer checkpoint: its encoder
        raw = raw["encoder"]
    if not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise BackboneUnavailableError(f"{source}: not a state dict of tensors (a VGG16 weights file, or a "
                                       "colourizer checkpoint, whose encoder is used)")
    if any(k.startswith("features.") for k in raw):
        raw = {k[len("features."):]: v for k, v in raw.items() if k.startswith("features.")}
    return {k: v.float() for k, v in raw.items()}


def vgg16_features() -> nn.Sequential:
    """An untrained ``vgg16().features``, built without the 102 M-parameter classifier (1.4 s of start-up)."""
    return vgg.make_layers(vgg.cfgs["D"], batch_norm=False)


def load_vgg16_features(source: str | Path | None) -> nn.Sequential:
    """Build ``vgg16().features`` with ImageNet weights.

    source: a file path (torchvision-layout state dict, features-only or full model);
    None for torchvision's IMAGENET1K_V1 (its cache, downloading if needed); or the
    string "none" for random initialisation (tests only). Never falls back silently.
    """
    if isinstance(source, str) and source.lower() == "none":
        return vgg16_features()
    if source is not None:
        path = Path(source).expanduser()
        if not path.is_file():
            raise BackboneUnavailableError(f"{path}: backbone weights file not found; {_HOW_TO}")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle or zip error: say which file and why
            raise BackboneUnavailableError(f"{path}: cannot load backbone weights ({e})") from None
        features = vgg16_features()
        try:
            features.load_state_dict(features_state_dict(raw, path))
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise BackboneUnavailableError(f"{path}: not a VGG16 state dict ({first})") from None
        return features
    try:
        return vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features
    except Exception as e:  # URLError, hash mismatch, read-only cache, ...
        raise BackboneUnavailableError(
            f"could not load torchvision's VGG16 ImageNet weights ({e.__class__.__name__}: {e}); {_HOW_TO}"
        ) from None


class FrozenVGG16Encoder(nn.Module):
    """VGG16 ``features`` truncated after the deepest requested tap, frozen.

    Input: L in network units, (B, 1, H, W) in [-1, 1]. It is turned into the RGB
    grey image torchvision expects (R = G = B = L/100) and ImageNet-normalised.
    Output: one tensor per tap, shallowest first, e.g. relu3_3 is (B, 256, H//4, W//4).
    Parameters never require grad, and ``train()`` leaves it in eval mode.
    """

    def __init__(self, features: nn.Sequential, taps: tuple[str, ...]) -> None:
        super().__init__()
        unknown = [t for t in taps if t not in VGG16_TAPS]
        if unknown or not taps:
            raise ValueError(f"unknown encoder taps {unknown}; choose from {list(VGG16_TAPS)}")
        self.taps = tuple(sorted(taps, key=VGG16_TAPS.get))
        self.tap_indices = [VGG16_TAPS[t] for t in self.taps]
        self.features = features[: self.tap_indices[-1] + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenVGG16Encoder":
        # Frozen means frozen: model.train() must not switch the backbone's mode.
        return super().train(False)

    def forward(self, L: torch.Tensor) -> list[torch.Tensor]:
        grey = (L * LAB.l_scale + LAB.l_center) / 100.0  # [0, 1]
        x = (grey.expand(-1, 3, -1, -1) - self.mean) / self.std
        outs = []
        with torch.no_grad():
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in self.tap_indices:
                    outs.append(x)
        return outs
