"""Folder jobs: every output planned once for the whole run (no output overwrites another or an input), the
output folder never read as input, --skip-existing resumes, --workers and torchrun share the work with each
photo written exactly once and the counts totalled, and SIGTERM leaves no temporary file behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import Batch
import Engine
from conftest import ROOT, real_photo

NAMES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")


def photos(folder: Path, names=NAMES, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        Image.fromarray(real_photo(n, size)).save(folder / f"{n}.png")
        out.append(folder / f"{n}.png")
    return out


def run(*argv) -> int:
    return Engine.main([str(a) for a in argv])


def test_same_names_in_two_folders_are_both_kept(tmp_path, tiny_checkpoint, capsys):
    a, b = photos(tmp_path / "a", ["coffee"]), photos(tmp_path / "b", ["coffee"])
    Image.fromarray(real_photo("rocket", 64)).save(tmp_path / "b" / "coffee.jpg")  # and a same-stem sibling
    assert run(tmp_path / "a", tmp_path / "b", "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint) == 0
    made = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert made == ["a/coffee.png", "b/coffee.png", "b/coffee_png.png"]  # b/coffee.jpg sorts first
    assert "wrote 3 image(s)" in capsys.readouterr().out
    # two files of the same name from different folders, given as files
    tasks = Batch.plan([a[0], b[0]], tmp_path / "flat", ".png")
    assert [t.dst.name for t in tasks] == ["coffee.png", "coffee_png.png"]
    assert len({t.dst for t in Batch.plan([a[0], a[0], a[0]], tmp_path / "x", ".png")}) == 3


def test_the_output_folder_inside_the_input_is_not_read(tmp_path, tiny_checkpoint, capsys):
    photos(tmp_path / "in", NAMES[:2])
    for _ in range(2):
        assert run(tmp_path / "in", "--output", tmp_path / "in" / "colour", "--checkpoint", tiny_checkpoint) == 0
        assert "wrote 2 image(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "in" / "colour").rglob("*")) == ["astronaut.png", "chelsea.png"]


def test_skip_existing_resumes_without_redoing(tmp_path, tiny_checkpoint, capsys):
    photos(tmp_path / "in", NAMES[:3])
    out = tmp_path / "out"
    assert run(tmp_path / "in", "--output", out, "--checkpoint", tiny_checkpoint) == 0
    (out / "chelsea.png").unlink()  # the job was interrupted before this one
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert run(tmp_path / "in", "--output", out, "--checkpoint", tiny_checkpoint, "--skip-existing") == 0
    assert "wrote 1 image(s)" in (text := capsys.readouterr().out) and "2 already there, skipped" in text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in before} == before
    assert (out / "chelsea.png").is_file()


def test_shards_partition_the_tasks():
    tasks = list(range(11))
    for world in (1, 2, 3, 5):
        parts = [Batch.shard(tasks, r, world) for r in range(world)]
        assert sorted(sum(parts, [])) == tasks


def written_by(out: Path) -> dict[str, int]:
    return {p.name: 1 for p in out.iterdir() if not p.name.startswith(".")}


def test_workers_write_each_photo_once_and_total_the_counts(tmp_path, tiny_checkpoint, capsys):
    photos(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    rc = run(tmp_path / "in", "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint, "--workers", "2")
    text = capsys.readouterr().out
    assert rc == 1 and f"wrote {len(NAMES)} image(s)" in text and "1 failed" in text
    assert sorted(written_by(tmp_path / "out")) == sorted(f"{n}.png" for n in NAMES)


def test_torchrun_ranks_share_the_folder(tmp_path, tiny_checkpoint):
    photos(tmp_path / "in")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "Engine.py"),
           "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint),
           "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("wrote")]
    assert lines == [f"wrote {len(NAMES)} image(s) to {tmp_path / 'out'} with tiny.pt"]  # totals, printed once
    assert sorted(written_by(tmp_path / "out")) == sorted(f"{n}.png" for n in NAMES)


SLOW_WRITE = """
import sys, time
sys.path.insert(0, {root!r})
import Folders, ImageIO
def slow(path, image, quality=95, bgr=False):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
            f.flush()
            time.sleep(60)
    ImageIO.atomic_write(path, write)
Folders.write_image = slow
import Engine
sys.exit(Engine.main(sys.argv[1:]))
"""


def test_sigterm_leaves_no_temporary_file(tmp_path, tiny_checkpoint):
    photos(tmp_path / "in", NAMES[:1])
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITE.format(root=str(ROOT)), str(tmp_path / "in"),
                             "--output", str(out), "--checkpoint", str(tiny_checkpoint)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out.is_dir() and any(out.iterdir())) and time.time() < deadline:
        time.sleep(0.1)
    assert any(out.iterdir()), "the write never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert list(out.iterdir()) == []


def test_an_image_write_that_fails_midway_leaves_the_old_file(tmp_path, monkeypatch):
    """Outputs are written to a temporary file and renamed: a write that breaks off leaves the previous output
    as it was and no temporary file (writing into the output itself would leave half a PNG)."""
    import Pictures

    out = tmp_path / "photo.png"
    out.write_bytes(b"the previous output")
    image = real_photo("coffee", 64)
    real_open = open

    def breaking_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            real_write = f.write

            def write(data):
                real_write(data[: len(data) // 2])
                raise OSError("the connection to the disk was lost")
            f.write = write
        return f
    monkeypatch.setattr("builtins.open", breaking_open)
    with pytest.raises(OSError, match="connection"):
        Pictures.write_image(out, image)
    monkeypatch.undo()
    assert out.read_bytes() == b"the previous output"
    assert [p.name for p in tmp_path.iterdir()] == ["photo.png"]
    Pictures.write_image(out, image)
    assert np.array_equal(np.asarray(Image.open(out)), image)
