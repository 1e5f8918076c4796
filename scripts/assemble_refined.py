"""Rebuild a refined checkpoint from a guided release and refiner weights trained elsewhere, or strip a refiner.

A ``--refiner`` run changes nothing but the refiner, so its model is the release plus those tensors. The GPU
machine returns only them: a ``torch.save``d dict with "refiner" ({name: tensor}, the decoder's "refiner.*"
tensors of the run's last.pt), "model_config" (with its "refiner_width"), "epoch", "best_metric" and "config"
(the run's). This writes the complete checkpoint that ``--mode export`` turns into a release.
``--strip`` instead writes the release without its refiner: a guided model to train a new refiner on.

Usage:
    python scripts/assemble_refined.py weights/colorizer.pt runs/refiner/S.last.pt --out runs/refiner/refined.pt
    python scripts/assemble_refined.py weights/colorizer.pt --strip --out guided.pt
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
    ap.add_argument("refiner", nargs="?", help="the run's refiner tensors")
    ap.add_argument("--strip", action="store_true", help="write the release without its refiner")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not args.strip and not args.refiner:
        raise SystemExit("give the run's refiner tensors, or --strip")
    model, ckpt = load_checkpoint(args.release, torch.device("cpu"))
    cfg = ckpt["model_config"]
    if args.strip:
        model.decoder = getattr(model.decoder, "base", model.decoder)
        save_checkpoint(Path(args.out), model, dataclasses.replace(cfg, refiner_width=0), epoch=ckpt["epoch"],
                        best_metric=ckpt["best_metric"], config=ckpt["config"], extras=ckpt["extras"], release=True)
        print(f"wrote {args.out} (no refiner)")
        return 0
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
