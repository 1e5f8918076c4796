"""Images in, Lab tensors out: decoding, colour conversion and the training dataset.

Owns every step between a file on disk and the network's input/target:
  * ``load_rgb``: ``ImageIO.load_image`` (decoding, limits, EXIF; re-exported here, torch-free) as
    float32 RGB in [0, 1];
  * ``rgb_to_lab`` / ``lab_to_rgb`` / ``fit_to_gamut``: sRGB (D65) <-> CIE Lab on tensors, thin
    wrappers of ``ColourSpace`` (the one implementation, shared with the numpy inference path);
  * ``normalize_lab`` / ``denormalize_lab``: Lab <-> network units, L and ab in [-1, 1];
  * ``ColorizationDataset``: a recursive image folder yielding ``{"L": (1,S,S), "ab": (2,S,S)}``.

Usage:
    ds = ColorizationDataset(find_images("photos/"), image_size=128, train=True)
    batch = next(iter(make_loader(ds, batch_size=16, shuffle=True, workers=2)))
"""
from __future__ import annotations

import warnings
from pathlib import Path
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

import ColourSpace
from ImageIO import ImageReadError, as_rgb, find_images, load_image, to_float
from References import LAB

# find_images and ImageReadError are ImageIO's, re-exported: training code reads its data through LoadData
__all__ = ["ImageReadError", "find_images", "load_rgb", "rgb_to_lab", "lab_to_rgb", "lab_to_rgb_unclipped",
           "fit_to_gamut", "normalize_lab", "denormalize_lab", "to_tensor", "resize_to_square",
           "ColorizationDataset", "EpochSampler", "collate_skip", "make_loader"]


def load_rgb(path: str | Path | BinaryIO, name: str | None = None, max_pixels: int | None = None,
             formats: tuple[str, ...] | None = None) -> np.ndarray:
    """``load_image`` as float32 RGB (H, W, 3) in [0, 1] (for training-size photos; large images should
    stay in ``load_image``'s compact form)."""
    return to_float(as_rgb(load_image(path, name, max_pixels, formats)))


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB -> CIE Lab (D65), channels first (``ColourSpace.rgb_to_lab`` on the tensor, as float32).

    rgb: (..., 3, H, W) float in [0, 1]. Returns (..., 3, H, W): L in [0, 100],
    a and b roughly in [-110, 110].
    """
    return ColourSpace.rgb_to_lab(rgb.float())


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) -> sRGB, channels first, clipped to [0, 1].

    lab: (..., 3, H, W) with L in [0, 100]. Returns (..., 3, H, W) float in [0, 1].
    Out-of-gamut colours are clipped per channel; use ``fit_to_gamut`` first to
    keep L exact.
    """
    return ColourSpace.lab_to_rgb(lab.float())


def lab_to_rgb_unclipped(lab: torch.Tensor) -> torch.Tensor:
    """Like ``lab_to_rgb`` but without the final clip (values may leave [0, 1])."""
    return ColourSpace.lab_to_rgb(lab.float(), clip=False)


def fit_to_gamut(lab: torch.Tensor, steps: int = ColourSpace.GAMUT_STEPS) -> torch.Tensor:
    """Shrink each pixel's chroma just enough that it is a valid sRGB colour (``ColourSpace.fit_to_gamut``).

    lab: (..., 3, H, W). L and hue are kept; only |ab| is scaled down (bisection on
    the scale, only over pixels that are out of gamut). Clipping RGB instead would
    shift L, and the brightness of a photo is the one thing we must not change.
    """
    return ColourSpace.fit_to_gamut(lab, steps=steps)


def normalize_lab(lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lab (..., 3, H, W) -> (L, ab) in network units: (..., 1, H, W) and (..., 2, H, W), both in [-1, 1]."""
    L = (lab[..., :1, :, :] - LAB.l_center) / LAB.l_scale
    ab = (lab[..., 1:, :, :] / LAB.ab_scale).clamp(-1.0, 1.0)
    return L, ab


def denormalize_lab(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Inverse of ``normalize_lab``: L (..., 1, H, W) and ab (..., 2, H, W) in [-1, 1] -> Lab (..., 3, H, W)."""
    return torch.cat((L * LAB.l_scale + LAB.l_center, ab * LAB.ab_scale), dim=-3)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float array in [0, 1] -> (3, H, W) float tensor."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()


def resize_to_square(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 3, H, W) -> (..., 3, size, size), antialiased bilinear, whole image (aspect not kept).

    This is the one resize that validation, evaluation and inference share, so the
    network always sees whole images exactly the same way.
    """
    squeeze = rgb.dim() == 3
    x = rgb[None] if squeeze else rgb
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x[0] if squeeze else x


class ColorizationDataset(Dataset):
    """A list of image files as (L, ab) pairs at a fixed square size.

    Each item is ``{"L": (1,S,S), "ab": (2,S,S), "index": int}`` with both in [-1, 1],
    or ``None`` for an unreadable file (a warning names it; ``collate_skip`` counts it).
    Training: RandomResizedCrop + horizontal flip, drawn from a generator seeded by
    (``seed``, ``epoch``, index), so an item is the same whichever process, worker or
    resumed run loads it. Set ``epoch`` before each epoch. Validation: the whole image resized.
    """

    def __init__(self, files: list[Path], image_size: int, train: bool,
                 crop_scale: tuple[float, float] = (0.5, 1.0), seed: int = 0) -> None:
        if not files:
            raise ValueError("ColorizationDataset: no image files given")
        self.files = list(files)
        self.image_size = image_size
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.augment = v2.Compose([
            v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
            v2.RandomHorizontalFlip(),
        ])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict | None:
        path = self.files[index]
        try:
            rgb = to_tensor(load_rgb(path))
        except ImageReadError as e:
            warnings.warn(f"skipping {e}", stacklevel=2)
            return None
        if self.train:
            # torchvision's transforms draw from the global RNG; fork it so the draw depends on the item only.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
                rgb = self.augment(rgb).clamp(0, 1)
        else:
            rgb = resize_to_square(rgb, self.image_size)
        L, ab = normalize_lab(rgb_to_lab(rgb))
        return {"L": L, "ab": ab, "index": index}


class EpochSampler(Sampler[int]):
    """This process's share of one epoch: a permutation seeded by (seed, epoch), minus what is already done.

    ``set_epoch(epoch, skip)`` drops the first ``skip`` indices of the epoch's global order (the
    samples every process together has already trained on), then deals the rest round-robin to
    ``world_size`` processes, repeating a few from the start so every process gets as many
    (as DistributedSampler does). The order depends only on (seed, epoch), not on the number of
    processes, so a run saved by N processes resumes on M.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.rank, self.world_size, self.seed, self.shuffle = n, rank, world_size, seed, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, min(max(skip, 0), self.n)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        rest = self._order()[self.skip:]
        if not rest:
            return iter([])
        pad = -len(rest) % self.world_size
        rest += (rest * (pad // len(rest) + 1))[:pad]
        return iter(rest[self.rank::self.world_size])

    def __len__(self) -> int:
        left = self.n - self.skip
        return -(-left // self.world_size) if left else 0


def collate_skip(items: list[dict | None]) -> dict:
    """Stack the readable items of a batch; ``skipped`` counts the unreadable ones."""
    good = [it for it in items if it is not None]
    out: dict = {"skipped": len(items) - len(good)}
    if good:
        out["L"] = torch.stack([it["L"] for it in good])
        out["ab"] = torch.stack([it["ab"] for it in good])
        out["index"] = torch.tensor([it["index"] for it in good])
        for key in ("hints", "global_hint"):  # a guided run's simulated hints (HintSampling)
            if key in good[0]:
                out[key] = torch.stack([it[key] for it in good])
    return out


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, workers: int,
                pin_memory: bool = False, seed: int = 0, sampler: Sampler | None = None,
                persistent: bool = True) -> DataLoader:
    """A DataLoader with ``collate_skip``; seeded so that shuffles are repeatable.

    ``sampler`` (e.g. an EpochSampler) replaces ``shuffle``.
    """
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle if sampler is None else None, sampler=sampler,
                      num_workers=workers, collate_fn=collate_skip, pin_memory=pin_memory, generator=g,
                      persistent_workers=persistent and workers > 0, drop_last=False)
