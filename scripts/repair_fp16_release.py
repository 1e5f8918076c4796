"""Repair a release file damaged by float16 overflow (format-1 releases up to version 0.1.0).

The old export stored every tensor as float16, so BatchNorm running variances of the VGG
taps above 65504 became inf and those channels were zeroed at inference. The weights are
intact; only those variance entries are lost. This re-estimates them: it runs the
training images (random crops, as in training) through the frozen encoder and each
damaged BatchNorm, averaging the batch statistics (BatchNorm's cumulative mode), and
replaces only the non-finite entries. Writes a float32 checkpoint.

Usage:
    python scripts/repair_fp16_release.py weights/colorizer.pt photos/train runs/old_repaired.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from LoadData import ColorizationDataset, find_images, make_loader  # noqa: E402
from ModelIO import build_model, model_config_from_dict, save_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("release", help="the damaged float16 release file")
    ap.add_argument("train_dir", help="the photos the model was trained on")
    ap.add_argument("output", help="repaired float32 checkpoint to write")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    raw = torch.load(args.release, map_location="cpu", weights_only=True)
    cfg = model_config_from_dict(raw["model_config"])
    model = build_model(cfg, "none", len(raw["extras"]["ab_bins"]))
    model.encoder.load_state_dict({k: v.float() for k, v in raw["encoder"].items()})
    decoder_sd = {k: v.float() if v.is_floating_point() else v for k, v in raw["decoder"].items()}
    model.decoder.load_state_dict(decoder_sd)
    damaged = {k: ~torch.isfinite(v) for k, v in decoder_sd.items() if v.is_floating_point() and not torch.isfinite(v).all()}
    print(f"{args.release}: {', '.join(f'{k} ({int(m.sum())} of {m.numel()})' for k, m in damaged.items()) or 'nothing'} non-finite")
    # Every damaged tensor is the running_var of a TapAdapter's input BatchNorm, which sees the raw tap.
    norms = {k.rsplit(".", 1)[0]: model.decoder.get_submodule(k.rsplit(".", 1)[0]) for k in damaged}
    for name in norms:
        if not name.startswith("adapters.") or not name.endswith(".norm"):
            raise ValueError(f"{name}: only the adapters' input BatchNorms can be re-estimated here")
    fresh = {name: torch.nn.BatchNorm2d(m.num_features, momentum=None) for name, m in norms.items()}
    torch.manual_seed(cfg.image_size)
    loader = make_loader(ColorizationDataset(find_images(args.train_dir), cfg.image_size, True), args.batch_size,
                         shuffle=True, workers=2, seed=0)
    with torch.no_grad():
        for batch in loader:
            if "L" not in batch:
                continue
            taps = model.encoder(batch["L"])
            for name, bn in fresh.items():
                bn.train()(taps[int(name.split(".")[1])])
    for k, mask in damaged.items():
        target = decoder_sd[k]
        target[mask] = fresh[k.rsplit(".", 1)[0]].running_var[mask]
        print(f"  {k}: re-estimated {int(mask.sum())} entries, now max {float(target.max()):.4g}")
    model.decoder.load_state_dict(decoder_sd)
    save_checkpoint(Path(args.output), model, cfg, epoch=raw["epoch"], best_metric=raw["best_metric"],
                    config=raw["config"], extras=raw["extras"])
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
