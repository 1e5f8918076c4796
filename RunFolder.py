"""The training run folder: metrics log, loss curve, sample grids and the cached file listing.

Owns what a run writes besides checkpoints, all atomically, and only on the main process
(``RunFolder(path, write=False)`` on other ranks turns every write into a no-op):
  * ``metrics.jsonl``: one JSON line per epoch;
  * ``loss.png``: train and validation loss per epoch (and a GAN run's D loss, G's adversarial term and
    Wasserstein estimate beside it);
  * ``samples/epoch_NNN.png``: grey | prediction | truth on fixed validation images;
  * ``files.json``: the training and validation file lists, made once and reused on resume.
A resumed run keeps one record per epoch its checkpoint has finished (``resume_log``), and a run
removes the temporary files a killed run of this folder left behind (``remove_stale_temps``).

Usage:
    run = RunFolder(Path("runs/my_run"), write=dist.is_main)
    run.append_metrics({"epoch": 0, "train_loss": 1.2, "val_loss": 1.1})
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from FullResolution import recombine_L
from Pictures import hstack, vstack, write_image
from ModelIO import atomic_write, autocast, decode_prediction, disk_full_as_error
from References import ModelConfig

# atomic_write's temporary names (".<target>.<8 random characters>.tmp[.suffix]") for the files a run
# writes: a killed run can leave one (a checkpoint's is as large as the checkpoint), nothing else matches.
STALE_TEMP = re.compile(r"\.(last\.pt|best\.pt|metrics\.jsonl|loss\.png|files\.json|epoch_\d{3,}\.png)"
                        r"\.[a-z0-9_]{8}\.tmp(\.png)?")


class RunFolder:
    """One training run's folder (created on first write)."""

    def __init__(self, path: Path, write: bool = True) -> None:
        self.path = Path(path)
        self.write = write
        self.metrics_path = self.path / "metrics.jsonl"
        self.files_path = self.path / "files.json"
        self.log: list[dict] = []

    def load_log(self) -> list[dict]:
        """Read an existing metrics.jsonl; returns the records. A last line cut short (a run killed while an
        older version appended to it) is ignored; a damaged line before it is an error naming the line."""
        self.log = []
        if self.metrics_path.exists():
            lines = self.metrics_path.read_text().splitlines()
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    self.log.append(json.loads(line))
                except json.JSONDecodeError:
                    if n < len(lines):
                        raise ValueError(f"{self.metrics_path}: line {n} is not a JSON record") from None
        return self.log

    def resume_log(self, next_epoch: int) -> list[dict]:
        """The log of a run resumed at ``next_epoch``: one record for each epoch before it, the last written.

        A run killed after logging an epoch but before its checkpoint redoes that epoch; its record (or
        an older duplicate) would otherwise appear twice. metrics.jsonl and loss.png are rewritten to match.
        """
        by_epoch = {r["epoch"]: r for r in self.load_log() if isinstance(r, dict) and "epoch" in r}
        kept = [by_epoch[e] for e in sorted(by_epoch) if e < next_epoch]
        changed = kept != self.log
        self.log = kept
        if changed:
            self._write_log()
        return self.log

    def append_metrics(self, record: dict) -> None:
        """Add one epoch's record, rewrite metrics.jsonl and redraw loss.png."""
        self.log.append(record)
        self._write_log()

    def _write_log(self) -> None:
        if not self.write:
            return
        text = "".join(json.dumps(r) + "\n" for r in self.log)
        with disk_full_as_error(self.metrics_path):
            atomic_write(self.metrics_path, lambda tmp: Path(tmp).write_text(text))
        if self.log:
            plot_curve(self.log, self.path / "loss.png")
        else:
            (self.path / "loss.png").unlink(missing_ok=True)

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temporary files of this folder's writes (see ``STALE_TEMP``) that a killed run left; returns them.

        Call before this run writes anything; only names matching our own pattern, in this folder and samples/.
        """
        if not self.write:
            return []
        stale = [f for d in (self.path, self.path / "samples") if d.is_dir() for f in d.iterdir()
                 if f.is_file() and STALE_TEMP.fullmatch(f.name)]
        for f in stale:
            f.unlink(missing_ok=True)
        return stale

    def save_listing(self, listing: dict[str, list[str]]) -> None:
        """Cache the file lists so a resume (or a later rank) does not list a million files again."""
        if self.write:
            text = json.dumps(listing)
            with disk_full_as_error(self.files_path):
                atomic_write(self.files_path, lambda tmp: Path(tmp).write_text(text))

    def load_listing(self) -> dict[str, list[str]] | None:
        """The cached file lists, or None if this run has none yet."""
        return json.loads(self.files_path.read_text()) if self.files_path.exists() else None

    def save_samples(self, epoch: int, grid: np.ndarray) -> None:
        if self.write:
            path = self.path / "samples" / f"epoch_{epoch:03d}.png"
            with disk_full_as_error(path):
                write_image(path, grid)


@torch.no_grad()
def sample_grid(model: torch.nn.Module, batch: dict, cfg: ModelConfig, bins: torch.Tensor | None,
                device: torch.device) -> np.ndarray:
    """Rows of grey | prediction | truth for a fixed validation batch (L, ab in [-1, 1]); uint8 RGB."""
    model.eval()
    L, ab = batch["L"].to(device), batch["ab"].to(device)
    with autocast(device):
        pred = model(L)
    ab_pred = decode_prediction(pred, cfg, bins).cpu().numpy()
    L_lab, ab = (L[:, 0] * 50.0 + 50.0).cpu().numpy(), ab.cpu().numpy()
    rows = [hstack([recombine_L(L_lab[i], a) for a in (None, ab_pred[i], ab[i])]) for i in range(len(L_lab))]
    return vstack(rows)


def plot_curve(log: list[dict], path: Path) -> None:
    """Train/val loss per epoch as a PNG (matplotlib, imported here: only training needs it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gan = [k for k in ("d_loss", "g_adv", "wasserstein") if any(k in r for r in log)]
    fig, axes = plt.subplots(1, 2 if gan else 1, figsize=(11 if gan else 6, 4), squeeze=False)
    epochs = [r["epoch"] for r in log]
    ax = axes[0, 0]
    ax.plot(epochs, [r["train_loss"] for r in log], "o-", label="train")
    ax.plot(epochs, [r["val_loss"] for r in log], "o-", label="validation")
    ax.set(xlabel="epoch", ylabel="loss", title="colorizer loss" + (" (per-pixel)" if gan else ""))
    if gan:  # the adversarial side: D's loss, G's adversarial term, the Wasserstein estimate (WGAN-GP)
        names = {"d_loss": "D loss", "g_adv": "G adversarial term", "wasserstein": "Wasserstein estimate"}
        for k in gan:
            mine = [(r["epoch"], r[k]) for r in log if k in r]
            axes[0, 1].plot(*zip(*mine), "o-", label=names[k])
        axes[0, 1].set(xlabel="epoch", title="adversarial losses")
    for a in axes[0]:
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    try:
        with disk_full_as_error(path):
            atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
