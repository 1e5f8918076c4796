"""The trainable decoder (encoder taps -> ab) and the model that composes encoder and decoder.

Owns the U-Net / hypercolumn decoder: each encoder tap is normalised (BatchNorm: the
ImageNet VGG16 taps reach ~1e4), projected, and fused from deep to shallow; a
global-context vector pooled from the deepest tap is broadcast back over the image
(the "fusion layer" of encoder-classifier colourisers). Two heads:
  * regression: tanh -> ab in [-1, 1], upsampled bilinearly to the input size;
  * classification: logits over quantised ab bins at half the input resolution
    (decoded to ab by ``ModelIO.decode_prediction``).
``guided=True`` adds the user's colour hints (Zhang et al. 2017): local points, an ab map and a mask at
the working size, enter every decoder scale through a small ``HintBranch``; a global hint, a
distribution over the ab bins with a "given" flag, enters the global-context (fusion) vector through
``GlobalHint`` and shifts the logits by its log-probabilities. All hint layers are bias-free and their last
layer starts at zero, so with no hints (all-zero inputs) they add exactly 0: a guided decoder
initialised from a trained one starts as that model, and always colours an unhinted photo from its
base weights alone.
``block="resunet"`` turns each up-block's refinement into a residual block (two 3x3 convolutions
and an identity skip), with the same skips and fusion layer: the design seed's "U-Net of
residual blocks". ``DecoderEnsemble`` runs several trained classification decoders on the same taps and
multiplies their colour distributions (the release may ship two; see Export.export_release).

Usage:
    decoder = Decoder(taps=("relu2_2", "relu3_3", "relu4_3", "relu5_3"), widths=dict(cfg.widths))
    model = ColorizationModel(encoder, decoder)
    ab = model(L)  # (B, 1, H, W) in [-1, 1] -> (B, 2, H, W) in [-1, 1]
    logits = guided_model(L, Hints(local, global_))  # local (B, 3, H, W), global_ (B, Q + 1)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from typing import NamedTuple

from torch import nn

from References import DECODERS, VGG16_TAP_CHANNELS, VGG16_TAPS


def conv_bn_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class TapAdapter(nn.Module):
    """Normalise one encoder tap and project it: (B, C, h, w) -> (B, width, h, w)."""

    def __init__(self, c_in: int, width: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(c_in)
        self.proj = conv_bn_relu(c_in, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


class GlobalContext(nn.Module):
    """Pooled deepest features -> a per-image vector added at every position: (B, C, h, w) -> (B, width, 1, 1)."""

    def __init__(self, c_in: int, hidden: int, width: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(c_in)
        self.mlp = nn.Sequential(nn.Linear(2 * c_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        pooled = torch.cat((x.mean(dim=(2, 3)), x.amax(dim=(2, 3))), dim=1)
        return self.mlp(pooled)[:, :, None, None]


class Hints(NamedTuple):
    """A batch of user hints at the working size (Hints.py builds them from points and reference photos).

    local: (B, 3, H, W) float: channels a * m, b * m (network units, ab / 110 in [-1, 1]) and the mask m in
           {0, 1}; all zero where no point was given.
    global_: (B, Q + 1) float: a distribution over the Q ab bins (sums to 1) and a final "given" flag in {0, 1};
           all zero when no reference was given.
    """

    local: torch.Tensor
    global_: torch.Tensor

    def given(self) -> torch.Tensor:
        """(B,) bool: whether each image has a point or a reference."""
        return (self.local[:, 2].amax(dim=(1, 2)) > 0) | (self.global_[:, -1] > 0)


def pooled_points(local: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The hint map (B, 3, H, W) (a*m, b*m, m) average-pooled to ``size`` (H, W multiples of it) -> (B, 4, h, w):
    each cell's mean hinted ab (0 where none), whether it holds a hint, and the hinted share of it."""
    k = (local.shape[-2] // size[0], local.shape[-1] // size[1])
    pooled = F.avg_pool2d(local, k) if k != (1, 1) else local
    m = pooled[:, 2:3]
    return torch.cat((pooled[:, :2] / m.clamp_min(1e-6), (m > 0).to(m.dtype), m), dim=1)


class HintBranch(nn.Module):
    """Local hints pooled to one decoder scale -> features added to that scale's skip: (B, 3, H, W) -> (B, width, h, w).

    Each cell sees the mean hinted ab inside it, whether it holds a hint, and the hinted fraction. No bias
    anywhere and a zero last layer: no hint gives exactly 0, and training starts from the unguided model.
    With ``features`` the branch also sees the skip's image features (so a point's colour can follow an
    object's edges); its output is then multiplied by "this image has points", which keeps an image without
    points exactly at the unguided model's colours.
    """

    def __init__(self, width: int, hidden: int = 48, features: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, hidden, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, width, 1, bias=False))
        nn.init.zeros_(self.net[-1].weight)
        self.see = nn.Conv2d(width, hidden, 1, bias=False) if features else None

    def forward(self, local: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.net[0](pooled_points(local, skip.shape[-2:]))
        if self.see is None:
            return self.net[2:](self.net[1](x))
        x = self.net[2:](F.relu(x + self.see(skip)))
        return x * (local[:, 2:3].amax(dim=(2, 3), keepdim=True) > 0).to(x.dtype)


class GlobalHint(nn.Module):
    """A global hint (B, Q + 1) -> (a vector added to the fusion vector (B, width, 1, 1), a logit shift (B, Q, 1, 1)).

    The shift is ``gain * flag * log(p + 1e-3)``: the reference's colours made likelier everywhere, by a learned
    amount that starts at 0; the vector lets the decoder use the distribution in subtler ways.
    """

    def __init__(self, bins: int, width: int, hidden: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(bins + 1, hidden, bias=False), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, width, bias=False))
        nn.init.zeros_(self.mlp[-1].weight)
        self.gain = nn.Parameter(torch.zeros(1))

    def forward(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flag = g[:, -1:]
        shift = self.gain * flag * torch.log(g[:, :-1] + 1e-3)
        return self.mlp(g)[:, :, None, None], shift[:, :, None, None]


class ResBlock(nn.Module):
    """x -> relu(x + BN(conv3(relu(BN(conv3(x)))))), shape-preserving (B, width, h, w).

    The last BatchNorm starts at zero scale, so a new block starts as the identity (on the
    non-negative input it gets) and a warm start from a plain U-Net keeps that network's output.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(width, width, 3), nn.Conv2d(width, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width))
        nn.init.zeros_(self.body[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class UpBlock(nn.Module):
    """Upsample to the skip's size, concatenate, fuse (1x1) and refine (3x3 conv, or a ResBlock when ``residual``)."""

    def __init__(self, c_deep: int, c_skip: int, width: int, residual: bool = False) -> None:
        super().__init__()
        self.fuse = conv_bn_relu(c_deep + c_skip, width, 1)
        self.refine = ResBlock(width) if residual else conv_bn_relu(width, width, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(self.fuse(torch.cat((x, skip), dim=1)))


class Decoder(nn.Module):
    """Encoder taps (shallowest first) -> ab (regression) or bin logits (classification).

    ``out_channels`` = 2 for regression (tanh output, upsampled to ``out_size``) or
    the number of ab bins for classification (raw logits at the shallowest tap's scale).
    ``block``: "unet" (3x3 refinement) or "resunet" (residual refinement, see ResBlock).
    """

    def __init__(self, taps: tuple[str, ...], widths: dict[str, int], global_width: int = 256,
                 out_channels: int = 2, block: str = "unet", guided: bool = False,
                 hint_features: bool = False) -> None:
        super().__init__()
        if block not in DECODERS:
            raise ValueError(f"unknown decoder {block!r}; choose from {DECODERS}")
        if guided and out_channels == 2:
            raise ValueError("a guided decoder needs the classification loss (its global hint is over the ab bins)")
        self.taps = tuple(sorted(taps, key=VGG16_TAPS.get))
        self.out_channels = out_channels
        self.adapters = nn.ModuleList(TapAdapter(VGG16_TAP_CHANNELS[t], widths[t]) for t in self.taps)
        deep = self.taps[-1]
        self.context = GlobalContext(VGG16_TAP_CHANNELS[deep], global_width, widths[deep])
        self.bottom = conv_bn_relu(widths[deep], widths[deep], 3)
        ups = []
        for i in range(len(self.taps) - 2, -1, -1):
            # the shallowest block also sees L itself, which sharpens colour edges
            extra = 1 if i == 0 else 0
            ups.append(UpBlock(widths[self.taps[i + 1]], widths[self.taps[i]] + extra, widths[self.taps[i]],
                               residual=block == "resunet"))
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv2d(widths[self.taps[0]], out_channels, 3, padding=1)
        self.guided = guided
        self.frozen_base = False  # TrainingSetup.freeze_base: only the hint layers train, BatchNorm keeps its statistics
        if guided:
            self.hint_branches = nn.ModuleList(HintBranch(widths[t], 64 if hint_features else 48, hint_features)
                                               for t in self.taps)
            self.global_hint = GlobalHint(out_channels, widths[deep])

    def train(self, mode: bool = True) -> "Decoder":
        super().train(mode)
        if self.frozen_base:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, feats: list[torch.Tensor], L: torch.Tensor, hints: Hints | None = None) -> torch.Tensor:
        """feats: the encoder's taps; L (B, 1, H, W) in [-1, 1]; hints (guided decoders only) -> logits or ab."""
        skips = [adapter(f) for adapter, f in zip(self.adapters, feats)]
        context, shift = self.context(feats[-1]), None
        if hints is not None:
            if not self.guided:
                raise ValueError("this model takes no hints (it was trained without them)")
            local = hints.local.to(skips[0].dtype)
            skips = [s + branch(local, s) for s, branch in zip(skips, self.hint_branches)]
            vector, shift = self.global_hint(hints.global_.to(context.dtype))
            context = context + vector
        x = self.bottom(skips[-1] + context)
        for block, skip in zip(self.ups, reversed(skips[:-1])):
            if block is self.ups[-1]:
                skip = torch.cat((skip, F.interpolate(L, size=skip.shape[-2:], mode="area")), dim=1)
            x = block(x, skip)
        out = self.head(x)
        if shift is not None:
            out = out + shift.to(out.dtype)
        if self.out_channels != 2:
            return out  # classification logits, (B, Q, h, w)
        out = torch.tanh(out)
        return F.interpolate(out, size=L.shape[-2:], mode="bilinear", align_corners=False)


class DecoderEnsemble(nn.Module):
    """Several trained classification decoders on the same encoder taps, as one decoder.

    Their colour distributions are combined as a normalised geometric mean (a product of
    experts): the mean of the members' log-probabilities, (B, Q, h, w). Those are valid logits:
    the annealed mean's softmax renormalises them, so decoding is unchanged. The geometric mean
    keeps colours that both members favour sharp, where an arithmetic mean would grey them.
    """

    def __init__(self, members: list[Decoder]) -> None:
        super().__init__()
        if len(members) < 2 or any(m.out_channels == 2 for m in members):
            raise ValueError("an ensemble needs at least two classification decoders")
        self.members = nn.ModuleList(members)
        self.taps, self.out_channels = members[0].taps, members[0].out_channels
        self.guided = all(m.guided for m in members)
        if any(m.guided for m in members) and not self.guided:
            raise ValueError("an ensemble's members must all take hints, or none")

    def forward(self, feats: list[torch.Tensor], L: torch.Tensor, hints: Hints | None = None) -> torch.Tensor:
        logp = [F.log_softmax(m(feats, L, hints).float(), dim=1) for m in self.members]
        return torch.stack(logp).mean(dim=0)


class ColorizationModel(nn.Module):
    """Frozen encoder + trainable decoder. ``forward(L, hints=None)`` returns the prediction and nothing else.

    L: (B, 1, H, W) in [-1, 1]; hints: a ``Hints`` at L's size (guided decoders only; None = automatic
    colour). Returns ab (B, 2, H, W) in [-1, 1] for regression,
    or logits (B, Q, ~H/s, ~W/s) for classification (s = stride of the shallowest tap).
    """

    def __init__(self, encoder: nn.Module, decoder: Decoder | DecoderEnsemble) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, L: torch.Tensor, hints: Hints | None = None) -> torch.Tensor:
        return self.decoder(self.encoder(L), L, hints)
