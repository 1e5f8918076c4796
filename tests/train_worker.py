"""Run by test_training_hardening in a subprocess: Engine.main, with one checkpoint write stopped half-way.

``TRAIN_WORKER_STOP=kind:N`` makes the N-th write of a ``last.pt`` (counting from 1) write half of its
bytes and then, for ``kind``:
  * ``hang``: create ``$TRAIN_WORKER_MARK`` and sleep, so the test can send a signal mid-write;
  * ``kill``: SIGKILL this process (what ``kill -9`` or the OOM killer does).
Usage: TRAIN_WORKER_STOP=hang:2 TRAIN_WORKER_MARK=stop.mark python tests/train_worker.py --mode training ...
"""
import io
import os
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import Engine  # noqa: E402

kind, _, nth = os.environ["TRAIN_WORKER_STOP"].partition(":")
real_save, seen = torch.save, [0]


def save(obj, f, *args, **kwargs):
    name = os.path.basename(getattr(f, "name", str(f)))
    if not name.startswith(".last.pt."):
        return real_save(obj, f, *args, **kwargs)
    seen[0] += 1
    if seen[0] != int(nth):
        return real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    Path(os.environ["TRAIN_WORKER_MARK"]).touch()
    time.sleep(120)
    raise AssertionError("no signal came")


torch.save = save
sys.exit(Engine.main(sys.argv[1:]))
