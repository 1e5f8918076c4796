"""Files in and out, without torch: decoding images, finding inputs, and writing outputs atomically.

Owns what both installs need before and after the network:
  * ``load_image``: any supported file -> compact pixels (uint8/uint16, grey or RGB), with the
    user's pixel limit checked from the header, EXIF orientation applied (a malformed EXIF block
    is ignored with a warning), alpha composited onto white, 16-bit, palette and multi-frame
    (MPO, GIF: the first frame) images handled;
  * ``find_images`` / ``split_videos``: the inputs of a run (recursive, sorted), never the run's
    own output folder; ``check_inputs``: each exists and, for a single file, is readable, before any
    model is loaded (a typo costs no start-up);
  * ``atomic_write``: a temporary file renamed into place, so a reader never sees a half file,
    with a full disk reported as such.
The light install (ONNX Runtime, no torch) runs on this module; LoadData re-exports it for training.

Usage:
    pixels = load_image("photo.jpg")                  # (H, W) or (H, W, 3) uint8/uint16
    atomic_write(Path("out.png"), lambda tmp: cv2.imwrite(tmp, bgr), keep_suffix=True)
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from References import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS


class ImageReadError(ValueError):
    """A file that could not be decoded as an image; the message names the file."""


class ImageTooLargeError(ImageReadError):
    """More pixels than the user's limit (--max-megapixels); raised from the header, before decoding."""

    def __init__(self, label: str, megapixels: float, limit_mp: float, size: tuple[int, int] | None = None) -> None:
        dims = f"{size[0]}x{size[1]} pixels, " if size else ""
        super().__init__(f"{label}: image too large ({dims}{megapixels:.1f} MP; the limit is {limit_mp:g} MP, "
                         "raise it with --max-megapixels)")
        self.megapixels, self.limit_mp = megapixels, limit_mp


class DiskFullError(OSError):
    """A write failed for want of space (ENOSPC, or EDQUOT: a quota); its message is one line naming the file."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(errno.ENOSPC, f"disk full while writing {path}")
        self.filename = str(path)

    def __str__(self) -> str:
        return self.strerror


@contextlib.contextmanager
def disk_full_as_error(path: str | Path):
    """Turn an ENOSPC/EDQUOT OSError raised inside the block into ``DiskFullError(path)`` (other errors pass)."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFullError(path) from None


MAX_ASPECT = 100  # longest side / shortest side: beyond it one row or column alone would dominate memory


class UnsupportedImageError(ImageReadError):
    """A real image, but in a format this tool does not accept."""


_limit = {"pixels": 200_000_000}


def set_pixel_limit(megapixels: float) -> None:
    """The default --max-megapixels for ``load_image``; Pillow's own bomb guard is set from it too, so that
    ours is always the check a user meets (Pillow only warns up to twice its limit, which we ignore)."""
    _limit["pixels"] = int(megapixels * 1e6)
    Image.MAX_IMAGE_PIXELS = _limit["pixels"]


def find_images(root: str | Path, videos: bool = False, exclude: Path | None = None) -> list[Path]:
    """All image files under ``root`` (recursive, sorted), with ``videos`` also video files, or
    ``[root]`` for a single file. Files under ``exclude`` (the run's output folder, when it lies
    inside ``root``) are left out, so a second run does not colourise the first run's outputs.

    Raises FileNotFoundError if ``root`` does not exist and ValueError if it holds no
    file with a supported extension.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    if root.is_file():
        return [root]
    suffixes = IMAGE_EXTENSIONS + (VIDEO_EXTENSIONS if videos else ())
    skip = exclude.resolve() if exclude is not None else None
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
                   and not (skip is not None and p.resolve().is_relative_to(skip)))
    if not files:
        raise ValueError(f"{root}: no {'images or videos' if videos else 'images'} found (looked for "
                         f"{', '.join(suffixes)})")
    return files


def is_video(path: str | Path) -> bool:
    """True for a file name with a video extension (References.VIDEO_EXTENSIONS)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def split_videos(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(the images, the videos) of ``files``, each in the given order."""
    return [f for f in files if not is_video(f)], [f for f in files if is_video(f)]


def check_inputs(inputs: list[Path]) -> None:
    """Fail fast, before the model loads: every input exists; a single file has a known suffix and, for an
    image, a header Pillow can read. Raises FileNotFoundError / ValueError naming the file."""
    for p in inputs:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        if p.is_file():
            if p.suffix.lower() not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
                raise ValueError(f"{p}: not an image or video this tool reads (known: "
                                 f"{', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
            if not os.access(p, os.R_OK):
                raise PermissionError(f"{p}: not readable (permission denied)")
            if not is_video(p):
                _check_header(p)


def _check_header(path: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path):
                pass
    except Image.DecompressionBombError:
        return  # readable; load_image reports the size against the user's limit
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read image ({e})") from None


def load_image(path: str | Path | BinaryIO, name: str | None = None, max_pixels: int | None = None,
               formats: tuple[str, ...] | None = None) -> np.ndarray:
    """Decode an image file (a path, or a binary file object such as an upload) to its pixels, compactly.

    Returns uint8 (H, W) for greyscale, uint16 (H, W) for 16-bit greyscale, or uint8 (H, W, 3) RGB.
    EXIF orientation is applied (a malformed EXIF block is ignored with a warning) and transparency
    composited onto white; of a multi-frame file (MPO, GIF, TIFF) the first frame is used. The size and
    the aspect ratio (at most ``MAX_ASPECT``:1) are checked from the header, before decoding, against
    ``max_pixels`` (default: ``set_pixel_limit``'s).
    ``formats`` optionally restricts Pillow's format names (e.g. ("PNG", "JPEG")). Raises
    ImageReadError (or ImageTooLargeError, UnsupportedImageError) with a message that starts
    with ``name`` (default: the path).
    """
    label = name or str(path)
    limit = _limit["pixels"] if max_pixels is None else max_pixels
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit  # only ever raised: Pillow must not refuse what our limit allows
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides, below
            with Image.open(path) as im:
                if formats is not None and im.format not in formats:
                    raise UnsupportedImageError(f"{label}: unsupported image type {im.format}")
                if im.width * im.height > limit:
                    raise ImageTooLargeError(label, im.width * im.height / 1e6, limit / 1e6, im.size)
                if max(im.size) > MAX_ASPECT * min(im.size):
                    raise UnsupportedImageError(f"{label}: {im.width}x{im.height} pixels is too elongated to "
                                                f"colourise (at most {MAX_ASPECT}:1)")
                return _pil_to_array(_upright(im, label))
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:  # over twice Pillow's limit: it refuses in Image.open
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageTooLargeError(label, int(found.group(1)) / 1e6 if found else float("nan"), limit / 1e6) from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{label}: not a readable image (unknown or corrupt format)") from None
    except FileNotFoundError:
        raise ImageReadError(f"{label}: no such file") from None
    except (OSError, SyntaxError, ValueError, struct.error, IndexError, KeyError) as e:  # Pillow's decoders raise these
        raise ImageReadError(f"{label}: cannot decode image ({e.__class__.__name__}: {e})") from None


def _upright(im: Image.Image, label: str) -> Image.Image:
    """``im`` turned as its EXIF orientation says; a malformed EXIF block (a bad tag type or count) is
    ignored with a warning, since the pixels themselves are fine."""
    try:
        return ImageOps.exif_transpose(im)
    except (struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:  # OSError: bad pixels
        print(f"warning: {label}: malformed EXIF ignored, orientation unknown ({e.__class__.__name__})",
              file=sys.stderr)
        return im


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """Pillow image of any mode -> uint8 (H, W) / uint16 (H, W) / uint8 (H, W, 3)."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        if im.mode == "I" and arr.max() <= 255:
            return arr.clip(0, 255).astype(np.uint8)
        return arr.clip(0, 65535).astype(np.uint16)
    if im.mode == "F":
        return (np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if im.mode in ("L", "1"):
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 or uint16 pixels -> float32 in [0, 1], same shape."""
    return img.astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)


def as_rgb(img: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) -> (H, W, 3), greyscale repeated into the three channels."""
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def interrupt_on_sigterm(signum, frame) -> None:
    """A SIGTERM handler: raise KeyboardInterrupt, so that SIGTERM unwinds as Ctrl-C does."""
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM (docker stop, systemd) raises KeyboardInterrupt in the main thread, as Ctrl-C does.

    The default SIGTERM action kills the process at once, leaving an output's or a checkpoint's temporary
    file behind; as an exception it unwinds instead (atomic_write removes its temporary file, the process
    group is left, Engine prints "interrupted"). No-op outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def atomic_write(path: Path, write: Callable[[str], object], keep_suffix: bool = False) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half file.

    ``keep_suffix`` ends the temporary name with ``path``'s suffix (for writers that pick the
    format from it, such as OpenCV's imwrite).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + (path.suffix if keep_suffix else ""),
                               dir=path.parent)
    os.close(fd)
    try:
        with disk_full_as_error(path):
            write(tmp)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs should look like any other file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
