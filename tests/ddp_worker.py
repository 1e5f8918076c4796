"""Run by test_training_distributed under torchrun: Engine.main in each process, recording what each rank did.

After every optimizer step it notes a digest of the decoder's parameters (and, in a GAN run, of the
discriminator's after each of its Adam steps), and it notes every file
the process renames into place (all of the project's writes are atomic renames). Each rank dumps
its notes to ``$DDP_TEST_OUT/rank<R>.json``; the run folder itself is the test's to inspect.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import Engine  # noqa: E402

rank = int(os.environ["RANK"])
notes = {"digests": [], "d_digests": [], "renamed": []}
real_step, real_adam_step, real_replace = torch.optim.AdamW.step, torch.optim.Adam.step, os.replace


def digest(optimizer) -> str:
    flat = torch.cat([p.detach().flatten() for g in optimizer.param_groups for p in g["params"]])
    return hashlib.sha1(flat.numpy().tobytes()).hexdigest()


def step(self, *args, **kwargs):
    out = real_step(self, *args, **kwargs)
    notes["digests"].append(digest(self))
    return out


def adam_step(self, *args, **kwargs):  # the discriminator's optimizer (AdamW, the decoder's, is recorded above)
    out = real_adam_step(self, *args, **kwargs)
    if type(self) is torch.optim.Adam:
        notes["d_digests"].append(digest(self))
    return out


def replace(src, dst, *args, **kwargs):
    notes["renamed"].append(str(dst))
    return real_replace(src, dst, *args, **kwargs)


torch.optim.AdamW.step = step
torch.optim.Adam.step = adam_step
os.replace = replace
rc = Engine.main(sys.argv[1:])
os.replace = real_replace
Path(os.environ["DDP_TEST_OUT"], f"rank{rank}.json").write_text(json.dumps({"rc": rc, **notes}))
sys.exit(rc)
