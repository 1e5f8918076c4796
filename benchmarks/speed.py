"""Speed and memory figures for the colourizer on the current device (a script, not a test).

Prints: parameter counts; GFLOPs per 256x256 image; forward-only inference and training
(forward + backward + AdamW on the decoder) throughput at 128, 224 and 256; ONNX Runtime
against torch at the working size and at 256 (same run, same inputs); end-to-end file-to-file
throughput on a folder; peak memory. Each figure is the median of --repeats timed runs after
--warmup runs; ratios come from the same run. On CUDA, bf16 autocast and channels_last are used,
and --compile adds torch.compile.

Usage:
    python benchmarks/speed.py [--checkpoint weights/colorizer.pt] [--device auto] [--sizes 128 224 256]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from Distributed import resolve_device  # noqa: E402
from Folders import colorize_paths  # noqa: E402
from Inference import Colorizer  # noqa: E402
from LoadData import find_images  # noqa: E402
from ModelIO import autocast  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def inference_rate(model, device, size: int, batch: int, warmup: int, repeats: int) -> float:
    x = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.inference_mode(), autocast(device):
            model(x)
    return batch / timed(forward, device, warmup, repeats)


def training_rate(model, device, size: int, batch: int, warmup: int, repeats: int, compile_: bool) -> float:
    opt = torch.optim.AdamW(model.decoder.parameters(), lr=1e-4)
    L = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    if device.type == "cuda":
        L = L.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(device):
        target = model.eval()(L).float()
    forward = torch.compile(model) if compile_ else model

    def step():
        with autocast(device):
            loss = (forward(L).float() - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.train()
    rate = batch / timed(step, device, warmup, repeats)
    model.eval()
    return rate


def onnx_ratio(checkpoint: str, model, device, sizes: list[int], batch: int, warmup: int, repeats: int) -> None:
    """ONNX Runtime (CPU provider) against torch on the same inputs, at each size (one export per size)."""
    try:
        import onnxruntime as ort
        from Export import ColorizerGraph
    except ImportError as e:
        print(f"onnx: skipped ({e})")
        return
    from ModelIO import load_checkpoint

    cpu_model, ckpt = load_checkpoint(checkpoint, torch.device("cpu"))
    graph = ColorizerGraph(cpu_model, ckpt["model_config"], ckpt["extras"].get("ab_bins")).eval()
    for size in sizes:
        x = torch.rand(batch, 1, size, size) * 2 - 1
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/m.onnx"
            torch.onnx.export(graph, (x,), path, input_names=["L"], output_names=["ab"], dynamo=True, verbose=False)
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            t_ort = timed(lambda: session.run(["ab"], {"L": x.numpy()}), torch.device("cpu"), warmup, repeats)

        def torch_fwd():
            with torch.inference_mode():
                graph(x)
        t_torch = timed(torch_fwd, torch.device("cpu"), warmup, repeats)
        print(f"onnx runtime vs torch, CPU, {size}x{size}, batch {batch}: ORT {batch / t_ort:.2f} images/s, torch "
              f"{batch / t_torch:.2f} images/s, ORT/torch speed ratio {t_torch / t_ort:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "weights" / "colorizer.pt"))
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--folder", default=str(ROOT / "examples"), help="images for the end-to-end figure")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224, 256])
    ap.add_argument("--batch", type=int, default=0, help="batch for the size sweep (0: 16 on CPU, 256 on CUDA)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    ap.add_argument("--skip-onnx", action="store_true")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    batch = args.batch or (256 if device.type == "cuda" else 16)
    colorizer = Colorizer.from_checkpoint(args.checkpoint, device)
    model, cfg = colorizer.model, colorizer.cfg
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; model {Path(args.checkpoint).name} "
          f"(loss {cfg.loss}, working size {cfg.image_size})")
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    print(f"parameters: encoder {enc / 1e6:.2f} M (frozen), decoder {dec / 1e6:.2f} M (trained), total {(enc + dec) / 1e6:.2f} M")
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 1, 256, 256, device=device))
    print(f"compute: {fc.get_total_flops() / 1e9:.1f} GFLOPs per 256x256 image (forward; 1 multiply-add = 2 FLOPs)")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for size in args.sizes:
        inf = inference_rate(model, device, size, batch, args.warmup, args.repeats)
        one = inference_rate(model, device, size, 1, args.warmup, args.repeats)
        tr = training_rate(model, device, size, batch, args.warmup, args.repeats, args.compile)
        print(f"{size}x{size}: inference {inf:8.1f} images/s at batch {batch} ({one:.1f} at batch 1); "
              f"training {tr:8.1f} images/s at batch {batch}", flush=True)
    if not args.skip_onnx:
        onnx_ratio(args.checkpoint, model, device, sorted({cfg.image_size, 256}), 8, args.warmup, args.repeats)
    files = find_images(args.folder)
    with tempfile.TemporaryDirectory() as out:
        sec = timed(lambda: colorize_paths(colorizer, files, Path(args.folder), Path(out), progress=False),
                    device, 1, max(1, args.repeats // 2))
    print(f"inference, end to end (decode, colourise at full size, encode PNG): {len(files) / sec:.2f} images/s "
          f"on {len(files)} files of {args.folder}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: process RSS {rss:.0f} MiB" + (
        f"; CUDA allocated {torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MiB" if device.type == "cuda" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
