"""Rebuild guided member checkpoints from a release and hint-layer weights trained elsewhere (e.g. on a GPU).

A ``--guided --hint-layers-only`` run changes nothing but the hint layers, so its decoder is the source
member plus those tensors. This writes, for each member, a checkpoint that Export.export_release can
combine, holding the source member's decoder, the trained hint layers and the run's settings.

Usage:
    python scripts/assemble_guided.py weights/colorizer.pt runs/guided/B0.dec0.pt runs/guided/B1.dec0.pt \
        --out runs/guided --note "40 epochs, batch 32, lr 3e-4 (hint layers x10), H200"
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from HintSampling import HINT_LAYERS  # noqa: E402
from ModelIO import load_generator, save_checkpoint  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("release", help="the unguided release the runs started from (--init-from)")
    ap.add_argument("hints", nargs="+", help="one file of trained hint-layer tensors per member, in member order")
    ap.add_argument("--out", default="runs/guided")
    ap.add_argument("--note", default="", help="how the hint layers were trained (stored in the checkpoint)")
    args = ap.parse_args()
    for member, path in enumerate(args.hints):
        model, source, _ = load_generator(args.release, torch.device("cpu"), member=member, guided=True)
        trained = torch.load(path, map_location="cpu", weights_only=True)
        if not trained or any(not k.startswith(HINT_LAYERS) for k in trained):
            raise SystemExit(f"{path}: expected only hint-layer tensors ({', '.join(HINT_LAYERS)})")
        missing = model.decoder.load_state_dict(trained, strict=False).missing_keys
        left = [k for k in missing if k.startswith(HINT_LAYERS)]
        if left:
            raise SystemExit(f"{path}: hint-layer tensors missing: {left[:3]}")
        out = Path(args.out) / f"member{member}.pt"
        config = {"init_from": str(args.release), "init_member": member, "hint_layers": str(path), "note": args.note}
        save_checkpoint(out, model, source["model_config"], config=config, extras=source["extras"])
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
