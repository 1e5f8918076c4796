"""Release-file formats compared: size and output drift against the float32 source (a script, not a test).

Formats, each stored with torch.save and reloaded before measuring:
  * float32: everything as trained;
  * float16 everywhere: the old export (BatchNorm variances of the VGG taps overflow to inf);
  * float16 + float32 BatchNorm: what ``--mode export`` writes (ModelIO.release_state_dict);
  * BatchNorm folded into the convolutions, then float16: each conv -> BN pair and each tap
    normaliser -> 1x1 projection becomes one conv with a bias. The global-context normaliser
    feeds a max-pool, through which a negative scale cannot be folded, so it stays a float32 BN.
Drift is |ab| on the bundled examples at the working size, in Lab units, against float32.

With ``--onnx`` files (Export.export_onnx), also how long ONNX Runtime's CPU provider takes, at
each graph-optimisation level, to create a session and to run one forward pass at the working size,
and (at the default level) to colourise a 0.3 MP photo (640 x 480) end to end with
Inference.Colorizer (session creation included): medians of ``--repeats`` runs, each session
created afresh; and how long a fresh interpreter takes to import numpy, cv2 and onnxruntime.

Usage:
    python benchmarks/release_formats.py runs/my_run/last.pt
    python benchmarks/release_formats.py weights/colorizer.pt --onnx weights/colorizer.onnx float32.onnx
"""
from __future__ import annotations

import argparse
import copy
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from Export import ColorizerGraph, ab_difference, reference_batch  # noqa: E402
from ModelIO import load_checkpoint, release_state_dict  # noqa: E402


def size_and_reload(model: nn.Module, state_of) -> tuple[int, nn.Module]:
    """Bytes of torch.save(state_of(model)), and a copy of ``model`` loaded back from those bytes."""
    buf = io.BytesIO()
    torch.save({k: state_of(m) for k, m in (("encoder", model.encoder), ("decoder", model.decoder))}, buf)
    buf.seek(0)
    raw = torch.load(buf, weights_only=True)
    out = copy.deepcopy(model)
    out.encoder.load_state_dict({k: v.float() for k, v in raw["encoder"].items()})
    out.decoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in raw["decoder"].items()})
    return buf.getbuffer().nbytes, out


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d, bn_first: bool) -> nn.Conv2d:
    """One conv equal to conv -> bn (or, for a 1x1 conv, bn -> conv) in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    w = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    if bn_first:  # W (s x + t) + b = (W s) x + (W t + b)
        out.weight.data = w * scale.view(1, -1, 1, 1)
        out.bias.data = bias + (w.sum(dim=(2, 3)) @ shift)
    else:  # s (W x + b) + t
        out.weight.data = w * scale.view(-1, 1, 1, 1)
        out.bias.data = scale * bias + shift
    return out


def folded(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        for seq in [mod for mod in m.decoder.modules() if isinstance(mod, nn.Sequential)]:
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i], seq[i + 1] = fold(seq[i], seq[i + 1], bn_first=False), nn.Identity()
        for decoder in getattr(m.decoder, "members", [m.decoder]):  # an ensemble's decoders, or the one
            for adapter in decoder.adapters:
                adapter.proj[0] = fold(adapter.proj[0], adapter.norm, bn_first=True)
                adapter.norm = nn.Identity()
    return m


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn()``."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def onnx_timings(files: list[Path], repeats: int) -> None:
    """Print session-creation, forward and 0.3 MP colourisation medians for each ONNX file."""
    import numpy as np
    import onnxruntime as ort

    from Inference import Colorizer
    levels = {"disable all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all (default)": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    photo = np.random.default_rng(0).integers(0, 256, (480, 640), dtype=np.uint8)
    print(f"\nONNX Runtime {ort.__version__}, CPU provider, median of {repeats} runs, seconds")
    imports = [sys.executable, "-c", "import numpy, cv2, onnxruntime"]  # what a torch-free install loads
    t_imports = median_seconds(lambda: subprocess.run(imports, check=True), repeats)
    print(f"a fresh interpreter importing numpy, cv2 and onnxruntime: {t_imports:.3f}")
    print("| file | MiB | optimisation level | session creation | forward, 1 image | 0.3 MP colourised |")
    print("|---|---:|---|---:|---:|---:|")
    for f in files:
        for name, level in levels.items():
            opts = ort.SessionOptions()
            opts.graph_optimization_level = level
            create = lambda: ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"])  # noqa: E731
            session = create()
            size = int(session.get_modelmeta().custom_metadata_map["image_size"])
            L = np.zeros((1, 1, size, size), np.float32)
            session.run(["ab"], {"L": L})  # first run allocates; not what a second photo costs
            t_create = median_seconds(create, repeats)
            t_run = median_seconds(lambda: session.run(["ab"], {"L": L}), repeats)
            whole = ""
            if level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL:  # what Inference uses
                import torch
                t_whole = median_seconds(lambda: Colorizer.from_checkpoint(f, torch.device("cpu")).colorize([photo]),
                                         repeats)
                whole = f"{t_whole:.3f}"
            print(f"| {f.name} | {f.stat().st_size / 2 ** 20:.1f} | {name} | {t_create:.3f} | {t_run:.3f} | {whole} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="a training checkpoint or release .pt")
    ap.add_argument("--onnx", type=Path, nargs="*", default=[], help="ONNX exports to time")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    checkpoint = args.checkpoint
    model, ckpt = load_checkpoint(checkpoint, torch.device("cpu"))
    cfg, bins = ckpt["model_config"], ckpt["extras"].get("ab_bins")
    L = reference_batch(cfg.image_size)
    with torch.no_grad():
        want = ColorizerGraph(model, cfg, bins)(L)
    half_all = lambda m: {k: v.half() if v.is_floating_point() else v for k, v in m.state_dict().items()}  # noqa: E731
    half_safe = release_state_dict
    full = lambda m: m.state_dict()  # noqa: E731
    rows = [("float32", model, full), ("float16 everywhere (old export)", model, half_all),
            ("float16 + float32 BatchNorm (--mode export)", model, half_safe),
            ("BatchNorm folded, float16 (+ one float32 BN)", folded(model), half_safe)]
    print(f"{checkpoint}: drift of decoded ab on {len(L)} reference images, Lab units")
    print("| format | file (MiB) | max drift | mean drift | non-finite tensors |")
    print("|---|---:|---:|---:|---:|")
    for name, m, state_of in rows:
        nbytes, back = size_and_reload(m, state_of)
        bad = sum(int(not torch.isfinite(v).all()) for v in back.state_dict().values() if v.is_floating_point())
        with torch.no_grad():
            d = ab_difference(ColorizerGraph(back, cfg, bins)(L), want)
        print(f"| {name} | {nbytes / 2 ** 20:.2f} | {d['max']:.3f} | {d['mean']:.4f} | {bad} |")
    if args.onnx:
        onnx_timings(args.onnx, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
