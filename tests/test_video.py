"""Video: the same frames, size, rate and sound come out; L is kept; colour holds still on a pan and
resets at a cut; bad files get one line each; an interrupted run leaves nothing behind.

The clip is made here from two bundled photos (scripts/make_demo_clip.py): a 3-pixel-a-frame pan
with grain and brightness flicker, a hard cut, at 24000/1001 fps, with a tone as audio. The
stability tests use the shipped model, since an untrained one predicts too little colour to flicker.
"""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import Engine
import Evaluate
import Temporal
import Video
import VideoFiles
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_demo_clip import clip_frames, write_clip  # noqa: E402

SIZE, FRAMES, CUT, STEP = (192, 144), 20, 12, 3
FPS = Fraction(24000, 1001)
FLICKER_BOUND = 0.45  # stabilised over unsmoothed flicker: 0.33/0.31 measured with the motion warp, 0.62/0.58 without


def photo(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(ROOT / "examples" / name)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "pan.mkv"  # not mp4: the output's container differs from the input's
    frames = clip_frames([photo("coffee.png"), photo("astronaut.png")], SIZE, FRAMES, CUT, STEP)
    return write_clip(path, frames, SIZE, FPS, audio=True)


@pytest.fixture(scope="module")
def shipped():
    from Inference import Colorizer
    return Colorizer.from_checkpoint(ROOT / "weights" / "colorizer.pt", torch.device("cpu"))


def decode(path: Path) -> tuple[VideoFiles.VideoInfo, list[np.ndarray]]:
    info, frames = VideoFiles.open_video(path)
    return info, [f.copy() for f in frames]


def lab(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def run(colorizer, clip: Path, smoothing: float) -> tuple[list[np.ndarray], Temporal.Stabiliser]:
    """The colourised frames of ``clip``, before encoding, and the stabiliser that made them."""
    info, frames = VideoFiles.open_video(clip)
    outs, stab = [], None
    for _, out, stab in Video.colorize_frames(colorizer, info, frames, smoothing):
        outs.append(out)
    return outs, stab


def test_a_video_comes_out_with_its_frames_size_rate_and_sound(clip, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert Engine.main([str(clip), "--output", str(out), "--checkpoint", str(tiny_checkpoint)]) == 0
    assert "wrote 1 video(s)" in capsys.readouterr().out
    src_info, src = decode(clip)
    info, frames = decode(out / "pan.mp4")
    assert src_info.fps == FPS and info.fps == FPS  # exact: 24000/1001, not 23.98
    assert (info.width, info.height) == SIZE and len(frames) == len(src) == FRAMES
    assert src_info.audio_codec == "aac" and info.audio_codec == "aac"
    assert [p.name for p in out.iterdir()] == ["pan.mp4"]  # no temporary file left
    # L is the input's, within what H.264 at crf 18 with 4:2:0 colour costs (measured: mean 1.3, p99 5.3)
    dL = np.concatenate([np.abs(lab(a)[..., 0] - lab(b)[..., 0]).ravel() for a, b in zip(src, frames)])
    assert dL.mean() < 2.0 and np.percentile(dL, 99) < 8.0


def test_colour_holds_still_on_the_pan(clip, shipped, monkeypatch):
    """Flicker on the first shot, measured with the pan's true motion (STEP pixels a frame, no flow). The bound
    separates carrying colour along the motion (measured: 0.33 of the unsmoothed flicker) from blending it in
    place (0.62): the second half of the test removes the motion warp and checks that the bound then fails."""
    def pan_error(frames):
        errs = []
        for a, b in zip(frames[:CUT - 1], frames[1:CUT]):
            ab0, ab1 = lab(a)[..., 1:], lab(b)[..., 1:]
            errs.append(np.sqrt(((ab1[:, :-STEP] - ab0[:, STEP:]) ** 2).sum(-1)).mean())
        return float(np.mean(errs))
    plain, steady = run(shipped, clip, 0.0)[0], run(shipped, clip, 0.8)[0]
    _, src = decode(clip)
    for a, b in zip(src, steady):  # before encoding, smoothing moves only colour: L as in still images
        assert np.abs(lab(a)[..., 0] - lab(b)[..., 0]).max() < 1.0
    before, after = pan_error(plain), pan_error(steady)
    assert before > 1.0  # the model does flicker on grain and flicker: there is something to fix
    assert after < FLICKER_BOUND * before, (before, after)
    monkeypatch.setattr(Temporal, "warp", lambda image, flow: image)  # colour blended where it was, not moved
    unwarped = pan_error(run(shipped, clip, 0.8)[0])
    assert unwarped > FLICKER_BOUND * before, (before, unwarped)


def test_the_warping_error_agrees_with_the_true_motion(clip, shipped):
    rows = {s: Evaluate.flicker(shipped, clip, s) for s in (0.0, 0.8)}
    assert rows[0.0]["frames"] == FRAMES and rows[0.0]["cuts"] == 1
    assert rows[0.8]["warping_error"] < FLICKER_BOUND * rows[0.0]["warping_error"]


def test_a_cut_starts_fresh_colour(clip, shipped, monkeypatch):
    plain, _ = run(shipped, clip, 0.0)
    steady, stab = run(shipped, clip, 0.8)
    assert stab.cuts == [CUT]
    diff = lambda i, frames: float(np.abs(lab(frames[i])[..., 1:] - lab(plain[i])[..., 1:]).mean())
    assert diff(CUT - 1, steady) > 1.0  # smoothing is at work before the cut ...
    assert diff(CUT, steady) < 0.2  # ... and the new shot's first frame is its own prediction
    # the check can fail: without cut detection, the first shot's colour leaks into the second
    monkeypatch.setattr(Temporal, "CUT_HISTOGRAM", 2.0)
    monkeypatch.setattr(Temporal, "CUT_TRACKED", -1.0)
    leaky, stab = run(shipped, clip, 0.8)
    assert stab.cuts == [] and diff(CUT, leaky) > 0.2


def test_stabiliser_parts():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (60, 80)).astype(np.float32), (0, 0), 2)
    shifted = np.roll(img, 2, axis=1)  # content moves 2 px right
    back = np.zeros((60, 80, 2), np.float32)
    back[..., 0] = -2  # seen from the new frame, each pixel was 2 px to the left
    assert np.abs(Temporal.warp(img, back)[:, 4:-4] - shifted[:, 4:-4]).max() < 1e-3
    fwd = -back
    ok = Temporal.trusted(back, fwd)
    assert ok[:, 2:].all() and not ok[:, :2].any()  # entering pixels have no past
    assert not Temporal.trusted(back, np.zeros_like(fwd)).any()  # flows that disagree are not trusted
    assert Temporal.histogram_distance(Temporal.normalised(img), Temporal.normalised(img * 0.7 + 20)) < 0.05
    ab = rng.normal(0, 1, (2, 60, 80)).astype(np.float32)
    assert Temporal.Stabiliser(0.0)(img, ab) is ab
    with pytest.raises(ValueError):
        Temporal.Stabiliser(1.0)


def make_bad_files(folder: Path, clip: Path, colourised: Path) -> dict[str, Path]:
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    bad = {"text.mp4": folder / "text.mp4", "silent.mp4": folder / "silent.mp4", "empty.mkv": folder / "empty.mkv",
           "truncated.mp4": folder / "truncated.mp4", "codec.avi": folder / "codec.avi"}
    bad["text.mp4"].write_text("not a video\n")
    subprocess.run([ffmpeg, "-y", "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.5", str(bad["silent.mp4"])],
                   check=True)  # audio only: no video stream
    subprocess.run([ffmpeg, "-y", "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=64x48:d=1", "-frames:v", "0",
                    str(bad["empty.mkv"])], check=True)  # a video track with zero frames
    data = colourised.read_bytes()  # index at the front (faststart), so half a file still decodes
    bad["truncated.mp4"].write_bytes(data[:len(data) // 2])
    avi = folder / "mpeg4.avi.tmp"
    subprocess.run([ffmpeg, "-y", "-v", "error", "-i", str(clip), "-c:v", "mpeg4", "-vtag", "FMP4", "-an", "-f", "avi",
                    str(avi)], check=True)
    bad["codec.avi"].write_bytes(avi.read_bytes().replace(b"FMP4", b"QQQQ").replace(b"fmp4", b"qqqq"))
    avi.unlink()
    return bad


def test_bad_videos_get_one_line_each_and_the_rest_are_written(clip, tiny_checkpoint, tmp_path, capsys):
    first = tmp_path / "first.mp4"
    assert Engine.main([str(clip), "--output", str(first), "--checkpoint", str(tiny_checkpoint)]) == 0
    folder = tmp_path / "in"
    folder.mkdir()
    make_bad_files(folder, clip, first)
    (folder / "good.mkv").write_bytes(clip.read_bytes())
    cv2.imwrite(str(folder / "still.png"), photo("coffee.png")[:64, :64])
    capsys.readouterr()
    out = tmp_path / "out"
    assert Engine.main([str(folder), "--output", str(out), "--checkpoint", str(tiny_checkpoint)]) == 1
    captured = capsys.readouterr()
    errors = [ln for ln in captured.err.replace("\r", "\n").splitlines() if ln.startswith("error:")]
    assert len(errors) == 5
    reasons = {"text.mp4": "not a readable video", "silent.mp4": "no video stream", "empty.mkv": "no frames",
               "truncated.mp4": "truncated", "codec.avi": "unsupported video codec"}
    for name, reason in reasons.items():
        line = [e for e in errors if name in e]
        assert len(line) == 1 and reason in line[0], (name, errors)
    assert "wrote 1 image(s) and 1 video(s)" in captured.out and "5 failed" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4", "still.png"]  # nothing half-written


def test_an_interrupted_video_leaves_no_file(clip, tiny_checkpoint, tmp_path, monkeypatch):
    real = Video.colorize_frames

    def interrupted(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 5:
                raise KeyboardInterrupt
            yield item
    monkeypatch.setattr(Video, "colorize_frames", interrupted)
    out = tmp_path / "out"
    assert Engine.main([str(clip), "--output", str(out), "--checkpoint", str(tiny_checkpoint)]) == 130
    assert not out.exists() or list(out.iterdir()) == []


def test_video_flags_and_outputs_are_checked(clip, tiny_checkpoint, tmp_path, capsys):
    assert Engine.main([str(clip), "--temporal-smoothing", "1"]) == 2
    assert "--temporal-smoothing" in capsys.readouterr().err
    assert Engine.main([str(clip), "--output", str(tmp_path / "x.png"), "--checkpoint", str(tiny_checkpoint)]) == 1
    assert "the input is a video" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_evaluate_prints_the_flicker_table(clip, tiny_checkpoint, tmp_path, capsys):
    assert Engine.main(["--mode", "evaluate", str(clip), "--output", str(tmp_path / "ev"),
                        "--checkpoint", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "warp err S=0" in out and "pan.mkv" in out and (tmp_path / "ev" / "flicker.json").is_file()


def test_a_variable_frame_rate_keeps_its_duration_and_is_warned_about(tiny_checkpoint, tmp_path, capsys):
    """24 frames with a 2-second gap in their timestamps (3 s in all): the file decodes cleanly, so it is
    colourised, not refused as cut short; the output lasts 3 s at the constant rate (the last frame before
    the gap repeated), and a warning says the rate was variable."""
    import imageio_ffmpeg

    src = tmp_path / "vfr.mkv"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=s=96x64:d=1:r=24", "-vf", "setpts='if(gte(N,12),PTS+2/TB,PTS)'", "-fps_mode", "vfr",
                    "-c:v", "libx264", str(src)], check=True)
    assert VideoFiles.open_video(src)[0].frames > 60
    assert Engine.main([str(src), "--output", str(tmp_path / "o.mp4"), "--checkpoint", str(tiny_checkpoint)]) == 0
    assert "variable frame rate" in capsys.readouterr().err
    info, frames = decode(tmp_path / "o.mp4")
    assert abs(len(frames) / float(info.fps) - 3.0) < 0.1
    assert VideoFiles.interval_spread(tmp_path / "o.mp4") < VideoFiles.VARIABLE_RATE < VideoFiles.interval_spread(src)
