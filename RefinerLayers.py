"""The hint refiner: a small U-Net after a guided decoder that makes its colours follow the user's hints.

Owns ``HintRefiner`` and ``RefinedDecoder``. A guided decoder's own hint layers (DecoderLayers.HintBranch,
GlobalHint) shift its colour distribution, but its annealed mean still greys a hinted colour and carries it only a
little way. The refiner looks, on the logits' grid (half the working size), at the lightness, the decoded colour
and its entropy, the colour points pooled to each of its scales and, at its coarsest scale, the reference photo's
colour distribution. It predicts for every cell a target colour t (ab) and a strength w >= 0, and adds
``-w * |bin - t|^2 / (2 s^2)`` to the logits (s: the bin spacing). That gathers the distribution around t as
firmly as w says, so decoding, the entropy map and the export stay as they are. Refining.py trains it with an L1
loss on the decoded colour, which teaches it how far a point's colour reaches in a photograph.

Without hints (no point and no reference) the shift is multiplied by 0, so an unhinted photo gets exactly the
unrefined model's colours.

Usage:
    decoder = RefinedDecoder(guided_decoder, HintRefiner(261, temperature=0.18, width=48, bins=ab_bins))
    logits = decoder(feats, L, Hints(local, global_))  # (B, Q, H/2, W/2), as the guided decoder's
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from DecoderLayers import Hints, pooled_points
from References import LAB


def conv_relu(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with ReLUs (no normalisation: the inputs are in [-1, 1] and the batches are mixed)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


class HintRefiner(nn.Module):
    """(logits (B, Q, h, w), L (B, 1, H, W) in [-1, 1], Hints at H x W) -> refined logits (B, Q, h, w).

    ``bins`` (Q, 2), Lab units, and the temperature its input colour is decoded at are buffers, saved with it.
    ``width`` is the first scale's channels (then 2x, 4x, 4x at 1/2, 1/4, 1/8 of the grid).
    """

    def __init__(self, n_bins: int, temperature: float, width: int = 32, grid: float = 10.0,
                 bins: torch.Tensor | None = None) -> None:
        super().__init__()
        # the ab bins (Q, 2), Lab units: given here, or filled from a checkpoint by load_state_dict
        self.register_buffer("bins", torch.zeros(n_bins, 2) if bins is None else bins.detach().float().clone())
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.inv_two_s2 = 0.5 / (grid / LAB.ab_scale) ** 2  # 1 / (2 s^2), s = the bin spacing in network units
        w = (width, 2 * width, 4 * width, 4 * width)
        self.down = nn.ModuleList([conv_relu(1 + 2 + 1 + 4, w[0])] +
                                  [conv_relu(w[i - 1] + 4, w[i]) for i in range(1, len(w))])
        self.reference = nn.Sequential(nn.Linear(n_bins + 1, 128), nn.ReLU(inplace=True), nn.Linear(128, w[-1]))
        self.up = nn.ModuleList(conv_relu(w[i + 1] + w[i], w[i]) for i in range(len(w) - 2, -1, -1))
        self.head = nn.Conv2d(w[0], 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():  # starts as a near no-op: t = the decoded colour, w = softplus(-5) ~ 0.007
            self.head.bias.copy_(torch.tensor([0.0, 0.0, -5.0]))

    def forward(self, logits: torch.Tensor, L: torch.Tensor, hints: Hints) -> torch.Tensor:
        logits = logits.float()
        local, glob = hints.local.float(), hints.global_.float()
        c = self.bins / LAB.ab_scale  # (Q, 2) network units
        ca, cb = c[:, 0][None, :, None, None], c[:, 1][None, :, None, None]
        p = torch.softmax(logits / self.temperature, dim=1)
        # the annealed mean, as decoding gives it (sums, not einsum: autocast would do a matmul in bf16)
        base = torch.cat(((p * ca).sum(1, keepdim=True), (p * cb).sum(1, keepdim=True)), dim=1)
        logp = torch.log_softmax(logits, dim=1)
        entropy = -(logp.exp() * logp).sum(dim=1, keepdim=True) / math.log(len(c))
        size = logits.shape[-2:]
        x = torch.cat((F.interpolate(L.float(), size=size, mode="area"), base, entropy, pooled_points(local, size)), 1)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.avg_pool2d(x, 2)
                x = torch.cat((x, pooled_points(local, x.shape[-2:])), dim=1)
            x = block(x)
            skips.append(x)
        x = x + self.reference(glob)[:, :, None, None]
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat((F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip), dim=1))
        out = self.head(x).float()
        target = base + out[:, :2]
        given = hints.given()[:, None, None, None]
        d2 = (target[:, :1] - ca) ** 2 + (target[:, 1:] - cb) ** 2  # (B, Q, h, w), float32 even under autocast
        shift = F.softplus(out[:, 2:3]) * self.inv_two_s2 * d2
        # where, not a product with the flag: an image without hints keeps its logits exactly even if the head overflows
        return logits - torch.where(given, shift, torch.zeros_like(shift))


class RefinedDecoder(nn.Module):
    """A guided decoder (or ensemble) followed by a HintRefiner when hints are given; behaves as the decoder."""

    def __init__(self, base: nn.Module, refiner: HintRefiner) -> None:
        super().__init__()
        if not getattr(base, "guided", False) or base.out_channels == 2:
            raise ValueError("a hint refiner follows a guided classification decoder")
        self.base, self.refiner = base, refiner
        self.taps, self.out_channels, self.guided = base.taps, base.out_channels, True

    def forward(self, feats: list[torch.Tensor], L: torch.Tensor, hints: Hints | None = None) -> torch.Tensor:
        logits = self.base(feats, L, hints)
        if hints is None:
            return logits
        # Skip the refiner when no image of the batch has a hint (its shift would be 0 everywhere), so automatic
        # colour costs what it did before. An export records both branches (torch.cond -> an ONNX If); eager
        # code branches in Python (torch.cond would compile the refiner with dynamo on first use).
        given = hints.given().sum() > 0
        if getattr(torch.compiler, "is_exporting", lambda: False)():  # torch >= 2.5; older ones do not export
            return torch.cond(given, self._refine, self._keep, (logits.float(), L, hints.local, hints.global_))
        return self._refine(logits.float(), L, hints.local, hints.global_) if bool(given) else logits.float()

    def _refine(self, logits: torch.Tensor, L: torch.Tensor, local: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        return self.refiner(logits, L, Hints(local, glob))

    @staticmethod
    def _keep(logits: torch.Tensor, L: torch.Tensor, local: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        return logits.clone()
