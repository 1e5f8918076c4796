"""Colourising images at their original resolution, from an ONNX export (ONNX Runtime) or a .pt checkpoint (torch).

Owns the one path from pixels to pixels, shared by evaluation, the web app and the command line:
  decoded image (uint8/uint16) -> ``FullResolution.working_L`` (L at the working size) ->
  the model (ONNX Runtime for .onnx, torch for .pt) -> ab in [-1, 1] at low resolution (with colour points:
  each point's remaining error spread around it, ``PointSpread.follow_points``) ->
  ``FullResolution.recombine_image`` (ab upsampled onto the image's own L in strips, chroma
  fitted into the sRGB gamut, L kept exactly) -> uint8 RGB.
Files and folders are Folders.py's; picture helpers (grids, atomic writing) are Pictures.py's. numpy, OpenCV
and ONNX Runtime only: torch is imported only to run a .pt checkpoint (the [train] install).

A guided model (``Colorizer.guided``) also takes each photo's ``Hints.Guidance`` (colour points and a
reference photo's colours), turned into its hint inputs at the working size by ``Colorizer.hint_inputs``,
and every classification model returns its per-pixel uncertainty (``ab_for(..., entropy=True)``;
``confidence_image`` is that map at an output's size) and, through ``distribution``, the colour distribution
itself (the web page's suggested colours, Suggestions.py).

Usage:
    from Hints import Guidance, Point, hex_to_ab
    colorizer = Colorizer.from_checkpoint("weights/colorizer.onnx")
    rgb = colorizer.colorize([img], guidance=[Guidance(points=(Point(120, 45, hex_to_ab("#a83a2c")),))])[0]
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from FullResolution import recombine_image, working_L
from Hints import Guidance, local_map, no_hints_error, reference_hint
from Pictures import as_pixels
from PointSpread import follow_points, grid_lightness
from References import ModelConfig

# predict(L (B, 1, S, S), temperature, hints (B, 3, S, S) or None, global_hint (B, Q + 1) or None), all float32
# -> (ab (B, 2, h, w) in [-1, 1], entropy (B, 1, h, w) in [0, 1] or None for a model without one); with
# probs=True a third item, the colour distribution (B, Q, h, w) (ValueError for a model without one)
Predictor = Callable[..., "tuple[np.ndarray, np.ndarray | None]"]


def onnx_predictor(path: Path, device: str, temperature: float | None,
                   threads: int = 0) -> tuple[Predictor, ModelConfig, np.ndarray | None]:
    """An ONNX Runtime session for an ``Export.export_onnx`` file: (predict, its config, its ab bins (Q, 2) or None).

    The annealed-mean temperature is part of the graph: asking for another one is an error.
    ``threads`` > 0 caps ONNX Runtime's threads (one of several worker processes); 0 = one per core.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # ONNX Runtime raises its own exception types for unreadable files
        raise ValueError(f"{path}: not a readable ONNX model ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if "image_size" not in meta:
        raise ValueError(f"{path}: not an ONNX export of this colourizer (no image_size metadata)")
    cfg = ModelConfig(image_size=int(meta["image_size"]), loss=meta.get("loss", "classification"),
                      temperature=float(meta.get("temperature", ModelConfig().temperature)),
                      guided=meta.get("guided", "0") == "1")
    bins = np.array(json.loads(meta["ab_bins"]), np.float32).reshape(-1, 2) if meta.get("ab_bins") else None
    outputs = [o.name for o in session.get_outputs()]
    has_probs = "probs" in outputs
    outputs = [o for o in outputs if o != "probs"]  # asked for only when wanted: (B, Q, h, w) is large

    def check(t: float | None) -> None:
        if t is not None and abs(t - cfg.temperature) > 1e-9:
            raise ValueError(f"{path.name}: the temperature is fixed at {cfg.temperature:g} in an ONNX export; "
                             "export again from the .pt checkpoint to change it")

    def predict(L: np.ndarray, t: float | None, hints: np.ndarray | None = None,
                global_hint: np.ndarray | None = None, probs: bool = False) -> tuple:
        check(t)
        if probs and not has_probs:
            raise ValueError(f"{path.name}: this export has no colour distribution output (\"probs\"); export it "
                             "again with this version (--mode export) for suggested colours")
        feed = {"L": np.ascontiguousarray(L, np.float32)}
        if cfg.guided:
            n, s = len(L), L.shape[-1]
            feed["hints"] = np.zeros((n, 3, s, s), np.float32) if hints is None else np.ascontiguousarray(hints, np.float32)
            feed["global_hint"] = (np.zeros((n, len(bins) + 1), np.float32) if global_hint is None
                                   else np.ascontiguousarray(global_hint, np.float32))
        elif hints is not None or global_hint is not None:
            raise no_hints_error(path.name)
        out = session.run(outputs + ["probs"] if probs else outputs, feed)
        return (out[0], out[1], out[2]) if probs else (out[0], (out[1] if len(out) > 1 else None))
    check(temperature)
    return predict, cfg, bins


@dataclass
class Colorizer:
    """A loaded model ready to colourise: its prediction function, config and device ("cpu", "cuda:0")."""

    predict: Predictor
    cfg: ModelConfig
    device: str = "cpu"
    name: str = "model"
    model: object | None = None  # the torch model for a .pt checkpoint (None for ONNX)
    bins: np.ndarray | None = None  # (Q, 2) Lab ab of the classes (classification models)
    obey_points: bool = True  # spread each colour point's remaining error (PointSpread); False: the network alone

    @property
    def guided(self) -> bool:
        """Whether the model takes colour points and reference photos."""
        return self.cfg.guided

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: object = "cpu", temperature: float | None = None,
                        threads: int = 0) -> "Colorizer":
        """Open an .onnx export (ONNX Runtime) or a .pt checkpoint (torch, the [train] install); ``device`` is a
        torch.device or its name; ``temperature`` is the default for calls; ``threads`` caps ONNX Runtime's."""
        path, device = Path(path), str(device)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model not found")
        if path.suffix.lower() == ".onnx":
            predict, cfg, bins = onnx_predictor(path, device, temperature, threads)
            model = None
        else:
            try:
                from ModelIO import torch_predictor
            except ImportError as e:
                if e.name not in ("torch", "torchvision"):
                    raise
                raise ValueError(f"{path}: a .pt checkpoint needs torch: pip install 'colorizer[train]' (or run "
                                 "the .onnx export, weights/colorizer.onnx)") from None
            predict, cfg, model, bins = torch_predictor(path, device)

        def with_default(L: np.ndarray, t: float | None = None, hints: np.ndarray | None = None,
                         global_hint: np.ndarray | None = None, probs: bool = False) -> tuple:
            return predict(L, temperature if t is None else t, hints, global_hint, probs=probs)
        return cls(with_default, cfg, device, path.name, model, bins)

    def predict_ab(self, L: np.ndarray, temperature: float | None = None, hints: np.ndarray | None = None,
                   global_hint: np.ndarray | None = None) -> np.ndarray:
        """L (B, 1, S, S) float32 in [-1, 1] at the working size (and a guided model's hint inputs, see
        DecoderLayers.Hints) -> ab (B, 2, h, w) float32 in [-1, 1]."""
        return self.predict(L, temperature, hints, global_hint)[0]

    def reference_hint(self, image: np.ndarray, name: str = "reference") -> np.ndarray:
        """A decoded reference photo -> the global hint (Q + 1,) this model takes; HintError for a grey photo."""
        if not self.guided or self.bins is None:
            raise no_hints_error(self.name)
        return reference_hint(image, self.bins, self.cfg.image_size, name)

    def hint_inputs(self, images: list[np.ndarray], guidance: Sequence[Guidance | None] | None
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Each image's guidance -> the model's (hints (B, 3, S, S), global_hint (B, Q + 1)), or (None, None)
        when no image has any. Raises HintError when the model takes none."""
        if not guidance or not any(guidance):
            return None, None
        if not self.guided or self.bins is None:
            raise no_hints_error(self.name)
        s = self.cfg.image_size
        local = np.zeros((len(images), 3, s, s), np.float32)
        glob = np.zeros((len(images), len(self.bins) + 1), np.float32)
        for i, (im, g) in enumerate(zip(images, guidance)):
            if g:
                local[i] = local_map(g.points, im.shape[0], im.shape[1], s)
                if g.reference is not None:
                    glob[i] = g.reference
        return local, glob

    def ab_for(self, images: list[np.ndarray], temperature: float | None = None,
               guidance: Sequence[Guidance | None] | None = None, entropy: bool = False):
        """Decoded images (uint8/uint16, any sizes) -> their ab (B, 2, h, w) in [-1, 1], one forward pass.

        ``guidance``: one ``Hints.Guidance`` (or None) per image, for a guided model. With ``entropy``, returns
        (ab, entropy (B, 1, h, w) in [0, 1]: the normalised entropy of the colour distribution, or None).
        """
        L = self.network_L(images)
        ab, ent = self.predict(L, temperature, *self.hint_inputs(images, guidance))
        if self.obey_points and guidance:
            ab = self._follow(ab, L, images, guidance)
        return (ab, ent) if entropy else ab

    @staticmethod
    def _follow(ab: np.ndarray, L: np.ndarray, images: list[np.ndarray],
                guidance: Sequence[Guidance | None]) -> np.ndarray:
        """Each image's points' remaining error spread on its ab (PointSpread.follow_points) over the network's own
        input L (B, 1, S, S), area-averaged to ab's grid."""
        ab = np.array(ab, np.float32)  # a copy: the predictor's buffers are not ours to change
        for i, (im, g) in enumerate(zip(images, guidance)):
            if g and g.points:
                grid = grid_lightness(L[i, 0], ab.shape[-2:])
                ab[i] = follow_points(ab[i], grid, g.points, im.shape[0], im.shape[1])
        return ab

    def distribution(self, images: list[np.ndarray], guidance: Sequence[Guidance | None] | None = None) -> np.ndarray:
        """Decoded images -> the network's colour distribution (B, Q, h, w) in [0, 1] over ``bins`` (softmax at
        temperature 1, given each image's hints), one forward pass. ValueError for a model without one."""
        if self.bins is None:
            raise ValueError(f"{self.name}: a regression model has no colour distribution")
        return self.predict(self.network_L(images), None, *self.hint_inputs(images, guidance), probs=True)[2]

    def network_L(self, images: list[np.ndarray]) -> np.ndarray:
        """Decoded images (any sizes) -> the network's input L (B, 1, S, S) float32 in [-1, 1] at the working size."""
        return np.concatenate([working_L(im, self.cfg.image_size) for im in images])

    def colorize(self, images: list[np.ndarray], temperature: float | None = None,
                 guidance: Sequence[Guidance | None] | None = None) -> list[np.ndarray]:
        """Images (H_i, W_i[, 3]) as uint8/uint16 pixels, or float in [0, 1] -> colourised uint8 RGB (H_i, W_i, 3).

        Colour inputs are reduced to their lightness. All images share one forward pass at the
        working size; recombination runs in strips, so memory grows only with the outputs.
        ``guidance`` gives a guided model each image's colour points and reference (see ``ab_for``).
        """
        images = [as_pixels(im) for im in images]
        ab = self.ab_for(images, temperature, guidance)
        return [recombine_image(im, ab_i) for im, ab_i in zip(images, ab)]


def confidence_image(entropy: np.ndarray, height: int, width: int) -> np.ndarray:
    """A model's normalised entropy (1, h, w) or (h, w) in [0, 1] -> uint8 (height, width): bright where the model
    is unsure of the colour (where a colour point would help most), dark where it is sure. Resized as uint8,
    so a large output costs one byte per pixel."""
    small = np.clip(np.asarray(entropy, np.float32).reshape(entropy.shape[-2:]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)






































