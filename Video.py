"""Colourising films: video files in, H.264 MP4 out, streamed frame by frame with colour kept steady.

Owns the per-frame pipeline between reading and writing (VideoFiles.py reads and writes the files):
  decoded frame (uint8 RGB) -> its motion from the frame before, on the small flow grid (Temporal.Motions;
  a batch's motions first, since they place its colour points) -> a batch through the network at the working
  size (Inference.Colorizer) -> ab resampled onto the flow grid -> Temporal.Stabiliser (carried along the same
  motion, reset at cuts) -> FullResolution.recombine_image (the frame's own L, untouched) -> the encoder.

Frames cross ffmpeg's pipes one at a time, so memory is bounded by the batch and one frame's
full-resolution buffers, whatever the film's length. The output is written through ImageIO.atomic_write (a
temporary file, renamed into place) and its frame count is checked before the rename: an interrupted run
leaves no half-written video.

A guided model also takes the user's colour points and a reference photo (``guidance``, ``reference``):
a point with ``frame`` N goes into frame N's model input and, tracked along the motion (FilmPoints.py), into
each later frame's until its object leaves the frame or is hidden, or the shot ends; a point given on a later
frame replaces the carried points it covers. A point without ``frame`` goes into every frame's input at its
place; a reference applies to every frame. The summary line counts the points applied and their frames.

Usage:
    colorizer = Colorizer.from_checkpoint("weights/colorizer.onnx")
    result = colorize_video(colorizer, Path("film.mp4"), Path("out/film.mp4"), smoothing=0.8)
    result = colorize_video(colorizer, src, dst, guidance=parse_hints(text, "film.json"), hints_name="film.json")
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from FilmPoints import FilmPoints, PointCounts
from FullResolution import recombine_image
from Hints import Guidance, HintError, Point, local_map, no_hints_error
from Folders import BATCH_PIXELS, Report, plan_outputs
from Inference import Colorizer
from ImageIO import atomic_write
from References import VIDEO_OUTPUT, VideoConfig
from Temporal import Motion, Motions, Stabiliser, flow_grid, luminance
from VideoFiles import VideoInfo, VideoReadError, VideoWriter, check_count, open_video


def batched(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    """Consecutive frames in lists of ``size`` (the last may be shorter)."""
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class FilmHints:
    """A film's colour points and reference -> each frame's ``Guidance`` (or None) and, for the stabiliser,
    where that frame's points lie on the flow grid. ``counts``: kept up to date (``FilmPoints``)."""

    def __init__(self, points: list[Point] | None, reference: np.ndarray | None, info: "VideoInfo",
                 working_size: int, counts: PointCounts | None = None) -> None:
        self.reference, self.info, self.size = reference, info, working_size
        self.grid = flow_grid((info.height, info.width))
        self.points = FilmPoints(points, info.width, info.height, self.grid, counts)

    def __call__(self, index: int, motion: Motion | None) -> Guidance | None:
        """Frame ``index``'s (0-based, in order) guidance: the points for every frame, the tracked points
        (``motion``: from the frame before, None for the first), the reference."""
        points = self.points(index, motion)
        return Guidance(points, self.reference) if points or self.reference is not None else None

    def given(self, guidance: Guidance | None) -> np.ndarray | None:
        """Where a frame's points lie, on the flow grid (h, w) in [0, 1], or None without points."""
        if guidance is None or not guidance.points:
            return None
        mask = local_map(guidance.points, self.info.height, self.info.width, self.size)[2]
        return cv2.resize(mask, (self.grid[1], self.grid[0]), interpolation=cv2.INTER_LINEAR)


def colorize_frames(colorizer: Colorizer, info: VideoInfo, frames: Iterator[np.ndarray], smoothing: float,
                    batch_size: int = 8, guidance: list[Point] | None = None, reference: np.ndarray | None = None,
                    counts: PointCounts | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, Stabiliser]]:
    """Frames of the video ``info`` describes (uint8 RGB (H, W, 3), in order) -> (input luma on the flow grid
    (h, w), colourised uint8 RGB (H, W, 3), the stabiliser), in order. ``smoothing`` 0 colourises each frame
    on its own; L is never changed. Batches: ``frames_per_batch``. A guided model's ``guidance`` (points in
    input pixels; ``frame`` N: from frame N on, tracked until it stops or the shot ends, ``FilmPoints``; None:
    every frame) and ``reference`` (a global hint (Q + 1,)) go into each frame's own model input; under a
    frame's points the stabiliser keeps the new prediction (the user's colour, not the carried estimate).
    ``counts``: the points applied and their frames, kept up to date."""
    grid = flow_grid((info.height, info.width))
    stab = Stabiliser(smoothing)
    hints = FilmHints(guidance, reference, info, colorizer.cfg.image_size, counts)
    # one flow per frame, shared by the points and the stabiliser; none when neither needs it
    motions = Motions() if smoothing > 0 or hints.points.tracking else None
    index = 0
    for batch in batched(frames, frames_per_batch(info, batch_size)):
        greys = [luminance(frame, grid) for frame in batch]
        moved = [motions(grey) if motions else None for grey in greys]  # before the forward pass: they place points
        given = [hints(index + i, m) for i, m in enumerate(moved)]
        ab = colorizer.ab_for(batch, guidance=given if any(given) else None)  # (B, 2, h, w) in [-1, 1]
        for frame, grey, a, g, m in zip(batch, greys, ab, given, moved):
            on_grid = np.stack([cv2.resize(c, (grid[1], grid[0]), interpolation=cv2.INTER_LINEAR) for c in a])
            yield grey, recombine_image(frame, stab(grey, on_grid, hints.given(g), m)), stab
        index += len(batch)
        batch.clear()


def frames_per_batch(info: VideoInfo, batch_size: int) -> int:
    """``batch_size``, fewer for large frames, so a batch holds at most Folders.BATCH_PIXELS pixels."""
    return max(1, min(batch_size, BATCH_PIXELS // max(1, info.width * info.height)))


@dataclass
class VideoResult:
    """One colourised video: frames written, wall seconds, frames at which a new shot began, colour points
    applied and the frames that had any."""

    frames: int
    seconds: float
    cuts: list[int] = field(default_factory=list)
    points: int = 0
    point_frames: int = 0


def summary(src: Path, r: VideoResult, dst: Path, had_points: bool) -> str:
    """A film's line once written: frames, time, the cuts, and (for a film given points) the points applied."""
    return (f"{src.name}: {r.frames} frames in {r.seconds:.1f} s ({r.frames / max(r.seconds, 1e-9):.1f} fps)"
            + (f", new shot at frame {', '.join(map(str, r.cuts))}" if r.cuts else "")
            + (f", {r.points} colour point(s) applied on {r.point_frames} frame(s)" if had_points else "")
            + f" -> {dst}")


def film_reference(colorizer: Colorizer, reference: np.ndarray | None, name: str) -> np.ndarray | None:
    """A film's reference: a global hint (Q + 1,) as it is, or a decoded photo (H, W[, 3]) reduced to one."""
    if reference is None or reference.ndim == 1:
        return reference
    return colorizer.reference_hint(reference, name)


def check_film_points(points: list[Point] | None, info: VideoInfo, name: str, frames: int | None = None) -> None:
    """HintError (one line naming ``name`` and the entry) for a point outside the frame, or with ``frames``
    (the decoded count) a ``frame`` beyond the film's end."""
    if points:
        from Hints import check_points  # the --hints file format's checks, shared with photos

        check_points(points, info.width, info.height, name, frames=frames)


def colorize_video(colorizer: Colorizer, src: Path, dst: Path, smoothing: float = VideoConfig().temporal_smoothing,
                   batch_size: int = 8, max_pixels: int | None = None, progress: bool = True,
                   cfg: VideoConfig = VideoConfig(), guidance: list[Point] | None = None,
                   reference: np.ndarray | None = None, hints_name: str | None = None) -> VideoResult:
    """Colourise the video ``src`` into the MP4 ``dst`` (same frame size, rate and count; audio kept).

    A guided model also takes ``guidance``, colour points in input pixels (``Point.frame`` N: from frame N on,
    0-based as decoded, tracked along the motion until the shot ends, FilmPoints.py; None: every frame), and ``reference``, for the whole film: a global hint (Q + 1,)
    (``Colorizer.reference_hint``) or a decoded colour photo. ``hints_name`` (the hint file) names them in errors.
    Raises VideoReadError for unreadable, empty or truncated input, HintError for hints the model does not
    take, a point outside the frame or a frame beyond the film's end (checked once the film is decoded;
    ``dst`` is then not written), and OSError when the output cannot be written.
    """
    start = time.perf_counter()
    name = hints_name or f"{src} (hints)"
    if (guidance or reference is not None) and not colorizer.guided:
        raise no_hints_error(name)
    reference = film_reference(colorizer, reference, f"{src} (reference)")
    info, frames = open_video(src, max_pixels)
    try:
        check_film_points(guidance, info, name)  # the frames: once they are counted, below
    except HintError:
        frames.close()
        raise
    if info.variable_rate:
        tqdm.write(f"warning: {src}: variable frame rate; written at a constant {float(info.fps):.3f} fps, with "
                   "frames repeated or dropped so that its duration and sound stay as they were", file=sys.stderr)
    bar = tqdm(total=info.frames or None, desc=src.name, unit="frame", disable=not progress, leave=False)
    result = VideoResult(0, 0.0)
    counts = PointCounts()

    def write(tmp: str) -> None:
        with VideoWriter(tmp, info, cfg, label=dst) as writer:
            for _, out, stab in colorize_frames(colorizer, info, frames, smoothing, batch_size, guidance, reference,
                                                counts):
                writer.write(out)
                bar.update(1)
                result.cuts = stab.cuts
            check_count(info, writer.written)
            check_film_points(guidance, info, name, writer.written)  # decoded: the header's count may be an estimate
            writer.finish()
        result.frames, result.points, result.point_frames = writer.written, counts.points, counts.frames
    try:
        atomic_write(dst, write, keep_suffix=True)
    finally:
        bar.close()
        frames.close()
    result.seconds = time.perf_counter() - start
    return result


def colorize_videos(colorizer: Colorizer, files: list[Path], input_root: Path, output_dir: Path, *,
                    smoothing: float, crf: int = VideoConfig().crf, batch_size: int = 8,
                    max_pixels: int | None = None, output_file: Path | None = None, progress: bool = True,
                    outputs: list[Path] | None = None, guidance: list[list[Point] | None] | None = None,
                    references: list[np.ndarray | None] | None = None,
                    hint_names: list[str | None] | None = None) -> Report:
    """Colourise each video into ``output_dir`` as <stem>.mp4 (or the one video into ``output_file``).
    ``guidance``, ``references`` and ``hint_names``: one entry per video (None: none), see ``colorize_video``.
    A video that fails is reported on one line naming it; the others are still written."""
    if output_file is not None:
        if output_file.resolve() == files[0].resolve():
            raise ValueError(f"--output {output_file} is the input itself; inputs are never overwritten")
        outs = [output_file]
    elif outputs is not None:
        outs = outputs
    else:
        outs = plan_outputs(files, input_root, output_dir, VIDEO_OUTPUT)
    report = Report()
    per_film = lambda values: values if values is not None else [None] * len(files)
    for src, dst, points, ref, name in zip(files, outs, per_film(guidance), per_film(references),
                                           per_film(hint_names)):
        try:
            r = colorize_video(colorizer, src, dst, smoothing, batch_size, max_pixels, progress,
                               dataclasses.replace(VideoConfig(), crf=crf), points, ref, name)
        except (VideoReadError, HintError, OSError) as e:
            report.failed.append((src, str(e)))
            tqdm.write(f"error: {e}", file=sys.stderr)
            continue
        report.written.append(dst)
        if progress:
            tqdm.write(summary(src, r, dst, bool(points)))
    return report
