"""Training survives what happens to long runs: kill -9, SIGTERM, a full disk, a damaged checkpoint, a resume
across epochs (same learning-rate curve), and the optimizer's parameter groups."""
import dataclasses
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import Engine
import ModelIO
from conftest import ROOT, TINY
from Distributed import DistContext
from ImageIO import DiskFullError
from ModelIO import build_model, load_checkpoint, save_checkpoint
from References import Paths, TrainConfig
from RunFolder import RunFolder
from Training import fit, lr_at, make_optimizer

CPU = torch.device("cpu")


def train_args(photo_dir, runs, name, *extra):
    return ["--mode", "training", "--data-dir", str(photo_dir), "--backbone-weights", "none", "--image-size", "32",
            "--batch-size", "2", "--workers", "0", "--samples", "1", "--runs-dir", str(runs), "--run-name", name,
            "--device", "cpu", "--loss", "huber", "--decoder-width", "0.25", *extra]


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def run_worker(stop: str, args: list[str], mark: Path | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "TRAIN_WORKER_STOP": stop, "TRAIN_WORKER_MARK": str(mark or ""), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "train_worker.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


# ----------------------------------------------------------------------------- atomic checkpoints

def test_a_save_that_fails_half_way_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model(TINY, "none")
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, TINY, epoch=1)
    before = path.read_bytes()
    with torch.no_grad():
        next(model.decoder.parameters()).add_(1.0)
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf)
        half = buf.getvalue()[: len(buf.getvalue()) // 2]
        if hasattr(f, "write"):
            f.write(half)
        else:  # a file name
            Path(f).write_bytes(half)
        raise OSError(errno.EIO, "input/output error")
    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="input/output error"):
        save_checkpoint(path, model, TINY, epoch=2)
    assert path.read_bytes() == before  # the previous checkpoint, byte for byte
    assert temps(tmp_path) == []
    monkeypatch.undo()
    assert load_checkpoint(path, CPU)[1]["epoch"] == 1


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """The checkpoint's bytes go to /dev/full, which fails every write with ENOSPC as a full disk does."""
    model = build_model(TINY, "none")
    monkeypatch.setattr(ModelIO, "open", lambda *a, **k: open("/dev/full", "wb"), raising=False)
    with pytest.raises(DiskFullError) as caught:
        save_checkpoint(tmp_path / "last.pt", model, TINY)
    assert str(caught.value) == f"disk full while writing {tmp_path / 'last.pt'}"
    assert caught.value.errno == errno.ENOSPC and temps(tmp_path) == [] and not (tmp_path / "last.pt").exists()


def test_a_full_disk_in_training_stops_with_one_line(photo_dir, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setattr(ModelIO, "open", lambda *a, **k: open("/dev/full", "wb"), raising=False)
    assert Engine.main(train_args(photo_dir, runs, "full", "--epochs", "1")) == 1
    err = capsys.readouterr().err  # the progress bars go to stderr too
    assert err.splitlines()[-1] == f"error: disk full while writing {runs / 'full' / 'best.pt'}"
    assert "Traceback" not in err
    assert temps(runs) == []


# ----------------------------------------------------------------------------- damaged checkpoints

def test_a_checkpoint_missing_keys_is_one_line_naming_the_file_and_the_keys(tmp_path, photo_dir, capsys):
    model = build_model(TINY, "none")
    save_checkpoint(tmp_path / "c.pt", model, TINY)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    del state["decoder"], state["model_config"]["taps"]
    torch.save(state, tmp_path / "holes.pt")
    with pytest.raises(ValueError, match=r"holes\.pt: damaged or incomplete checkpoint, missing decoder, "
                                         r"model_config\.taps$"):
        load_checkpoint(tmp_path / "holes.pt", CPU)
    # a decoder missing one tensor
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    lost = next(iter(state["decoder"]))
    del state["decoder"][lost]
    torch.save(state, tmp_path / "short.pt")
    with pytest.raises(ValueError, match=rf"short\.pt: its decoder weights do not fit .*{lost}"):
        load_checkpoint(tmp_path / "short.pt", CPU)
    # a training checkpoint without its optimizer cannot be resumed: one line, no KeyError traceback
    runs = tmp_path / "runs"
    assert Engine.main(train_args(photo_dir, runs, "r", "--epochs", "1")) == 0
    state = torch.load(runs / "r" / "last.pt", weights_only=True)
    del state["optimizer"], state["best_metric"]
    torch.save(state, runs / "r" / "last.pt")
    capsys.readouterr()
    assert Engine.main(train_args(photo_dir, runs, "r", "--epochs", "2", "--resume", str(runs / "r"))) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"error: {runs / 'r' / 'last.pt'}: damaged or incomplete training checkpoint, " \
                                   "missing optimizer, best_metric"


# ----------------------------------------------------------------------------- kill -9 and SIGTERM

def test_after_kill_9_mid_checkpoint_the_resumed_log_has_one_record_per_epoch(photo_dir, tmp_path):
    """Killed while writing the epoch-1 last.pt: metrics.jsonl already holds epoch 1, the checkpoint is still
    epoch 0's and an half-written temporary file lies beside it. The resume redoes epoch 1 and logs it once."""
    runs, run = tmp_path / "runs", tmp_path / "runs" / "k"
    proc = run_worker("kill:2", train_args(photo_dir, runs, "k", "--epochs", "3"))
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert epochs_logged(run) == [0, 1] and torch.load(run / "last.pt", weights_only=True)["epoch"] == 0
    assert [n for n in temps(run) if n.startswith(".last.pt.")]  # what kill -9 leaves
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 2, "train_lo')  # and a line cut short, as an older version could leave
    (run / ".notes.txt.abcdefgh.tmp").write_bytes(b"x")  # not a file a run writes: stays
    assert Engine.main(train_args(photo_dir, runs, "k", "--epochs", "3", "--resume", str(run))) == 0
    assert epochs_logged(run) == [0, 1, 2]
    assert temps(run) == [".notes.txt.abcdefgh.tmp"]


def test_sigterm_during_a_checkpoint_write_exits_cleanly_and_the_run_resumes(photo_dir, tmp_path):
    runs, run, mark = tmp_path / "runs", tmp_path / "runs" / "t", tmp_path / "mark"
    proc = run_worker("hang:2", train_args(photo_dir, runs, "t", "--epochs", "2"), mark)
    deadline = time.monotonic() + 240
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mark.exists(), proc.communicate()[1][-2000:]
    assert [n for n in temps(run) if n.startswith(".last.pt.")]  # half written, right now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert temps(run) == []
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 0  # the previous checkpoint, intact
    assert Engine.main(train_args(photo_dir, runs, "t", "--epochs", "2", "--resume", str(run))) == 0
    assert epochs_logged(run) == [0, 1]


def test_stale_temp_files_are_ours_only():
    names = [".last.pt.ab12_x9z.tmp", ".best.pt.abcdefgh.tmp", ".metrics.jsonl.abcdefgh.tmp",
             ".loss.png.abcdefgh.tmp", ".files.json.abcdefgh.tmp", ".epoch_003.png.abcdefgh.tmp.png"]
    others = ["last.pt", ".notes.txt.abcdefgh.tmp", ".last.pt.abc.tmp", "x.tmp", ".last.pt.abcdefgh.tmp.bak"]
    from RunFolder import STALE_TEMP
    assert all(STALE_TEMP.fullmatch(n) for n in names)
    assert not any(STALE_TEMP.fullmatch(n) for n in others)


def test_resume_log_keeps_the_last_record_of_each_finished_epoch(tmp_path):
    run = RunFolder(tmp_path)
    lines = [{"epoch": 0, "train_loss": 3, "val_loss": 3}, {"epoch": 1, "train_loss": 2, "val_loss": 2},
             {"epoch": 1, "train_loss": 1, "val_loss": 1}, {"epoch": 2, "train_loss": 0, "val_loss": 0}]
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"epoch": 3, "tr')
    assert run.resume_log(2) == [lines[0], lines[2]]
    assert RunFolder(tmp_path).load_log() == [lines[0], lines[2]] and (tmp_path / "loss.png").is_file()
    run.metrics_path.write_text('{"epoch": 0}\n{"epo\n{"epoch": 1}\n')
    with pytest.raises(ValueError, match="metrics.jsonl: line 2 is not a JSON record"):
        run.load_log()


# ----------------------------------------------------------------------------- the schedule on resume

def small_fit(photo_dir, runs, name, tcfg, resume=False):
    paths = Paths(data_dir=photo_dir, runs_dir=runs, backbone_weights="none")
    cfg = dataclasses.replace(TINY, image_size=32)
    dist = DistContext(rank=0, world_size=1, local_rank=0, device=CPU)
    return fit(paths, cfg, tcfg, dist, run_name=None if resume else name, resume=runs / name if resume else None)


def test_a_run_resumed_in_a_later_epoch_follows_the_uninterrupted_learning_rate_curve(photo_dir, tmp_path):
    """Warm-up over 6 steps and cosine decay over 3 epochs of 4 steps; one run straight, one stopped after
    6 steps (in epoch 1, inside the warm-up's reach) and resumed: same learning rate at every epoch, and
    the same decoder at the end, bit for bit (so every step had the same rate)."""
    runs = tmp_path / "runs"
    tcfg = TrainConfig(epochs=3, batch_size=2, workers=0, samples=1, warmup_steps=6, lr=1e-3)
    assert small_fit(photo_dir, runs, "straight", tcfg) == 0
    assert small_fit(photo_dir, runs, "split", dataclasses.replace(tcfg, max_steps=6)) == 0
    assert torch.load(runs / "split" / "last.pt", weights_only=True)["progress"]["global_step"] == 6
    assert small_fit(photo_dir, runs, "split", tcfg, resume=True) == 0
    log = {name: [json.loads(r) for r in (runs / name / "metrics.jsonl").read_text().splitlines()]
           for name in ("straight", "split")}
    lrs = [r["lr"] for r in log["straight"]]
    assert [r["lr"] for r in log["split"]] == lrs
    assert lrs == [lr_at(e, tcfg, 4 * e + 3) for e in range(3)] and lrs[0] < lrs[1] > lrs[2] > 0
    a, b = (torch.load(runs / n / "last.pt", weights_only=True)["decoder"] for n in ("straight", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_learning_rate_warms_up_linearly_then_decays():
    tcfg = TrainConfig(lr=1.0, epochs=4, warmup_steps=4)
    assert [lr_at(0, tcfg, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(2, tcfg, 100) == pytest.approx(0.5) and lr_at(2, tcfg) == lr_at(2, tcfg, 100)
    assert lr_at(0, dataclasses.replace(tcfg, warmup_steps=0), 0) == 1.0


# ----------------------------------------------------------------------------- AdamW's parameter groups

def test_adamw_decays_weights_but_not_biases_or_norms_and_old_runs_keep_their_layout():
    torch.manual_seed(0)
    model = build_model(TINY, "none")
    tcfg = TrainConfig(lr=0.1, weight_decay=0.5)
    optimizer, _ = make_optimizer(model, tcfg, CPU, None)
    before = {n: p.detach().clone() for n, p in model.decoder.named_parameters()}
    for p in model.decoder.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only the decay moves a parameter
    optimizer.step()
    moved = {n for n, p in model.decoder.named_parameters() if not torch.equal(p, before[n])}
    flat = {n for n, p in model.decoder.named_parameters() if p.ndim == 1}
    assert any(n.endswith("norm.weight") for n in flat) and any(n.endswith(".bias") for n in flat)
    assert moved == set(before) - flat
    # a checkpoint saved with one group (decay_norms, the old layout) resumes with one group
    old, _ = make_optimizer(model, dataclasses.replace(tcfg, decay_norms=True), CPU, None)
    resumed, _ = make_optimizer(model, tcfg, CPU, {"optimizer": old.state_dict(), "scaler": None})
    assert len(old.param_groups) == len(resumed.param_groups) == 1


# ----------------------------------------------------------------------------- validation data

def test_validation_batches_are_whole_images_and_the_same_on_every_pass(photo_dir):
    from LoadData import find_images, load_rgb, normalize_lab, resize_to_square, rgb_to_lab, to_tensor
    from Training import validation_data

    files = find_images(photo_dir)[:5]
    dist = DistContext(rank=0, world_size=1, local_rank=0, device=CPU)
    loader, samples = validation_data(files, dataclasses.replace(TINY, image_size=32),
                                      TrainConfig(batch_size=2, workers=0, samples=2), dist)
    passes = [torch.cat([b["ab"] for b in loader]) for _ in range(2)]
    assert torch.equal(passes[0], passes[1])
    whole = torch.stack([normalize_lab(rgb_to_lab(resize_to_square(to_tensor(load_rgb(f)), 32)))[1] for f in files])
    assert torch.equal(passes[0], whole) and torch.equal(samples["ab"], whole[:2])
