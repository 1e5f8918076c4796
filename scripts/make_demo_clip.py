"""A test clip for the video mode, made from still photos: a slow pan across one photo, with film grain
and brightness flicker, then a hard cut to a pan across a second photo; greyscale, H.264, and
optionally a tone as an audio track.

The tests, the video benchmark and the README's frame strip all use it, so the same kind of clip
is measured everywhere. Frames are made one at a time (``clip_frames`` is a generator).

Usage:
    python scripts/make_demo_clip.py examples/coffee.png examples/astronaut.png --output demo.mp4 \
        --size 320x240 --frames 48 --cut 30 --audio
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np


def _cover(photo: np.ndarray, width: int, height: int, pan: int) -> np.ndarray:
    """The photo scaled to cover (height, width + pan) pixels, cropped to that, grey uint8."""
    grey = photo if photo.ndim == 2 else cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    need_w, need_h = width + pan, height
    scale = max(need_w / grey.shape[1], need_h / grey.shape[0])
    big = cv2.resize(grey, (max(need_w, round(grey.shape[1] * scale)), max(need_h, round(grey.shape[0] * scale))),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    y0, x0 = (big.shape[0] - need_h) // 2, (big.shape[1] - need_w) // 2
    return big[y0:y0 + need_h, x0:x0 + need_w]


def clip_frames(photos: list[np.ndarray], size: tuple[int, int], frames: int, cut: int, step: int = 3,
                grain: float = 6.0, flicker: float = 0.08, seed: int = 0) -> Iterator[np.ndarray]:
    """Greyscale frames, uint8 (height, width), size = (width, height): frames [0, cut) pan ``step`` pixels
    a frame to the right across photos[0], frames [cut, frames) across photos[1]. Each frame gets
    Gaussian grain (sigma ``grain`` grey levels) and a random gain of 1 +- ``flicker``."""
    width, height = size
    rng = np.random.default_rng(seed)
    shots = [(photos[0], cut), (photos[1 % len(photos)], frames - cut)]
    for photo, n in shots:
        canvas = _cover(photo, width, height, step * max(n - 1, 0)).astype(np.float32)
        for i in range(n):
            frame = canvas[:, i * step:i * step + width] * (1.0 + rng.uniform(-flicker, flicker))
            frame = frame + rng.normal(0.0, grain, frame.shape).astype(np.float32)
            yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def write_clip(path: Path, frames: Iterator[np.ndarray], size: tuple[int, int], fps: Fraction = Fraction(24),
               audio: bool = False, crf: int = 10) -> Path:
    """Encode greyscale frames (height, width) uint8 as H.264 (crf 10: near-lossless), with a 440 Hz tone
    as AAC audio when ``audio``; returns ``path``."""
    import imageio_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    video = path.with_name(path.stem + ".noaudio" + path.suffix) if audio else path
    pix = "yuv420p" if size[0] % 2 == 0 and size[1] % 2 == 0 else "yuv444p"
    writer = imageio_ffmpeg.write_frames(str(video), size, pix_fmt_in="gray", pix_fmt_out=pix, fps=fps,
                                         codec="libx264", quality=None, macro_block_size=1,
                                         output_params=["-crf", str(crf)], ffmpeg_log_level="error")
    writer.send(None)
    n = 0
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
        n += 1
    writer.close()
    if audio:
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        subprocess.run([ffmpeg, "-y", "-v", "error", "-i", str(video), "-f", "lavfi", "-i",
                        f"sine=frequency=440:duration={float(n / fps):.3f}", "-map", "0:v", "-map", "1:a",
                        "-c:v", "copy", "-c:a", "aac", str(path)], check=True)
        video.unlink()
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("photos", nargs="+", help="one or two photos (the second shot uses the second)")
    ap.add_argument("--output", required=True, help="the clip to write (.mp4)")
    ap.add_argument("--size", default="320x240", help="frame size WxH")
    ap.add_argument("--frames", type=int, default=48, help="frames in all")
    ap.add_argument("--cut", type=int, default=30, help="first frame of the second shot")
    ap.add_argument("--step", type=int, default=3, help="pan, pixels per frame")
    ap.add_argument("--fps", default="24", help="frame rate, e.g. 24 or 30000/1001")
    ap.add_argument("--audio", action="store_true", help="add a 440 Hz tone as an AAC audio track")
    ap.add_argument("--crf", type=int, default=10, help="H.264 quality (lower = better, larger)")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    photos = []
    for p in args.photos:
        img = cv2.imread(p)
        if img is None:
            ap.error(f"{p}: not a readable image")
        photos.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    frames = clip_frames(photos, size, args.frames, args.cut, args.step)
    print(write_clip(Path(args.output), frames, size, Fraction(args.fps), args.audio, args.crf))
    return 0


if __name__ == "__main__":
    sys.exit(main())
