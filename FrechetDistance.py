"""Distribution scores for evaluate: a Fréchet distance over VGG16 features, and FID / IS with Inception weights.

Owns
  * ``frechet_distance``: the Fréchet (2-Wasserstein) distance between two Gaussians,
    |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the arithmetic of FID;
  * ``FeatureStats``: running mean and covariance of feature vectors (memory d x d, whatever the count);
  * ``VGGFrechet``: that distance over the frozen ImageNet VGG16's relu5_3 features, average-pooled
    (512-d), of each photo resized to 224 x 224. It is reported as "FD-VGG16": it is NOT the FID of
    the literature (other network, other layer) and only compares methods scored on the same photos.
    With fewer photos than 512 the covariance is singular and the figure is biased upwards; compare
    methods on one folder, never across folders of different sizes;
  * ``InceptionScores``: the real FID (2048-d pool features) and Inception Score, through torchmetrics
    and torch-fidelity, from a local copy of the ``pt_inception-2015-12-05`` weights (--fid-weights);
    those libraries download them otherwise, which this tool never does behind a user's back.

Usage:
    fd = VGGFrechet(load_fd_backbone(None, Path("weights/colorizer.pt")))
    fd.add("original", rgb); fd.add("ours", pred)      # uint8 RGB (H, W, 3)
    fd.distance("ours", "original")
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from References import IMAGENET_MEAN, IMAGENET_STD, VGG16_TAPS


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): means (d,), covariances (d, d).

    The matrix square root comes from scipy (as in pytorch-fid); a singular product gets a small
    ridge, and the imaginary part that rounding leaves is dropped.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"frechet_distance: shapes differ ({mu1.shape}, {sigma1.shape}) vs ({mu2.shape}, {sigma2.shape})")
    with warnings.catch_warnings():  # fewer photos than dimensions make the product singular: expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            ridge = np.eye(len(mu1)) * 1e-6
            covmean = linalg.sqrtm((sigma1 + ridge) @ (sigma2 + ridge))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class FeatureStats:
    """Running sums of feature vectors (d,), for their mean and (unbiased) covariance."""

    def __init__(self) -> None:
        self.n, self.total, self.outer = 0, None, None

    def add(self, features: np.ndarray) -> None:
        """``features``: (N, d) or (d,)."""
        f = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if self.total is None:
            self.total, self.outer = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
        self.n += len(f)
        self.total += f.sum(axis=0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError("a Fréchet distance needs at least 2 images per set")
        mu = self.total / self.n
        return mu, (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def load_fd_backbone(backbone: str | None, checkpoint: Path) -> nn.Sequential:
    """The frozen VGG16 up to relu5_3: from ``backbone`` (a VGG16 weights file) when given, else from the
    encoder stored in ``checkpoint`` (the shipped model carries the ImageNet VGG16, so every user of a
    release scores with the same weights and nothing is downloaded)."""
    from EncoderLayers import features_state_dict, load_vgg16_features, vgg16_features
    from ModelIO import read_checkpoint

    last = VGG16_TAPS["relu5_3"] + 1
    if backbone:
        return load_vgg16_features(backbone)[:last].eval().requires_grad_(False)
    features = vgg16_features()[:last]
    features.load_state_dict(features_state_dict(read_checkpoint(checkpoint)["encoder"], checkpoint))
    return features.eval().requires_grad_(False)


class VGGFrechet:
    """Per-method FeatureStats of relu5_3 VGG16 features; ``distance(a, b)`` is the FD-VGG16 between two methods."""

    SIZE = 224

    def __init__(self, features: nn.Sequential, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.net = features.to(self.device)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self.reset()

    def reset(self) -> None:
        """Forget every photo (before the next folder); the network stays loaded."""
        self.stats: dict[str, FeatureStats] = {}

    @torch.no_grad()
    def features(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> (512,) average-pooled relu5_3 features of the photo at 224 x 224."""
        x = torch.from_numpy(np.array(rgb)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(self.SIZE, self.SIZE), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std).mean(dim=(2, 3))[0].cpu().numpy()

    def add(self, method: str, rgb: np.ndarray) -> None:
        self.stats.setdefault(method, FeatureStats()).add(self.features(rgb))

    def distance(self, method: str, reference: str) -> float:
        return frechet_distance(*self.stats[method].mean_cov(), *self.stats[reference].mean_cov())

    def scores(self, method: str, reference: str) -> dict[str, float]:
        """The summary-table columns of ``method``: {"fd_vgg16": its distance from ``reference``}."""
        return {"fd_vgg16": self.distance(method, reference)}

    def reference_scores(self, reference: str) -> dict[str, float]:
        """Columns of the reference set itself: none (its distance from itself is 0)."""
        return {}


class InceptionScores:
    """FID (against the originals) and Inception Score per method, by torch-fidelity from a local weights file.

    ``weights``: torch-fidelity's ``pt_inception-2015-12-05-6726825d.pth`` (the network every FID table
    uses). It is first read with ``weights_only=True``, so a file that holds code is refused before
    torch-fidelity (which unpickles it fully) touches it. The network, its resizing to 299 x 299 and
    the FID / IS arithmetic are all torch-fidelity's; this class only sorts the photos by method.
    Holds 2048 + 1008 floats per photo (IS needs every photo's class probabilities).
    """

    def __init__(self, weights: str | Path) -> None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: --fid-weights file not found (torch-fidelity's "
                                    "pt_inception-2015-12-05-6726825d.pth)")
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: not a plain Inception-v3 state dict ({e.__class__.__name__})") from None
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as e:
            raise ValueError(f"FID needs torch-fidelity ({e}); pip install -r requirements.txt") from None
        try:
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path=str(path))
        except RuntimeError as e:
            raise ValueError(f"{path}: not torch-fidelity's Inception-v3 layout ({str(e).splitlines()[0]})") from None
        self.reset()

    def reset(self) -> None:
        """Forget every photo (before the next folder); the network stays loaded."""
        self.pool: dict[str, list[torch.Tensor]] = {}
        self.logits: dict[str, list[torch.Tensor]] = {}

    @torch.no_grad()
    def add(self, method: str, rgb: np.ndarray) -> None:
        """One uint8 RGB photo (H, W, 3) of ``method``."""
        x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None]
        pool, logits = self.net(x)
        self.pool.setdefault(method, []).append(pool.reshape(1, -1).double())
        self.logits.setdefault(method, []).append(logits.reshape(1, -1))

    def scores(self, method: str, reference: str) -> dict[str, float]:
        """{"fid": ``method`` against ``reference``, "is": the Inception Score of ``method`` (mean over 10 splits)}."""
        from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

        stats = [fid_features_to_statistics(torch.cat(self.pool[m])) for m in (method, reference)]
        return {"fid": fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"],
                **self.reference_scores(method)}

    def reference_scores(self, reference: str) -> dict[str, float]:
        """{"is": the Inception Score of ``reference`` itself}, for scale."""
        from torch_fidelity.metric_isc import isc_features_to_metric

        logits = torch.cat(self.logits[reference])
        return {"is": isc_features_to_metric(logits, splits=min(10, len(logits)))["inception_score_mean"]}
