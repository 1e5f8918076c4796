"""Score ways of combining trained classification models, over a temperature sweep, without exporting each.

Each model's per-pixel log-probabilities over the ab bins, (N, Q, h, w), are computed once on a folder
of colour photos (at the model's working size) and cached as float16. A combination is then decoded
with the annealed mean at each temperature, laid over each photo's full-resolution L (the same
FullResolution path as ``--mode evaluate``) and scored: PSNR and ΔCF on the whole folder and on the
photos that also appear, by name, in ``--subset`` (the corpus's val_scenes/ is a subset of val/).

Combinations: ``a`` (one model), ``a+b`` (product of experts: the mean of log-probabilities, what
DecoderLayers.DecoderEnsemble computes), ``arith:a+b`` (the arithmetic mean of probabilities). A weight
soup is a model of its own: ``--soup NAME=A,B`` averages two checkpoints' decoder weights first.

Usage:
    python scripts/ensemble_probe.py --model old=runs/old_repaired.pt last=runs/g128_r09_e20/last.pt \
        --soup soup=old,last --combine old last old+last arith:old+last soup --temperatures 0.18 0.38 \
        --folder ../shared/data/colorize-corpus/val --subset ../shared/data/colorize-corpus/val_scenes
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import Quantization  # noqa: E402
from Evaluate import score as evaluate_row  # noqa: E402
from FullResolution import recombine_image, working_L  # noqa: E402
from Folders import load_batches  # noqa: E402
from Pictures import to_rgb8  # noqa: E402
from LoadData import find_images  # noqa: E402
from Metrics import summarise  # noqa: E402
from ModelIO import load_checkpoint  # noqa: E402

CPU = torch.device("cpu")


@torch.no_grad()
def log_probs(model: torch.nn.Module, size: int, images: dict[str, np.ndarray]) -> torch.Tensor:
    """(N, Q, h, w) float16 log-probabilities for ``images`` in name order."""
    model.eval()
    names, out = list(images), []
    for i in range(0, len(names), 8):
        L = torch.cat([working_L(images[n], size) for n in names[i:i + 8]])
        out.append(F.log_softmax(model(L).float(), dim=1).half())
    return torch.cat(out)


def souped(a: Path, b: Path) -> tuple[torch.nn.Module, dict]:
    """Checkpoint ``a`` with its decoder's floating weights and statistics averaged with ``b``'s."""
    model, ckpt = load_checkpoint(a, CPU)
    other, _ = load_checkpoint(b, CPU)
    theirs = other.decoder.state_dict()
    model.decoder.load_state_dict({k: (v.float() + theirs[k].float()) / 2 if v.is_floating_point() else v
                                   for k, v in model.decoder.state_dict().items()})
    return model, ckpt


def score(logp: torch.Tensor, bins: torch.Tensor, t: float, images: dict[str, np.ndarray],
          subset: set[str]) -> dict[str, tuple[float, float]]:
    """{"all" | "subset": (mean PSNR dB, ΔCF)} of the annealed mean at temperature ``t`` (Evaluate's rows)."""
    ab = Quantization.annealed_mean(logp.float(), bins, t)
    rows = [evaluate_row(recombine_image(img, ab_i.numpy()), to_rgb8(img), "probe", name)
            for (name, img), ab_i in zip(images.items(), ab)]
    result = {}
    for part, keep in (("all", rows), ("subset", [r for r in rows if r["file"] in subset])):
        if keep:
            summary = summarise(keep)[0]
            result[part] = (summary["psnr"], summary["delta_cf"])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="+", required=True, metavar="NAME=CKPT")
    ap.add_argument("--soup", nargs="*", default=[], metavar="NAME=A,B", help="average two --model decoders")
    ap.add_argument("--combine", nargs="+", required=True, help="NAME, A+B (product) or arith:A+B")
    ap.add_argument("--temperatures", nargs="+", type=float, default=[0.38])
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--subset", type=Path, default=None, help="a folder whose file names pick a subset")
    args = ap.parse_args(argv)
    paths = {k: Path(v) for k, v in (m.split("=", 1) for m in args.model)}
    images = {f.name: img for batch, _ in load_batches(find_images(args.folder), 8) for f, img in batch}
    subset = {f.name for f in find_images(args.subset)} if args.subset else set()
    loaded = {name: load_checkpoint(p, CPU) for name, p in paths.items()}
    for name, pair in (x.split("=", 1) for x in args.soup):
        loaded[name] = souped(*(paths[m] for m in pair.split(",")))
    logp = {name: log_probs(model, ckpt["model_config"].image_size, images) for name, (model, ckpt) in loaded.items()}
    bins = next(iter(loaded.values()))[1]["extras"]["ab_bins"]
    print(f"{len(images)} photos in {args.folder}, {len(subset & set(images))} of them in the subset")
    print("combination | T | subset PSNR | subset dCF | all PSNR | all dCF")
    for combo in args.combine:
        arith = combo.startswith("arith:")
        members = [logp[m] for m in combo.removeprefix("arith:").split("+")]
        joined = (torch.stack([m.float().exp() for m in members]).mean(0).log() if arith
                  else torch.stack([m.float() for m in members]).mean(0))
        for t in args.temperatures:
            r = score(joined, bins, t, images, subset)
            sub = r.get("subset", (float("nan"), float("nan")))
            print(f"{combo} | {t:g} | {sub[0]:.2f} | {sub[1]:.2f} | {r['all'][0]:.2f} | {r['all'][1]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
