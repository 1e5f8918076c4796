"""Colourising films: video files in, H.264 MP4 out, streamed frame by frame with colour kept steady.

Owns reading and writing videos and the per-frame pipeline between them:
  decoded frame (uint8 RGB) -> a batch through the network at the working size (Inference.Colorizer)
  -> ab resampled onto the small flow grid -> Temporal.Stabiliser (carried along the input's motion,
  reset at cuts) -> FullResolution.recombine_image (the frame's own L, untouched) -> the encoder.

Decoding and encoding use the ffmpeg binary that the imageio-ffmpeg wheel ships: one maintained
dependency that reads every common container and codec, writes H.264 (libx264) that every player
opens, and copies or re-encodes the audio track, which OpenCV's VideoWriter cannot do at all. Frames
cross pipes one at a time, so memory is bounded by the batch and one frame's full-resolution
buffers, whatever the film's length. The output is written to a temporary file, checked (frame
count) and only then renamed into place: an interrupted run leaves no half-written video.

Usage:
    colorizer = Colorizer.from_checkpoint("weights/colorizer.pt", torch.device("cpu"))
    result = colorize_video(colorizer, Path("film.mp4"), Path("out/film.mp4"), smoothing=0.8)
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from FullResolution import recombine_image
from Inference import Colorizer, Report, plan_outputs
from References import VIDEO_OUTPUT, VideoConfig
from Temporal import Stabiliser, flow_grid, luminance

MP4_AUDIO = ("aac", "mp3", "alac", "ac3", "eac3")  # copied as they are; anything else becomes AAC
FRAME_PIXELS_BUDGET = 24_000_000  # decoded pixels held at once (as Inference.BATCH_PIXELS)
SHORTFALL = 0.9  # fewer decoded frames than this share of the header's count: the file is cut short


class VideoReadError(ValueError):
    """A video that cannot be colourised; the message names the file and says why, on one line."""


@dataclass(frozen=True)
class VideoInfo:
    """What the header says: frame size, exact frame rate, expected frame count, codecs."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frames: int  # from the header (or duration x fps); 0 if unknown
    codec: str
    audio_codec: str | None


# ffmpeg's words -> ours, first match wins
_REASONS = (
    ("No such file or directory", "no such file"),
    ("Permission denied", "permission denied"),
    ("no decoder found", "unsupported video codec"),
    ("unknown codec", "unsupported video codec"),
    ("does not contain any stream", "no video stream in the file"),
    ("moov atom not found", "not a readable video (cut short before its index, or not a video file)"),
    ("Invalid data found", "not a readable video (unknown or corrupt format)"),
    ("End of file", "the video has no frames (the file ends before its first frame)"),
)


def _reason(text: str) -> str:
    for needle, reason in _REASONS:
        if needle in text:
            if reason == "unsupported video codec":
                found = re.search(r"Video: (\w+) \((\w+)", text)
                return reason + (f" ({found.group(2)})" if found else "")
            return reason
    lines = [ln.strip() for ln in text.splitlines() if "rror" in ln]
    return "cannot decode video" + (f" ({lines[-1][:160]})" if lines else "")


def exact_fps(path: Path, rounded: float) -> Fraction:
    """The stream's frame rate as a fraction (24000/1001, not ffmpeg's printed 23.98): from OpenCV's
    reading of the container, when it agrees with ffmpeg's, else ``rounded`` as a fraction."""
    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    finally:
        cap.release()
    if fps > 0 and (rounded <= 0 or abs(fps - rounded) < 0.011):
        return Fraction(fps).limit_denominator(100_000)
    if rounded <= 0:
        raise ValueError("no frame rate")
    return Fraction(rounded).limit_denominator(1001)


def open_video(path: Path, max_pixels: int | None = None) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    """Start decoding ``path``: (its VideoInfo, an iterator of frames, uint8 RGB (H, W, 3), read-only).

    Raises VideoReadError (one line, naming the file) for a missing, unreadable, audio-only or
    unsupported-codec file, or frames over ``max_pixels``; the iterator raises it for a stream that
    breaks off mid-frame.
    """
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), output_params=["-fps_mode", "passthrough"])
    try:
        meta = next(reader)
        width, height = meta["size"]
        fps = exact_fps(path, float(meta.get("fps") or 0))
    except (OSError, RuntimeError, KeyError, ValueError, StopIteration) as e:
        reader.close()
        raise VideoReadError(f"{path}: {_reason(str(e))}") from None
    if max_pixels is not None and width * height > max_pixels:
        reader.close()
        raise VideoReadError(f"{path}: frames too large ({width}x{height} pixels, {width * height / 1e6:.1f} MP; "
                             f"the limit is {max_pixels / 1e6:g} MP, raise it with --max-megapixels)")
    cap = cv2.VideoCapture(str(path))
    counted = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    frames = counted if counted > 0 else round(float(meta.get("duration") or 0) * float(fps))
    info = VideoInfo(path, width, height, fps, max(frames, 0), str(meta.get("codec", "?")), meta.get("audio_codec"))

    def frames_of() -> Iterator[np.ndarray]:
        with contextlib.closing(reader):
            try:
                for buf in reader:
                    yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
            except RuntimeError as e:
                raise VideoReadError(f"{path}: damaged video ({_reason(str(e))})") from None
    return info, frames_of()


class _Abort(BaseException):
    """Thrown into imageio-ffmpeg's writer: it kills ffmpeg at once instead of finishing the file."""


class VideoWriter:
    """An H.264 MP4 of ``info``'s size and exact frame rate, with ``info``'s audio track (copied when MP4
    holds it, else AAC), written to a temporary file beside ``path`` and renamed onto it by ``commit``
    once its frame count checks out. Leaving the ``with`` block without commit deletes it."""

    def __init__(self, path: Path, info: VideoInfo, cfg: VideoConfig = VideoConfig()) -> None:
        import imageio_ffmpeg

        self.path, self.written = Path(path), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp" + VIDEO_OUTPUT,
                                        dir=self.path.parent)
        os.close(fd)
        # 4:2:0 needs even sides; odd-sized frames keep their size in 4:4:4 (fewer players, no resize)
        pix = "yuv420p" if info.width % 2 == 0 and info.height % 2 == 0 else "yuv444p"
        extra = ["-crf", str(cfg.crf), "-preset", cfg.preset, "-movflags", "+faststart"]
        audio = {}
        if info.audio_codec:
            audio = {"audio_path": str(info.path),
                     "audio_codec": "copy" if info.audio_codec in MP4_AUDIO else "aac"}
        self._gen = imageio_ffmpeg.write_frames(self.tmp, (info.width, info.height), pix_fmt_out=pix, fps=info.fps,
                                                codec="libx264", quality=None, macro_block_size=1,
                                                ffmpeg_log_level="error", output_params=extra, **audio)
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        """One frame, uint8 RGB (H, W, 3)."""
        try:
            self._gen.send(np.ascontiguousarray(frame))
        except OSError as e:
            raise OSError(f"{self.path}: cannot write video ({str(e).splitlines()[0]})") from None
        self.written += 1

    def commit(self) -> None:
        """Finish the file, check that it holds every frame, and rename it onto the output path."""
        self._gen.close()
        self._gen = None
        cap = cv2.VideoCapture(self.tmp)
        found = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
        cap.release()
        if found != self.written:
            raise OSError(f"{self.path}: the encoder wrote {found} of {self.written} frames; nothing was saved")
        os.chmod(self.tmp, 0o666 & ~_umask())
        os.replace(self.tmp, self.path)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._gen is not None:
            with contextlib.suppress(_Abort, StopIteration, OSError):
                self._gen.throw(_Abort())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def colorize_frames(colorizer: Colorizer, frames: Iterator[np.ndarray], grid: tuple[int, int], smoothing: float,
                    batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, Stabiliser]]:
    """Frames (uint8 RGB (H, W, 3), in order) -> (input luma on the grid (h, w), colourised uint8 RGB (H, W, 3),
    the stabiliser), in order. ``smoothing`` 0 colourises each frame on its own; L is never changed."""
    stab = Stabiliser(smoothing)
    for batch in batched(frames, batch_size):
        ab = colorizer.ab_for(batch).numpy()  # (B, 2, h, w) in [-1, 1]
        for frame, a in zip(batch, ab):
            grey = luminance(frame, grid)
            on_grid = np.stack([cv2.resize(c, (grid[1], grid[0]), interpolation=cv2.INTER_LINEAR) for c in a])
            yield grey, recombine_image(frame, stab(grey, on_grid)), stab
        batch.clear()


def frames_per_batch(info: VideoInfo, batch_size: int) -> int:
    """``batch_size``, fewer for large frames, so a batch holds at most FRAME_PIXELS_BUDGET pixels."""
    return max(1, min(batch_size, FRAME_PIXELS_BUDGET // max(1, info.width * info.height)))


@dataclass
class VideoResult:
    """One colourised video: frames written, wall seconds, frames at which a new shot began."""

    frames: int
    seconds: float
    cuts: list[int] = field(default_factory=list)


def decode_errors(path: Path) -> str | None:
    """The first error ffmpeg reports when decoding all of ``path``'s video (None: it decodes cleanly)."""
    import subprocess

    import imageio_ffmpeg

    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0",
                           "-f", "null", "-"], capture_output=True, text=True)
    lines = [ln.split("] ")[-1].strip() for ln in done.stderr.splitlines() if ln.strip()]
    if lines:
        return lines[0]
    return f"exit status {done.returncode}" if done.returncode else None


def check_count(info: VideoInfo, decoded: int) -> None:
    """VideoReadError for a video with no frames, or with far fewer than its header promises and decoding
    errors (cut short or damaged). A shortfall that decodes cleanly is a variable frame rate's estimate."""
    if decoded == 0:
        raise VideoReadError(f"{info.path}: the video has no frames")
    if info.frames and decoded < SHORTFALL * info.frames - 2:
        error = decode_errors(info.path)
        if error is not None:
            raise VideoReadError(f"{info.path}: truncated or damaged video (decoded {decoded} of the {info.frames} "
                                 f"frames its header lists; ffmpeg: {error[:120]}); nothing was written")


def colorize_video(colorizer: Colorizer, src: Path, dst: Path, smoothing: float = VideoConfig().temporal_smoothing,
                   batch_size: int = 8, max_pixels: int | None = None, progress: bool = True,
                   cfg: VideoConfig = VideoConfig()) -> VideoResult:
    """Colourise the video ``src`` into the MP4 ``dst`` (same frame size, rate and count; audio kept).

    Raises VideoReadError for unreadable, empty or truncated input (``dst`` is then not written) and
    OSError when the output cannot be written.
    """
    start = time.perf_counter()
    info, frames = open_video(src, max_pixels)
    grid = flow_grid((info.height, info.width))
    bar = tqdm(total=info.frames or None, desc=src.name, unit="frame", disable=not progress, leave=False)
    try:
        with VideoWriter(dst, info, cfg) as writer:
            stab = None
            for _, out, stab in colorize_frames(colorizer, frames, grid, smoothing, frames_per_batch(info, batch_size)):
                writer.write(out)
                bar.update(1)
            check_count(info, writer.written)
            writer.commit()
    finally:
        bar.close()
        frames.close()
    return VideoResult(writer.written, time.perf_counter() - start, list(stab.cuts) if stab else [])


def colorize_videos(colorizer: Colorizer, files: list[Path], input_root: Path, output_dir: Path, *,
                    smoothing: float, crf: int = VideoConfig().crf, batch_size: int = 8,
                    max_pixels: int | None = None, output_file: Path | None = None, progress: bool = True) -> Report:
    """Colourise each video into ``output_dir`` as <stem>.mp4 (or the one video into ``output_file``).
    A video that fails is reported on one line naming it; the others are still written."""
    outs = [output_file] if output_file is not None else plan_outputs(files, input_root, output_dir, VIDEO_OUTPUT)
    report = Report()
    for src, dst in zip(files, outs):
        if dst.resolve() == src.resolve():
            raise ValueError(f"--output {dst} is the input itself; inputs are never overwritten")
        try:
            r = colorize_video(colorizer, src, dst, smoothing, batch_size, max_pixels, progress,
                               dataclasses.replace(VideoConfig(), crf=crf))
        except (VideoReadError, OSError) as e:
            report.failed.append((src, str(e)))
            tqdm.write(f"error: {e}", file=sys.stderr)
            continue
        report.written.append(dst)
        if progress:
            tqdm.write(f"{src.name}: {r.frames} frames in {r.seconds:.1f} s ({r.frames / r.seconds:.1f} fps)"
                       + (f", new shot at frame {', '.join(map(str, r.cuts))}" if r.cuts else "") + f" -> {dst}")
    return report
