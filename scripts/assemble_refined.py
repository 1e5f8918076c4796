"""Rebuild a refined checkpoint from a guided release and refiner weights trained elsewhere (e.g. on a GPU).

A ``--refiner`` run changes nothing but the refiner, so its model is the release plus those tensors. The GPU
machine returns only them (``{"refiner": {name: tensor}, "config": ..., "epoch": ...}``, a few MB), and this
writes the complete checkpoint that ``--mode export`` turns into a release.

Usage:
    python scripts/assemble_refined.py weights/colorizer.pt runs/refiner/S.last.pt --out runs/refiner/refined.pt
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ModelIO import load_checkpoint, save_checkpoint  # noqa: E402
from RefinerLayers import HintRefiner, RefinedDecoder  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("release", help="the guided release the run started from (--init-from)")
    ap.add_argument("refiner", help="the run's refiner tensors")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model, ckpt = load_checkpoint(args.release, torch.device("cpu"))
    cfg = ckpt["model_config"]
    run = torch.load(args.refiner, map_location="cpu", weights_only=True)
    width = run["model_config"]["refiner_width"]
    refiner = HintRefiner(len(ckpt["extras"]["ab_bins"]), cfg.temperature, width, cfg.ab_grid)
    refiner.load_state_dict({k.removeprefix("refiner."): v for k, v in run["refiner"].items()})
    if not torch.equal(refiner.bins, ckpt["extras"]["ab_bins"].float()):
        raise SystemExit(f"{args.refiner}: its ab bins are not {args.release}'s")
    model.decoder = RefinedDecoder(getattr(model.decoder, "base", model.decoder), refiner)
    config = {"init_from": str(args.release), "refiner": str(args.refiner), "run": run["config"]}
    save_checkpoint(Path(args.out), model, dataclasses.replace(cfg, refiner_width=width), epoch=run["epoch"],
                    best_metric=run["best_metric"], config=config, extras=ckpt["extras"])
    print(f"wrote {args.out} (refiner width {width}, epoch {run['epoch']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
