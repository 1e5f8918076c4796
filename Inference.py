"""Model assembly, checkpoints, and colourising images at their original resolution.

Owns the one path from a network prediction to pixels, shared by training samples,
evaluation and inference:
  L at working size -> model -> ``decode_prediction`` (ab in [-1, 1]) ->
  ``recombine`` (ab upsampled bilinearly onto the original-resolution L, chroma fitted
  into the sRGB gamut so L is kept exactly) -> RGB.
Also owns checkpoint save/load (atomic, ``weights_only=True``, self-contained so that
inference never needs a backbone download) and atomic image writing.

Usage:
    colorizer = Colorizer.from_checkpoint("weights/colorizer.pt", torch.device("cpu"))
    report = colorize_paths(colorizer, find_images("old_photos/"), Path("old_photos"), Path("results"))
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from DecoderLayers import ColorizationModel, Decoder
from EncoderLayers import FrozenVGG16Encoder, load_vgg16_features
from LoadData import (ImageReadError, denormalize_lab, fit_to_gamut, lab_to_rgb, load_rgb, normalize_lab,
                      resize_to_square, rgb_to_lab, to_tensor)
from References import CHECKPOINT_FORMAT, ROOT, VERSION, ModelConfig
import Quantization


# ----------------------------------------------------------------------------- model

def build_model(cfg: ModelConfig, backbone: str | Path | None, n_bins: int | None = None) -> ColorizationModel:
    """Frozen VGG16 encoder (weights from ``backbone``, see EncoderLayers) + fresh decoder.

    A classification model has ``n_bins`` outputs (default: the bins of ``cfg.ab_grid``).
    """
    encoder = FrozenVGG16Encoder(load_vgg16_features(backbone), cfg.taps)
    out = 2
    if cfg.loss == "classification":
        out = n_bins or Quantization.num_bins(cfg.ab_grid)
    decoder = Decoder(cfg.taps, dict(cfg.widths), cfg.global_width, out_channels=out)
    return ColorizationModel(encoder, decoder)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The one mixed-precision context: bf16 (or fp16) autocast on CUDA, nothing on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype(device))


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16; fp32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def decode_prediction(pred: torch.Tensor, cfg: ModelConfig, bins: torch.Tensor | None = None,
                      temperature: float | None = None) -> torch.Tensor:
    """Model output -> ab in network units, (B, 2, h, w) in [-1, 1].

    Regression output is already ab. Classification logits (B, Q, h, w) are decoded
    with the annealed mean at ``temperature`` (default: the config's) over ``bins`` (Q, 2).
    """
    if cfg.loss != "classification":
        return pred.float()
    t = cfg.temperature if temperature is None else temperature
    return Quantization.annealed_mean(pred.float(), bins, t)


def recombine(L_full: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Original-resolution Lab L plus low-resolution ab -> RGB at the original resolution.

    L_full: (B, 1, H, W), Lab L in [0, 100]. ab: (B, 2, h, w) in network units [-1, 1].
    Returns RGB (B, 3, H, W) in [0, 1] whose Lab L equals L_full (chroma is reduced
    where needed to stay in gamut, never L).
    """
    ab = F.interpolate(ab.float(), size=L_full.shape[-2:], mode="bilinear", align_corners=False)
    lab = denormalize_lab((L_full - 50.0) / 50.0, ab)
    return lab_to_rgb(fit_to_gamut(lab))


# ----------------------------------------------------------------------------- checkpoints

def _to_builtin(value):
    """Dataclass/Path/tuple values -> plain lists/str so ``weights_only=True`` can load them.

    Paths inside the repository are stored relative to it, so a checkpoint names no
    folder of the machine it was made on.
    """
    if isinstance(value, (str, Path)) and str(value).startswith(str(ROOT) + os.sep):
        return str(Path(value).relative_to(ROOT))
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def model_config_from_dict(d: dict) -> ModelConfig:
    """Rebuild a ModelConfig saved by ``save_checkpoint`` (lists back to tuples)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    d = {k: v for k, v in d.items() if k in known}
    d["taps"] = tuple(d["taps"])
    d["widths"] = tuple((str(k), int(v)) for k, v in d["widths"])
    return ModelConfig(**d)


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs should look like any other file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_checkpoint(path: Path, model: ColorizationModel, cfg: ModelConfig, *, optimizer=None, scaler=None,
                    epoch: int = 0, best_metric: float = float("inf"), config: dict | None = None,
                    extras: dict | None = None, half: bool = False) -> None:
    """Write a self-contained checkpoint atomically.

    Holds encoder and decoder weights, optimizer and scaler state (None for a release
    file), epoch, best metric, the resolved config, the format version and ``extras``
    (e.g. the ab bins and their prior for a classification model). ``half`` stores
    the weights as float16 (release files: about half the size).
    """
    def weights(module: torch.nn.Module) -> dict:
        sd = module.state_dict()
        return {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in sd.items()}

    state = {
        "format": CHECKPOINT_FORMAT, "version": VERSION, "model_config": _to_builtin(cfg),
        "encoder": weights(model.encoder), "decoder": weights(model.decoder),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": int(epoch), "best_metric": float(best_metric),
        "config": _to_builtin(config or {}), "extras": extras or {},
    }
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, device: torch.device) -> tuple[ColorizationModel, dict]:
    """Load a checkpoint (``weights_only=True``) into a ready model on ``device``, in eval mode.

    Needs no backbone file or download: the encoder weights are in the checkpoint.
    Returns (model, the raw checkpoint dict, with "model_config" as a ModelConfig).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({e.__class__.__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a colorizer checkpoint of format {CHECKPOINT_FORMAT}")
    cfg = model_config_from_dict(ckpt["model_config"])
    bins = ckpt.get("extras", {}).get("ab_bins")
    model = build_model(cfg, "none", None if bins is None else len(bins))
    model.encoder.load_state_dict({k: v.float() for k, v in ckpt["encoder"].items()})
    model.decoder.load_state_dict({k: v.float() if v.is_floating_point() else v
                                   for k, v in ckpt["decoder"].items()})
    ckpt["model_config"] = cfg
    return model.to(device).eval(), ckpt


# ----------------------------------------------------------------------------- colourising

def is_colour(rgb: np.ndarray, threshold: float = 3.0) -> bool:
    """True when an RGB image (H, W, 3) in [0, 1] has real colour (mean Lab chroma above ``threshold``)."""
    lab = rgb_to_lab(to_tensor(rgb[::4, ::4]))
    return float(lab[1:].pow(2).sum(0).sqrt().mean()) > threshold


@dataclass
class Colorizer:
    """A loaded model ready to colourise: holds the model, its config, bins and device."""

    model: ColorizationModel
    cfg: ModelConfig
    device: torch.device
    bins: torch.Tensor | None = None
    temperature: float | None = None
    name: str = "model"

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device, temperature: float | None = None) -> "Colorizer":
        model, ckpt = load_checkpoint(path, device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        bins = ckpt["extras"].get("ab_bins")
        return cls(model, ckpt["model_config"], device, None if bins is None else bins.to(device),
                   temperature, Path(path).name)

    @torch.inference_mode()
    def predict_ab(self, L: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """L (B, 1, S, S) in [-1, 1] at the working size -> ab (B, 2, h, w) in [-1, 1].

        ``temperature`` overrides the colorizer's for this call (classification models only).
        """
        L = L.to(self.device)
        if self.device.type == "cuda":
            L = L.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            pred = self.model(L)
        t = self.temperature if temperature is None else temperature
        return decode_prediction(pred, self.cfg, self.bins, t)

    def colorize(self, images: list[np.ndarray], temperature: float | None = None) -> list[np.ndarray]:
        """RGB or grey-as-RGB images (H_i, W_i, 3) in [0, 1] -> colourised uint8 RGB at the same sizes.

        All images are resized to the working size, so any mix of sizes shares one batch.
        """
        rgbs = [to_tensor(im) for im in images]
        work = torch.stack([resize_to_square(t, self.cfg.image_size) for t in rgbs])
        L_work, _ = normalize_lab(rgb_to_lab(work))
        ab = self.predict_ab(L_work, temperature).cpu()
        out = []
        for rgb, ab_i in zip(rgbs, ab):
            L_full = rgb_to_lab(rgb)[None, :1]
            out.append(to_uint8(recombine(L_full, ab_i[None])[0]))
        return out


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    return (rgb.permute(1, 2, 0).clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


def grey_of(rgb: np.ndarray) -> np.ndarray:
    """The Lab-L greyscale version of an RGB image, as uint8 RGB (a = b = 0)."""
    lab = rgb_to_lab(to_tensor(rgb))
    return to_uint8(lab_to_rgb(torch.cat((lab[:1], torch.zeros_like(lab[1:])))))


def hstack(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Side by side on white, each uint8 (H, W_i, 3) scaled to the tallest height."""
    h = max(im.shape[0] for im in images)
    parts = []
    for im in images:
        if im.shape[0] != h:
            im = cv2.resize(im, (round(im.shape[1] * h / im.shape[0]), h), interpolation=cv2.INTER_AREA)
        parts += [im, np.full((h, gap, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def vstack(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Rows (H_i, W_i, 3) uint8 stacked on white, left-aligned."""
    w = max(r.shape[1] for r in rows)
    parts = []
    for r in rows:
        pad = np.full((r.shape[0], w - r.shape[1], 3), 255, np.uint8)
        parts += [np.concatenate((r, pad), axis=1), np.full((gap, w, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=0)


def encode_image(rgb: np.ndarray, suffix: str, quality: int = 95) -> bytes:
    """Encode uint8 RGB (H, W, 3) as the format of ``suffix`` (.png, .jpg, .webp); ValueError if it cannot."""
    suffix = suffix.lower()
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix in (".jpg", ".jpeg") else [])
    if not ok:
        raise ValueError(f"could not encode image as {suffix}")
    return buf.tobytes()


def write_image(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write uint8 RGB (H, W, 3) atomically; format from the suffix (.png, .jpg, .webp)."""
    data = encode_image(rgb, path.suffix, quality)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def load_batches(files: list[Path], batch_size: int) -> Iterator[tuple[list[tuple[Path, np.ndarray]], list[tuple[Path, str]]]]:
    """Decode ``files`` in chunks: yields (readable (file, RGB float in [0, 1]), unreadable (file, reason)).

    Each unreadable file is also reported on one line naming it, so folder runs carry on.
    """
    for start in range(0, len(files), batch_size):
        loaded, failed = [], []
        for f in files[start:start + batch_size]:
            try:
                loaded.append((f, load_rgb(f)))
            except ImageReadError as e:
                failed.append((f, str(e)))
                tqdm.write(f"error: {e}")
        yield loaded, failed


@dataclass
class Report:
    """Outcome of a folder run: written outputs and (file, reason) failures."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def plan_outputs(files: list[Path], input_root: Path, output_dir: Path, suffix: str = ".png") -> list[Path]:
    """One output path per input: same sub-folder and stem, new suffix; never an input's own path,
    never the same output for two inputs (``a.jpg`` and ``a.png`` -> ``a.png`` and ``a_png.png``)."""
    inputs = {f.resolve() for f in files}
    root = input_root if input_root.is_dir() else input_root.parent
    taken: set[Path] = set()
    outs = []
    for f in files:
        rel = f.relative_to(root) if f.is_relative_to(root) else Path(f.name)
        out = output_dir / rel.parent / (rel.stem + suffix)
        if out.resolve() in inputs or out.resolve() in taken:
            out = output_dir / rel.parent / f"{rel.stem}_{f.suffix.lstrip('.').lower()}{suffix}"
        if out.resolve() in inputs or out.resolve() in taken:
            out = output_dir / rel.parent / f"{rel.stem}_colorized{suffix}"
        taken.add(out.resolve())
        outs.append(out)
    return outs


def colorize_paths(colorizer: Colorizer, files: list[Path], input_root: Path, output_dir: Path, *,
                   batch_size: int = 8, side_by_side: bool = False, suffix: str = ".png",
                   progress: bool = True) -> Report:
    """Colourise files into ``output_dir`` (same stems), batching forward passes.

    Unreadable files are reported (one line each, naming the file) and skipped; the
    rest are still written. With ``side_by_side``, also writes ``<stem>_compare.png``:
    grey | colourised | original (the original only when it is in colour).
    """
    report = Report()
    outs = dict(zip(files, plan_outputs(files, input_root, output_dir, suffix)))
    bar = tqdm(total=len(files), desc="colourising", unit="img", disable=not progress)
    for batch, failed in load_batches(files, batch_size):
        report.failed += failed
        bar.update(len(failed))
        if not batch:
            continue
        results = colorizer.colorize([rgb for _, rgb in batch])
        for (f, rgb), result in zip(batch, results):
            out = outs[f]
            try:
                write_image(out, result)
                if side_by_side:
                    panels = [grey_of(rgb), result] + ([to_uint8(to_tensor(rgb))] if is_colour(rgb) else [])
                    write_image(out.with_name(out.stem + "_compare.png"), hstack(panels))
                report.written.append(out)
            except (OSError, ValueError) as e:
                report.failed.append((f, f"{out}: cannot write ({e})"))
                tqdm.write(f"error: {f}: cannot write {out} ({e})")
            bar.update(1)
    bar.close()
    return report
