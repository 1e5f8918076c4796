"""Colourising photo files and folders with a loaded Colorizer, in bounded memory.

Owns the file side of ``python Engine.py --mode inference`` on photos: decoding a few files at a time up to a
pixel budget (``load_batches``: a folder of scans never sits in memory at once), naming outputs so that no
output overwrites an input or another output (``plan_outputs``), each photo's hint file and reference photo
(``guidance_for``), and writing each output, its comparison and its confidence map atomically
(``colorize_paths``). A file that cannot be read, or whose hints or reference cannot be used, is reported on one
line naming it and the rest are still written; ``Report`` counts them. Batch.py shares the work of a run out.

Usage:
    from ImageIO import find_images
    report = colorize_paths(colorizer, find_images("old_photos/"), Path("old_photos"), Path("results"))
"""
from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from FullResolution import recombine_image
from Hints import Guidance, HintError, Point, check_points, read_hints
from ImageIO import DiskFullError, ImageReadError, load_image
from Inference import Colorizer, confidence_image
from Pictures import grey_of, hstack, is_colour, to_rgb8, write_image

BATCH_PIXELS = 24_000_000  # decoded pixels held at once in folder mode (beside one output)


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

