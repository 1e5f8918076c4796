"""Training at scale: two gloo processes under torchrun, and mid-epoch checkpoints that resume exactly."""
import json
import os
import subprocess
import sys

import torch

import Engine
from conftest import ROOT


def train_args(photo_dir, runs, name, *extra):
    return ["--mode", "training", "--data-dir", str(photo_dir), "--backbone-weights", "none", "--image-size", "32",
            "--batch-size", "2", "--workers", "0", "--samples", "2", "--runs-dir", str(runs), "--run-name", name,
            "--device", "cpu", "--loss", "huber", *extra]


def decoder_state(path):
    return torch.load(path, weights_only=True)["decoder"]


def test_two_processes_agree_only_rank0_writes_and_one_process_resumes(photo_dir, tmp_path):
    runs, notes = tmp_path / "runs", tmp_path / "notes"
    notes.mkdir()
    env = {**os.environ, "DDP_TEST_OUT": str(notes), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "ddp_worker.py"), *train_args(photo_dir, runs, "ddp", "--epochs", "1")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (json.loads((notes / f"rank{r}.json").read_text()) for r in (0, 1))
    # 7 photos of the 8 train here (1 held out), 2 per process per step: 2 steps, and after each the
    # gradients were all-reduced, so both processes hold bit-identical decoder parameters.
    assert len(r0["digests"]) == len(r1["digests"]) == 2
    assert r0["digests"] == r1["digests"]
    assert r1["renamed"] == []  # rank 1 wrote nothing at all
    assert {os.path.basename(p) for p in r0["renamed"]} >= {"files.json", "metrics.jsonl", "last.pt", "best.pt"}
    log = [json.loads(line) for line in (runs / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["images"] == 8  # one line per epoch; 7 photos padded to 2 x 2 x 2
    # only rank 0 prints: each of its lines once (a second rank's would repeat them)
    assert done.stdout.count("training on cpu x 2 process(es)") == 1
    assert done.stdout.count("epoch 0: train") == 1 and done.stdout.count("done: best val loss") == 1
    # the 2-process checkpoint resumes in 1 process
    assert Engine.main(train_args(photo_dir, runs, "ddp", "--epochs", "2", "--resume", str(runs / "ddp"))) == 0
    log = [json.loads(line) for line in (runs / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1] and log[1]["images"] == 7


def test_wgan_gp_under_ddp_keeps_both_networks_identical_on_every_rank(photo_dir, tmp_path):
    """The critic in its own DDP, the gradient penalty's double backward through it: after every step both
    processes hold bit-identical decoders and bit-identical critics."""
    runs, notes = tmp_path / "runs", tmp_path / "notes"
    notes.mkdir()
    env = {**os.environ, "DDP_TEST_OUT": str(notes), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "ddp_worker.py"),
           *train_args(photo_dir, runs, "gan", "--epochs", "1", "--gan", "wgan-gp", "--gan-pretrain-steps", "0",
                       "--d-width", "8")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (json.loads((notes / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0["d_digests"]) == len(r0["digests"]) == 2
    assert r0["d_digests"] == r1["d_digests"] and r0["digests"] == r1["digests"]
    assert "gan" in torch.load(runs / "gan" / "last.pt", weights_only=True)


def test_mid_epoch_checkpoint_resumes_at_the_right_step(photo_dir, tmp_path):
    runs = tmp_path / "runs"
    # straight through: 7 photos, batch 2 -> 4 steps in the epoch
    assert Engine.main(train_args(photo_dir, runs, "straight", "--epochs", "1")) == 0
    # stopped after 2 steps (a checkpoint every step), then resumed
    assert Engine.main(train_args(photo_dir, runs, "split", "--epochs", "1", "--save-every-steps", "1",
                                  "--max-steps", "2")) == 0
    ckpt = torch.load(runs / "split" / "last.pt", weights_only=True)
    assert ckpt["progress"]["epoch"] == 0 and ckpt["progress"]["samples_done"] == 4
    assert ckpt["progress"]["global_step"] == 2 and ckpt["optimizer"]["state"]
    assert not (runs / "split" / "metrics.jsonl").exists()  # the epoch is not over
    assert Engine.main(train_args(photo_dir, runs, "split", "--epochs", "1", "--resume", str(runs / "split"))) == 0
    log = [json.loads(line) for line in (runs / "split" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["images"] == 3 and log[0]["global_step"] == 4  # only the 3 photos not yet seen
    # Same data order, same augmentation, same optimizer state: the resumed run ends where the straight one did.
    straight, split = decoder_state(runs / "straight" / "last.pt"), decoder_state(runs / "split" / "last.pt")
    assert straight.keys() == split.keys()
    assert all(torch.equal(straight[k], split[k]) for k in straight)


def test_max_steps_caps_a_run_and_resume_refuses_a_missing_checkpoint(photo_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert Engine.main(train_args(photo_dir, runs, "cap", "--epochs", "5", "--max-steps", "5")) == 0
    assert torch.load(runs / "cap" / "last.pt", weights_only=True)["progress"]["global_step"] == 5
    assert "--resume" in capsys.readouterr().out
    assert Engine.main(train_args(photo_dir, runs, "x", "--resume", str(tmp_path / "nowhere"))) == 1
    assert "nothing to resume" in capsys.readouterr().err
