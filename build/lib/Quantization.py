"""Quantised ab colour classes for the classification loss (Zhang, Isola & Efros 2016).

Owns the ab bins (grid cells of the ab plane that hold an sRGB colour at some L),
the soft encoding of ab targets over their nearest bins, the empirical bin prior and
the class-rebalancing weights derived from it, the rebalanced soft cross-entropy, and
the annealed-mean decoding from bin logits back to ab.

Usage:
    bins = ab_bins(10)                                    # (Q, 2) Lab ab; Q = 261 at grid 10
    prior = bin_prior(ab_batches, bins)                   # (Q,) sums to 1
    loss = classification_loss(logits, ab_target, bins, class_weights(prior))
    ab = annealed_mean(logits, bins, temperature=0.38)    # (B, 2, h, w) in [-1, 1]
"""
from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from References import LAB


@functools.lru_cache(maxsize=4)
def _bins_cached(grid: int) -> torch.Tensor:
    # Imported here so References <- LoadData <- Quantization stays one-way and cheap.
    from LoadData import lab_to_rgb_unclipped

    r = int(LAB.ab_scale // grid) * grid
    axis = torch.arange(-r, r + 1, grid, dtype=torch.float32)
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    ab = torch.stack((a.flatten(), b.flatten()), dim=1)  # (N, 2)
    # A cell is a class if any colour inside it is displayable at some lightness.
    offsets = torch.linspace(-grid / 2, grid / 2, 5)
    oa, ob = torch.meshgrid(offsets, offsets, indexing="ij")
    pts = ab[:, None, :] + torch.stack((oa.flatten(), ob.flatten()), dim=1)[None]  # (N, 25, 2)
    keep = torch.zeros(len(ab), dtype=torch.bool)
    for L in torch.linspace(1, 99, 50):
        lab = torch.cat((torch.full_like(pts[..., :1], float(L)), pts), dim=-1)  # (N, 25, 3)
        rgb = lab_to_rgb_unclipped(lab.permute(2, 0, 1))  # (3, N, 25)
        keep |= ((rgb >= 0) & (rgb <= 1)).all(dim=0).any(dim=1)
    return ab[keep]


def ab_bins(grid: int = 10) -> torch.Tensor:
    """Centres of the in-gamut ab grid cells, (Q, 2) in Lab ab units (multiples of ``grid``)."""
    return _bins_cached(grid).clone()


def num_bins(grid: int = 10) -> int:
    """Number of classes Q for a grid step (261 at grid 10; Zhang et al.'s empirical ImageNet hull has 313)."""
    return len(_bins_cached(grid))


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, k: int = 5, sigma: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets: each pixel's ``k`` nearest bins with Gaussian weights summing to 1.

    ab: (B, 2, h, w) in network units [-1, 1]; bins: (Q, 2) Lab units.
    Returns (indices (B, k, h, w) long, weights (B, k, h, w) float).
    """
    B, _, h, w = ab.shape
    pts = (ab.float() * LAB.ab_scale).permute(0, 2, 3, 1).reshape(-1, 2)
    d2 = torch.cdist(pts, bins.to(pts)).pow(2)  # (N, Q)
    d2k, idx = d2.topk(k, dim=1, largest=False)
    wts = torch.softmax(-d2k / (2 * sigma ** 2), dim=1)
    shape = lambda t: t.view(B, h, w, k).permute(0, 3, 1, 2)
    return shape(idx), shape(wts)


def bin_counts(ab_batches: Iterable[torch.Tensor], bins: torch.Tensor) -> torch.Tensor:
    """How many pixels of ab batches (B, 2, h, w) in [-1, 1] fall nearest each bin: (Q,) float64.

    Counts add up, so counts from the shards of a data set (one per process) sum to the whole's.
    """
    counts = torch.zeros(len(bins), dtype=torch.float64)
    for ab in ab_batches:
        pts = (ab.float() * LAB.ab_scale).permute(0, 2, 3, 1).reshape(-1, 2)
        nearest = torch.cdist(pts, bins.to(pts)).argmin(dim=1)
        counts += torch.bincount(nearest, minlength=len(bins)).double()
    return counts


def prior_from_counts(counts: torch.Tensor, bins: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Bin counts (Q,) -> probabilities smoothed with a Gaussian of ``sigma`` ab units over the bins; (Q,) sums to 1."""
    if counts.sum() == 0:
        raise ValueError("bin_prior: no pixels seen")
    p = counts.double() / counts.sum()
    kernel = torch.exp(-torch.cdist(bins.double(), bins.double()).pow(2) / (2 * sigma ** 2))
    p = kernel @ p
    return (p / p.sum()).float()


def bin_prior(ab_batches: Iterable[torch.Tensor], bins: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Empirical probability of each bin over an iterable of ab batches (B, 2, h, w) in [-1, 1],
    smoothed with a Gaussian of ``sigma`` ab units over the bins. Returns (Q,) summing to 1."""
    return prior_from_counts(bin_counts(ab_batches, bins), bins, sigma)


def class_weights(prior: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Rebalancing weights w ~ 1 / ((1 - lam) p + lam / Q), normalised so that E_p[w] = 1.

    Rare, saturated colours weigh more, so the network stops hedging towards grey.
    """
    w = 1.0 / ((1 - lam) * prior + lam / len(prior))
    return w / (prior * w).sum()


def classification_loss(logits: torch.Tensor, ab: torch.Tensor, bins: torch.Tensor,
                        weights: torch.Tensor) -> torch.Tensor:
    """Rebalanced soft cross-entropy.

    logits: (B, Q, h, w). ab: target (B, 2, H, W) in [-1, 1], area-downsampled to (h, w).
    weights: (Q,) from ``class_weights``; each pixel is weighted by its nearest bin's weight.
    """
    ab_small = F.adaptive_avg_pool2d(ab.float(), logits.shape[-2:])
    idx, wts = soft_encode(ab_small, bins)
    logp = F.log_softmax(logits.float(), dim=1)
    ce = -(wts * logp.gather(1, idx)).sum(dim=1)  # (B, h, w)
    pixel_w = weights.to(logits.device)[idx[:, 0]]
    return (pixel_w * ce).mean()


def annealed_mean(logits: torch.Tensor, bins: torch.Tensor, temperature: float) -> torch.Tensor:
    """Decode logits (B, Q, h, w) to ab (B, 2, h, w) in [-1, 1] with the annealed mean.

    temperature 1 is the plain mean (desaturated); -> 0 approaches the mode (vivid,
    but patchy). Zhang et al. use 0.38.
    """
    if bins is None:
        raise ValueError("a classification model needs its ab bins (missing from the checkpoint)")
    t = max(float(temperature), 1e-3)
    p = torch.softmax(logits.float() / t, dim=1)
    ab = torch.einsum("bqhw,qc->bchw", p, bins.to(p))
    return (ab / LAB.ab_scale).clamp(-1.0, 1.0)
