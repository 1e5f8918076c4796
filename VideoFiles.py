"""Video files: reading a film's header and frames through ffmpeg, and writing H.264 MP4 that is checked.

Decoding and encoding use the ffmpeg binary that the imageio-ffmpeg wheel ships: one maintained dependency that
reads every common container and codec, writes H.264 that every player opens, and copies or re-encodes the audio
track, which OpenCV's VideoWriter cannot do at all.

Owns the container side of films (Video.py owns the pipeline between reading and writing):
  * ``open_video``: the header (size, exact frame rate, frame count, codecs, a variable rate detected) and a
    stream of uint8 RGB frames from ffmpeg, one at a time; anything it cannot read becomes a ``VideoReadError``
    naming the file and the reason in our words;
  * ``VideoWriter``: H.264 (libx264) at the input's exact rate, its audio copied or re-encoded to AAC,
    the written frame count checked on ``finish``; leaving without ``finish`` kills the encoder;
  * ``check_count``: a film that decodes far fewer frames than its header lists, with decoding errors,
    is refused rather than written short.

Usage:
    info, frames = open_video(Path("film.mkv"))
    with VideoWriter(tmp, info, label=Path("out/film.mp4")) as writer:
        for frame in frames:
            writer.write(frame)
        writer.finish()
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from References import VideoConfig

MP4_AUDIO = ("aac", "mp3", "alac", "ac3", "eac3")  # copied as they are; anything else becomes AAC
SHORTFALL = 0.9  # fewer decoded frames than this share of the header's count: the file is cut short
VARIABLE_RATE = 1.5  # longest over shortest frame interval beyond which the rate is variable


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
    variable_rate: bool = False  # frame intervals that differ (decoded at the constant rate ``fps``)


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


def opencv_reading(path: Path | str) -> tuple[float, int]:
    """(frame rate, frame count) as OpenCV reads them from the container; (0.0, 0) if it cannot open it."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0.0, 0
        return cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def exact_fps(fps: float, rounded: float) -> Fraction:
    """The stream's frame rate as a fraction (24000/1001, not ffmpeg's printed 23.98): OpenCV's ``fps``
    when it agrees with ffmpeg's ``rounded``, else ``rounded`` as a fraction."""
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
        cv_fps, counted = opencv_reading(path)
        fps = exact_fps(cv_fps, float(meta.get("fps") or 0))
        variable = interval_spread(path) > VARIABLE_RATE
        if variable:
            # Frames at the constant rate: the gaps of a variable-rate file are filled by repeating frames (and
            # bursts thinned), so the output keeps the input's duration and its sound stays in sync.
            reader.close()
            reader = imageio_ffmpeg.read_frames(str(path), output_params=["-fps_mode", "cfr", "-r", str(fps)])
            next(reader)
    except (OSError, RuntimeError, KeyError, ValueError, StopIteration) as e:
        reader.close()
        raise VideoReadError(f"{path}: {_reason(str(e))}") from None
    if max_pixels is not None and width * height > max_pixels:
        reader.close()
        raise VideoReadError(f"{path}: frames too large ({width}x{height} pixels, {width * height / 1e6:.1f} MP; "
                             f"the limit is {max_pixels / 1e6:g} MP, raise it with --max-megapixels)")
    frames = counted if counted > 0 else round(float(meta.get("duration") or 0) * float(fps))
    info = VideoInfo(path, width, height, fps, max(frames, 0), str(meta.get("codec", "?")), meta.get("audio_codec"),
                     variable)

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
    """Writes ``path`` as an H.264 MP4 of ``info``'s size and exact frame rate, with ``info``'s audio track
    (copied when MP4 holds it, else AAC). ``finish`` completes it and checks that it holds every frame;
    leaving the ``with`` block without ``finish`` kills the encoder. Errors name ``label`` (the output the
    user asked for; ``path`` is normally atomic_write's temporary file)."""

    def __init__(self, path: Path | str, info: VideoInfo, cfg: VideoConfig = VideoConfig(),
                 label: Path | None = None) -> None:
        import imageio_ffmpeg

        self.path, self.label, self.written = str(path), label or Path(path), 0
        # 4:2:0 needs even sides; odd-sized frames keep their size in 4:4:4 (fewer players, no resize)
        pix = "yuv420p" if info.width % 2 == 0 and info.height % 2 == 0 else "yuv444p"
        extra = ["-crf", str(cfg.crf), "-preset", cfg.preset, "-movflags", "+faststart"]
        audio = {}
        if info.audio_codec:
            audio = {"audio_path": str(info.path),
                     "audio_codec": "copy" if info.audio_codec in MP4_AUDIO else "aac"}
        self._gen = imageio_ffmpeg.write_frames(self.path, (info.width, info.height), pix_fmt_out=pix, fps=info.fps,
                                                codec="libx264", quality=None, macro_block_size=1,
                                                ffmpeg_log_level="error", output_params=extra, **audio)
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        """One frame, uint8 RGB (H, W, 3)."""
        try:
            self._gen.send(np.ascontiguousarray(frame))
        except OSError as e:
            raise OSError(f"{self.label}: cannot write video ({str(e).splitlines()[0]})") from None
        self.written += 1

    def finish(self) -> None:
        """Let the encoder finish the file, then check that it holds every frame written."""
        self._gen.close()
        self._gen = None
        found = opencv_reading(self.path)[1]
        if found != self.written:
            raise OSError(f"{self.label}: the encoder wrote {found} of {self.written} frames; nothing was saved")

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._gen is not None:
            with contextlib.suppress(_Abort, StopIteration, OSError):
                self._gen.throw(_Abort())


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


def interval_spread(path: Path) -> float:
    """The longest frame interval over the shortest (ffmpeg's vfrdet filter over the whole stream): 1 for a
    constant frame rate, a little over 1 where a container rounds timestamps (41 and 42 ms at 23.976 fps in
    Matroska), far over it where frames are missing or the camera varied its rate."""
    import subprocess

    import imageio_ffmpeg

    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "info", "-i", str(path), "-map", "0:v:0",
                           "-vf", "vfrdet", "-f", "null", "-"], capture_output=True, text=True)
    found = re.search(r"VFR:\S+ \(\d+/\d+\) min: (\d+) max: (\d+)", done.stderr)
    return int(found.group(2)) / max(int(found.group(1)), 1) if found else 1.0


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
