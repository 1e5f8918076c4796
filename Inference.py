"""Colourising images at their original resolution, from an ONNX export (ONNX Runtime) or a .pt checkpoint (torch).

Owns the one path from pixels to pixels, shared by evaluation, the web app and the command line:
  decoded image (uint8/uint16) -> ``FullResolution.working_L`` (L at the working size) ->
  the model (ONNX Runtime for .onnx, torch for .pt) -> ab in [-1, 1] at low resolution (with colour points:
  each point's remaining error spread around it, ``PointSpread.follow_points``) ->
  ``FullResolution.recombine_image`` (ab upsampled onto the image's own L in strips, chroma
  fitted into the sRGB gamut, L kept exactly) -> uint8 RGB.
Also owns colourising files and folders (bounded memory: images are decoded a few at a time,
up to a pixel budget), output naming, and atomic image writing. numpy, OpenCV and ONNX Runtime
only: torch is imported only to run a .pt checkpoint (the [train] install).

A guided model (``Colorizer.guided``) also takes each photo's ``Hints.Guidance`` (colour points and a
reference photo's colours), turned into its hint inputs at the working size by ``Colorizer.hint_inputs``,
and every classification model returns its per-pixel uncertainty (``ab_for(..., entropy=True)``;
``confidence_image`` is that map at an output's size).

Usage:
    colorizer = Colorizer.from_checkpoint("weights/colorizer.onnx")
    report = colorize_paths(colorizer, find_images("old_photos/"), Path("old_photos"), Path("results"))
    rgb = colorizer.colorize([img], guidance=[Guidance(points=(Point(120, 45, hex_to_ab("#a83a2c")),))])[0]
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import json

import cv2
import numpy as np
from tqdm.auto import tqdm

from FullResolution import lab_of, recombine_image, working_L
from Hints import Guidance, HintError, Point, check_points, local_map, no_hints_error, read_hints, reference_hint
from ImageIO import DiskFullError, ImageReadError, as_rgb, atomic_write, load_image, to_float
from PointSpread import follow_points, grid_lightness
from References import ModelConfig

BATCH_PIXELS = 24_000_000  # decoded pixels held at once in folder mode (beside one output)
# predict(L (B, 1, S, S), temperature, hints (B, 3, S, S) or None, global_hint (B, Q + 1) or None), all float32
# -> (ab (B, 2, h, w) in [-1, 1], entropy (B, 1, h, w) in [0, 1] or None for a model without one)
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

    def check(t: float | None) -> None:
        if t is not None and abs(t - cfg.temperature) > 1e-9:
            raise ValueError(f"{path.name}: the temperature is fixed at {cfg.temperature:g} in an ONNX export; "
                             "export again from the .pt checkpoint to change it")

    def predict(L: np.ndarray, t: float | None, hints: np.ndarray | None = None,
                global_hint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        check(t)
        feed = {"L": np.ascontiguousarray(L, np.float32)}
        if cfg.guided:
            n, s = len(L), L.shape[-1]
            feed["hints"] = np.zeros((n, 3, s, s), np.float32) if hints is None else np.ascontiguousarray(hints, np.float32)
            feed["global_hint"] = (np.zeros((n, len(bins) + 1), np.float32) if global_hint is None
                                   else np.ascontiguousarray(global_hint, np.float32))
        elif hints is not None or global_hint is not None:
            raise no_hints_error(path.name)
        out = session.run(outputs, feed)
        return out[0], (out[1] if len(out) > 1 else None)
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
                         global_hint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
            return predict(L, temperature if t is None else t, hints, global_hint)
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
        L = np.concatenate([working_L(im, self.cfg.image_size) for im in images])
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


def as_pixels(img: np.ndarray) -> np.ndarray:
    """uint8/uint16 pixels as they are; float images in [0, 1] as uint16 (keeps their precision)."""
    if img.dtype in (np.uint8, np.uint16):
        return img
    return (np.clip(img, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Decoded pixels (uint8/uint16, grey or RGB) as uint8 RGB (H, W, 3)."""
    img = as_rgb(img)
    return img if img.dtype == np.uint8 else (img.astype(np.float32) * (255 / 65535) + 0.5).astype(np.uint8)


def is_colour(img: np.ndarray, threshold: float = 3.0) -> bool:
    """True when decoded pixels have real colour (mean Lab chroma above ``threshold``)."""
    if img.ndim == 2:
        return False
    lab = lab_of(to_float(img[::4, ::4]))
    return float(np.sqrt(lab[1] ** 2 + lab[2] ** 2).mean()) > threshold


def grey_of(img: np.ndarray) -> np.ndarray:
    """The Lab-L greyscale version of decoded pixels, as uint8 RGB (a = b = 0)."""
    return recombine_image(as_pixels(img), None)


def fit_height(image: np.ndarray, height: int) -> np.ndarray:
    """uint8 (H, W, 3) resized to (height, W * height / H, 3), aspect kept (area filter)."""
    if image.shape[0] == height:
        return image
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def hstack(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Side by side on white, each uint8 (H, W_i, 3) scaled to the tallest height."""
    h = max(im.shape[0] for im in images)
    parts = []
    for im in images:
        parts += [fit_height(im, h), np.full((h, gap, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def vstack(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Rows (H_i, W_i, 3) uint8 stacked on white, left-aligned."""
    w = max(r.shape[1] for r in rows)
    parts = []
    for r in rows:
        pad = np.full((r.shape[0], w - r.shape[1], 3), 255, np.uint8)
        parts += [np.concatenate((r, pad), axis=1), np.full((gap, w, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=0)


def _encode_params(suffix: str, quality: int) -> list[int]:
    return [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix.lower() in (".jpg", ".jpeg") else []


def encode_image(image: np.ndarray, suffix: str, quality: int = 95, bgr: bool = False) -> bytes:
    """Encode uint8 RGB (H, W, 3) (BGR with ``bgr``: no copy) as the format of ``suffix`` (.png, .jpg, .webp);
    ValueError if it cannot."""
    ok, buf = cv2.imencode(suffix.lower(), image if bgr else cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           _encode_params(suffix, quality))
    if not ok:
        raise ValueError(f"could not encode image as {suffix}")
    return buf.tobytes()


def write_image(path: Path, image: np.ndarray, quality: int = 95, bgr: bool = False) -> None:
    """Write uint8 RGB (H, W, 3) (or BGR, OpenCV's order, with ``bgr``: no copy) atomically; format from the
    suffix. Encoded in memory first, so a full disk is reported as such (ImageIO.DiskFullError), not as a
    failure to encode."""
    data = encode_image(image, path.suffix, quality, bgr)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)


def load_batches(files: list[Path], batch_size: int, max_pixels: int | None = None,
                 pixel_budget: int = BATCH_PIXELS) -> Iterator[tuple[list[tuple[Path, np.ndarray]], list[tuple[Path, str]]]]:
    """Decode ``files`` a few at a time: yields (readable (file, pixels), unreadable (file, reason)).

    A batch holds at most ``batch_size`` files and, beyond its first, ``pixel_budget`` pixels, so a
    folder of scans never sits in memory at once. Each unreadable file is reported once, here, on one
    line naming it, and the run carries on.
    """
    loaded, failed, pixels = [], [], 0
    for f in files:
        try:
            img = load_image(f, max_pixels=max_pixels)
        except ImageReadError as e:
            failed.append((f, str(e)))
            tqdm.write(f"error: {e}", file=sys.stderr)
            continue
        if loaded and (len(loaded) >= batch_size or pixels + img.shape[0] * img.shape[1] > pixel_budget):
            yield loaded, failed
            loaded, failed, pixels = [], [], 0
        loaded.append((f, img))
        pixels += img.shape[0] * img.shape[1]
    if loaded or failed:
        yield loaded, failed


@dataclass
class Report:
    """Outcome of a folder run: written outputs and (file, reason) failures."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # outputs already there (--skip-existing)

    def add(self, other: "Report") -> None:
        self.written += other.written
        self.failed += other.failed
        self.skipped += other.skipped


def plan_outputs(files: list[Path], input_root: Path, output_dir: Path, suffix: str = ".png",
                 taken: set[Path] | None = None, inputs: set[Path] | None = None) -> list[Path]:
    """One output path per input: same sub-folder and stem, new suffix; never an input's own path, never
    the same output for two inputs (``a.jpg`` and ``a.png`` -> ``a.png`` and ``a_png.png``, then ``a_2.png``...).

    ``taken`` (updated) and ``inputs`` (resolved paths) may be shared between calls, so that outputs
    planned for several inputs of one run never overwrite each other or any of the run's inputs.
    """
    inputs = {f.resolve() for f in files} | (inputs or set())
    root = input_root if input_root.is_dir() else input_root.parent
    taken = set() if taken is None else taken
    outs = []
    for f in files:
        rel = f.relative_to(root) if f.is_relative_to(root) else Path(f.name)
        folder = output_dir / rel.parent
        names = [rel.stem + suffix, f"{rel.stem}_{f.suffix.lstrip('.').lower()}{suffix}",
                 f"{rel.stem}_colorized{suffix}"]
        out = next((folder / n for n in names if (folder / n).resolve() not in inputs | taken), None)
        k = 2
        while out is None or out.resolve() in inputs or out.resolve() in taken:
            out, k = folder / f"{rel.stem}_{k}{suffix}", k + 1
        taken.add(out.resolve())
        outs.append(out)
    return outs


def colorize_paths(colorizer: Colorizer, files: list[Path], input_root: Path | None = None,
                   output_dir: Path | None = None, *, batch_size: int = 8, side_by_side: bool = False,
                   suffix: str = ".png", progress: bool = True, max_pixels: int | None = None,
                   output_file: Path | None = None, outputs: list[Path] | None = None,
                   hints: Sequence[Path | None] | None = None, references: Sequence[Path | None] | None = None,
                   confidence: bool = False) -> Report:
    """Colourise files into ``output_dir`` (same stems), into ``outputs`` (one per file, planned by the
    caller), or one file into ``output_file``.

    ``hints`` and ``references`` (one per file, or None) give a guided model each photo's hint file
    (Hints.read_hints; its points are checked against the decoded size) and reference photo. Unreadable files,
    and files whose hints or reference cannot be used, are reported (one line each, naming the file) and
    skipped; the rest are still written. With ``side_by_side``, also writes ``<stem>_compare.png``: grey |
    colourised | original (the original only when it is in colour); with ``confidence``, ``<stem>.confidence.png``
    (``confidence_image``, at the output's size).
    """
    report = Report()
    outs = _output_paths(files, input_root, output_dir, suffix, output_file, outputs)
    sources = {f: (h, r) for f, h, r in zip(files, hints or [None] * len(files), references or [None] * len(files))}
    refs: dict[Path, np.ndarray | Exception] = {}  # each reference decoded once (errors too) for the whole run
    with tqdm(total=len(files), desc="colourising", unit="img", disable=not progress) as bar:
        for batch, failed in load_batches(files, batch_size, max_pixels):
            guidance: list[Guidance | None] = []
            kept = []
            for f, img in batch:
                try:
                    guidance.append(guidance_for(colorizer, img, *sources[f], refs, max_pixels))
                    kept.append((f, img))
                except (HintError, ImageReadError) as e:  # this photo's hints or reference: it alone fails
                    failed.append((f, str(e)))
                    tqdm.write(f"error: {e}", file=sys.stderr)
            batch[:] = kept
            report.failed += failed
            bar.update(len(failed))
            if not batch:
                continue
            ab, entropy = colorizer.ab_for([img for _, img in batch], guidance=guidance if any(guidance) else None,
                                           entropy=True)
            if confidence and entropy is None:
                raise no_confidence_error(colorizer.name)
            for i, (f, img) in enumerate(batch):
                _write_outputs(f, img, ab[i], entropy[i] if confidence else None, outs[f], side_by_side, report)
                batch[i] = (f, None)  # drop the decoded pixels as soon as they are written
                bar.update(1)
    return report


def _output_paths(files: list[Path], input_root: Path | None, output_dir: Path | None, suffix: str,
                  output_file: Path | None, outputs: list[Path] | None) -> dict[Path, Path]:
    """Each file's output, as ``colorize_paths`` describes."""
    if output_file is not None:
        if len(files) != 1:
            raise ValueError(f"--output {output_file} names a file, but there are {len(files)} inputs")
        if output_file.resolve() == files[0].resolve():
            raise ValueError(f"--output {output_file} is the input itself; inputs are never overwritten")
        return {files[0]: output_file}
    if outputs is not None:
        return dict(zip(files, outputs))
    return dict(zip(files, plan_outputs(files, input_root, output_dir, suffix)))


def guidance_for(colorizer: Colorizer, image: np.ndarray, hints: Path | None, reference: Path | None,
                 refs: dict[Path, np.ndarray | Exception], max_pixels: int | None = None) -> Guidance | None:
    """A decoded photo's Guidance from its hint file and reference photo (either may be None), or None without
    either. ``refs`` caches each reference's global hint (or its error) by path. Raises HintError (bad hints, a
    grey reference) or ImageReadError (a reference that is not an image), naming the file."""
    points: list[Point] = []
    if hints is not None:
        points = read_hints(hints)
        check_points(points, image.shape[1], image.shape[0], str(hints))
    glob = None
    if reference is not None:
        if reference not in refs:
            try:
                refs[reference] = colorizer.reference_hint(load_image(reference, max_pixels=max_pixels), str(reference))
            except (HintError, ImageReadError) as e:
                refs[reference] = e
        if isinstance(refs[reference], Exception):
            raise refs[reference]
        glob = refs[reference]
    return Guidance(tuple(points), glob) if points or glob is not None else None


def no_confidence_error(name: str) -> ValueError:
    """The error for --confidence with a model that gives no per-pixel uncertainty."""
    return ValueError(f"{name}: this model gives no confidence map (a regression model, or an ONNX file exported "
                      "before the map existed); use the shipped weights/colorizer.onnx or export again")


def _write_outputs(src: Path, img: np.ndarray, ab: np.ndarray, entropy: np.ndarray | None, out: Path,
                   side_by_side: bool, report: Report) -> None:
    """One photo's output (and its comparison and confidence map); a write that fails is reported, a full disk
    stops the run."""
    result = recombine_image(img, ab, bgr=True)  # BGR: written without a copy
    try:
        write_image(out, result, bgr=True)
        if side_by_side:
            panels = [grey_of(img), result] + ([to_rgb8(img)[..., ::-1]] if is_colour(img) else [])
            write_image(out.with_name(out.stem + "_compare.png"), hstack(panels), bgr=True)
        if entropy is not None:
            write_image(confidence_path(out), confidence_image(entropy, img.shape[0], img.shape[1]), bgr=True)
        report.written.append(out)
    except DiskFullError:
        raise  # every later file would fail the same way
    except (OSError, ValueError) as e:
        report.failed.append((src, f"{out}: cannot write ({e})"))
        tqdm.write(f"error: {src}: cannot write {out} ({e})", file=sys.stderr)


def confidence_path(output: Path) -> Path:
    """Where --confidence writes an output's confidence map: ``<stem>.confidence.png`` beside it."""
    return output.with_name(output.stem + ".confidence.png")
