"""The discriminators for adversarial fine-tuning: a conditional PatchGAN and a WGAN-GP critic, both on Lab.

Owns the networks that judge (L, ab) pairs, and their receptive field:
  * ``PatchDiscriminator``: pix2pix's 70x70 PatchGAN (Isola et al. 2017, "NLayerDiscriminator"):
    L and ab stacked (3 channels), 4x4 convolutions (three with stride 2, then two with stride 1),
    LeakyReLU(0.2), no normalisation on the first layer, BatchNorm after the others, and one
    logit per overlapping 70x70 patch;
  * ``Critic``: the same trunk for the Wasserstein GAN with gradient penalty (Gulrajani et al. 2017).
    The penalty is taken per sample, so it has no BatchNorm (which mixes the samples of a batch):
    InstanceNorm (affine) instead. It gives one unbounded score per patch; the image's score is their mean.
Both start from pix2pix's initialisation (``init_weights``): conv weights N(0, 0.02), norm weights
N(1, 0.02), biases 0. ``receptive_field`` computes the input window one output sees from the layers themselves.

Inputs are the network's Lab units: L (B, 1, H, W) and ab (B, 2, H, W), both in [-1, 1].

Usage:
    D = PatchDiscriminator()                       # or Critic()
    logits = D(L, ab)                              # (B, 1, H/8 - 2, W/8 - 2) for H, W divisible by 8
    receptive_field(D)                             # 70
"""
from __future__ import annotations

import torch
from torch import nn


def _trunk(in_channels: int, width: int, n_layers: int, norm: type[nn.Module]) -> list[nn.Module]:
    """pix2pix's NLayerDiscriminator layers: C64 - C128 - C256 (stride 2) - C512 (stride 1) - 1 (stride 1)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
        prev, mult = mult, min(2 ** n, 8)
        stride = 2 if n < n_layers else 1
        layers += [nn.Conv2d(width * prev, width * mult, 4, stride=stride, padding=1, bias=False),
                   norm(width * mult), nn.LeakyReLU(0.2, True)]
    layers.append(nn.Conv2d(width * mult, 1, 4, stride=1, padding=1))
    return layers


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix's "normal" initialisation, in place: conv weights N(0, gain), BatchNorm/InstanceNorm weights
    N(1, gain), biases 0 (PyTorch's default Kaiming-uniform convs start D with larger, layer-dependent scales).
    Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, gain)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module


def _instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: (L (B, 1, H, W), ab (B, 2, H, W), both in [-1, 1]) -> logits (B, 1, h, w).

    With ``n_layers`` = 3 every logit sees a 70x70 window of the input (``receptive_field``); the
    logits are raw (the loss applies the sigmoid, or compares them with 0/1 for least squares).
    """

    def __init__(self, width: int = 64, n_layers: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(*_trunk(in_channels, width, n_layers, nn.BatchNorm2d))
        init_weights(self)

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat((L, ab), dim=1))


class Critic(nn.Module):
    """WGAN-GP critic on Lab: (L, ab) as for ``PatchDiscriminator`` -> unbounded scores (B, 1, h, w) per 70x70 patch.

    No BatchNorm (the gradient penalty is per sample): InstanceNorm with affine parameters.
    """

    def __init__(self, width: int = 64, n_layers: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(*_trunk(in_channels, width, n_layers, _instance_norm))
        init_weights(self)

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat((L, ab), dim=1))


def build_discriminator(kind: str, width: int = 64) -> nn.Module:
    """The discriminator for ``--gan kind``: "patchgan" or "wgan-gp"."""
    if kind == "patchgan":
        return PatchDiscriminator(width)
    if kind == "wgan-gp":
        return Critic(width)
    raise ValueError(f"unknown --gan {kind!r}; choose patchgan or wgan-gp")


def receptive_field(module: nn.Module) -> int:
    """Side of the input window that one output of a chain of convolutions sees, in pixels.

    r = 1 + sum over conv layers of (kernel - 1) * (product of the strides before it). Assumes
    the convolutions run in sequence (true of both discriminators here); square kernels only.
    """
    r, jump = 1, 1
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            r += (m.kernel_size[0] - 1) * m.dilation[0] * jump
            jump *= m.stride[0]
    return r
