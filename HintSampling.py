"""Simulated user hints for training a guided model (Zhang et al. 2017), drawn from each crop's own colours.

Owns ``sample_hints`` (one crop -> its local hint map and global hint, in the layout of DecoderLayers.Hints
and of Hints.local_map / Hints.ab_histogram at inference) and ``GuidedDataset``, which adds them to a
ColorizationDataset's items. Each draw is seeded by the item's own seed, so a resumed run sees the same hints.

The mix (TrainConfig.hint_*):
  * a share ``hint_none`` of crops gets no points; the others get N ~ Geometric(``hint_p``) >= 1 points;
  * a point is a square patch of 1..``hint_max_patch`` working pixels at a uniform position, coloured with
    the patch's mean ab (a user picks one colour for a small area);
  * the global hint is the crop's own ab histogram (``hint_global_self``), that of a random window of
    25-60 % of the crop (``hint_global_window``: a reference that is similar, not the same), or none.

Usage:
    ds = GuidedDataset(ColorizationDataset(files, 128, train=True), bins, tcfg)
    item = ds[0]  # {"L", "ab", "index", "hints": (3, S, S), "global_hint": (Q + 1,)}
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from Hints import ab_histogram
from References import LAB, TrainConfig

HINT_LAYERS = ("hint_branches.", "global_hint.")  # the decoder's hint layers, by parameter name


def histogram(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """ab (2, h, w) in network units -> (Q + 1,): the share of pixels nearest each bin (Lab units), then flag 1.
    The very function that turns a reference photo into the global hint at inference (Hints.ab_histogram)."""
    return torch.from_numpy(ab_histogram(ab.numpy() * np.float32(LAB.ab_scale), bins.numpy()))


def sample_hints(ab: torch.Tensor, bins: torch.Tensor, tcfg: TrainConfig,
                 g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One crop's ab (2, S, S) in [-1, 1] -> (local (3, S, S): a*m, b*m, m; global (Q + 1,), zero when absent)."""
    _, h, w = ab.shape
    local = torch.zeros(3, h, w)
    u = torch.rand(4, generator=g).tolist()
    if u[0] >= tcfg.hint_none:
        # Geometric(p) on {1, 2, ...} by inversion; capped so that a rare draw stays cheap
        n = min(1 + int(torch.log(torch.rand(1, generator=g)) / torch.log(torch.tensor(1 - tcfg.hint_p))), 200)
        sizes = torch.randint(1, tcfg.hint_max_patch + 1, (n,), generator=g).tolist()
        for s in sizes:
            y = int(torch.randint(0, h - s + 1, (1,), generator=g))
            x = int(torch.randint(0, w - s + 1, (1,), generator=g))
            colour = ab[:, y:y + s, x:x + s].mean(dim=(1, 2))
            local[:2, y:y + s, x:x + s] = colour[:, None, None]  # a later patch replaces an earlier one
            local[2, y:y + s, x:x + s] = 1.0
    glob = torch.zeros(len(bins) + 1)
    if u[1] < tcfg.hint_global_self:
        glob = histogram(ab, bins)
    elif u[1] < tcfg.hint_global_self + tcfg.hint_global_window:
        area = 0.25 + 0.35 * u[2]
        wh = max(2, round(h * area ** 0.5)), max(2, round(w * area ** 0.5))
        y = int(torch.randint(0, h - wh[0] + 1, (1,), generator=g))
        x = int(torch.randint(0, w - wh[1] + 1, (1,), generator=g))
        glob = histogram(ab[:, y:y + wh[0], x:x + wh[1]], bins)
    return local, glob


class GuidedDataset(Dataset):
    """A ColorizationDataset whose items also carry simulated hints ("hints", "global_hint")."""

    def __init__(self, base, bins: torch.Tensor, tcfg: TrainConfig) -> None:
        self.base, self.bins, self.tcfg = base, bins.float().cpu(), tcfg

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict | None:
        item = self.base[index]
        if item is None:
            return None
        g = torch.Generator()
        g.manual_seed((self.base.seed * 1_000_003 + self.base.epoch) * 10_000_019 + index + 7)
        item["hints"], item["global_hint"] = sample_hints(item["ab"], self.bins, self.tcfg, g)
        return item

    @property
    def epoch(self) -> int:  # the wrapped dataset's: its augmentation and these hints are seeded by it
        return self.base.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.base.epoch = value
