"""Release files: a verified .pt release, and an ONNX graph for ONNX Runtime.

Owns turning training checkpoints into what users get:
  * ``assemble``: one checkpoint as it is, or several runs' decoders as one model on the shared
    frozen encoder (DecoderLayers.DecoderEnsemble), optionally with a new default temperature;
  * ``export_release``: a self-contained .pt without optimizer state, float16 where that is
    safe (ModelIO.release_state_dict). It refuses to write a file in which any tensor is not
    finite, or whose decoded ab on a fixed batch (the bundled examples at the working size)
    differs from the source checkpoint's by more than ``RELEASE_TOLERANCE`` Lab units.
  * ``export_onnx``: the model plus its decoding to ab (annealed mean for classification) as one
    ONNX graph with a dynamic batch and spatial size, checked against torch the same way.

Usage:
    report = export_release(Path("runs/x/last.pt"), Path("weights/colorizer.pt"))
    report = export_release([Path("runs/a/last.pt"), Path("runs/b/last.pt")], Path("weights/colorizer.pt"), 0.2)
    report = export_onnx(Path("weights/colorizer.pt"), Path("weights/colorizer.onnx"))
    python Engine.py --mode export --checkpoint runs/x/last.pt --output weights/colorizer.pt
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from DecoderLayers import ColorizationModel, DecoderEnsemble

from LoadData import find_images, load_rgb, normalize_lab, resize_to_square, rgb_to_lab, to_tensor
from ModelIO import atomic_write, decode_prediction, load_checkpoint, nonfinite_tensors, save_checkpoint
from References import LAB, ModelConfig, Paths

# What must agree between the runs of an ensemble for their decoders to share one encoder and decoding.
SHARED_CONFIG = ("image_size", "taps", "widths", "global_width", "loss", "ab_grid", "members", "decoder")

# Largest |ab| difference (Lab units, any pixel of the fixed batch) a release may show against its
# source. float16 conv weights move the decoded ab by about 0.01-0.1 units on average; an overflowed
# BatchNorm moves it by tens of units.
RELEASE_TOLERANCE = {"max": 2.0, "mean": 0.25}


class ExportError(ValueError):
    """The exported file would not reproduce its source; the message says how."""


def reference_batch(size: int, folder: Path | None = None) -> torch.Tensor:
    """The fixed batch releases are checked on: the bundled examples as L, (N, 1, size, size) in [-1, 1]."""
    files = find_images(folder or Paths().examples_dir)
    rgb = torch.stack([resize_to_square(to_tensor(load_rgb(f)), size) for f in files])
    return normalize_lab(rgb_to_lab(rgb))[0]


class ColorizerGraph(nn.Module):
    """The model and its decoding in one module: L (B, 1, H, W) in [-1, 1] -> ab (B, 2, h, w) in [-1, 1].

    h, w = H, W for regression; H/2, W/2 (the logits' scale) for classification.
    """

    def __init__(self, model: nn.Module, cfg: ModelConfig, bins: torch.Tensor | None) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        self.register_buffer("bins", bins if bins is not None else torch.zeros(0, 2), persistent=False)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        bins = self.bins if self.cfg.loss == "classification" else None
        return decode_prediction(self.model(L), self.cfg, bins)


def ab_difference(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Max and mean |a - b| of two ab tensors in network units, reported in Lab units."""
    d = (a.float() - b.float()).abs() * LAB.ab_scale
    return {"max": float(d.max()), "mean": float(d.mean())}


def check_within(diff: dict[str, float], tolerance: dict[str, float], what: str) -> None:
    """Raise ExportError unless every figure of ``diff`` is within ``tolerance``."""
    over = [f"{k} {diff[k]:.3f} > {tolerance[k]}" for k in tolerance if not diff[k] <= tolerance[k]]
    if over:
        raise ExportError(f"{what}: decoded ab differs from the source checkpoint by ({', '.join(over)}) "
                          "Lab units on the reference batch; not written")


def _check_members(sources: list[Path], loaded: list[tuple[nn.Module, dict]]) -> None:
    """Raise ValueError naming the file unless every run can join the first one's ensemble."""
    (first, ckpt0), cfg0 = loaded[0], loaded[0][1]["model_config"]
    if cfg0.loss != "classification" or cfg0.members != 1:
        raise ValueError(f"{sources[0]}: only single classification models can be combined")
    for src, (model, ckpt) in zip(sources[1:], loaded[1:]):
        cfg = ckpt["model_config"]
        differ = [k for k in SHARED_CONFIG if getattr(cfg, k) != getattr(cfg0, k)]
        if differ:
            raise ValueError(f"{src}: cannot join {sources[0]} in an ensemble, its {', '.join(differ)} differ")
        if not torch.equal(ckpt["extras"]["ab_bins"], ckpt0["extras"]["ab_bins"]):
            raise ValueError(f"{src}: cannot join {sources[0]} in an ensemble, its ab bins differ")
        # Releases store the encoder in float16, so equal at that precision is the same frozen VGG16.
        mine, theirs = model.encoder.state_dict(), first.encoder.state_dict()
        if any(not torch.equal(mine[k].half(), theirs[k].half()) for k in theirs):
            raise ValueError(f"{src}: cannot join {sources[0]} in an ensemble, its encoder weights differ")


def assemble(sources: Path | list[Path], temperature: float | None = None) -> tuple[nn.Module, ModelConfig, dict, dict]:
    """The model a release is made of: one checkpoint, or the decoders of several on the first one's encoder.

    Returns (model in eval mode on the CPU, its config with ``temperature`` as the new default
    when given, extras (ab bins and the first run's prior), the training record to store:
    {"epoch", "best_metric", "config"}; an ensemble's config lists its members' runs).
    """
    sources = [Path(s) for s in (sources if isinstance(sources, list) else [sources])]
    loaded = [load_checkpoint(s, torch.device("cpu")) for s in sources]
    model, ckpt = loaded[0]
    cfg = ckpt["model_config"]
    record = {"epoch": ckpt["epoch"], "best_metric": ckpt["best_metric"], "config": ckpt["config"]}
    if len(loaded) > 1:
        _check_members(sources, loaded)
        model = ColorizationModel(model.encoder, DecoderEnsemble([m.decoder for m, _ in loaded]))
        cfg = dataclasses.replace(cfg, members=len(loaded))
        record = {"epoch": max(c["epoch"] for _, c in loaded), "best_metric": float("inf"), "config": {
            "ensemble_of": [{"source": s.name, "epoch": c["epoch"], "config": c["config"]}
                            for s, (_, c) in zip(sources, loaded)]}}
    if temperature is not None:
        if not 0 < temperature <= 10:
            raise ValueError(f"--temperature {temperature}: give a value in (0, 10]")
        cfg = dataclasses.replace(cfg, temperature=float(temperature))
    return model.eval(), cfg, ckpt["extras"], record


@torch.no_grad()
def export_release(source: Path | list[Path], output: Path, temperature: float | None = None,
                   tolerance: dict[str, float] | None = None) -> dict:
    """Write ``output`` from the training checkpoint ``source`` (or several, as an ensemble), verified.

    The file is first written next to ``output`` under a temporary name, read back with
    ``weights_only=True`` exactly as users read it, checked against the float32 model
    assembled from the sources, and only then renamed onto ``output``. Raises ExportError
    (and leaves ``output`` untouched) if any check fails. Returns the figures.
    """
    tolerance = tolerance or RELEASE_TOLERANCE
    model, cfg, extras, record = assemble(source, temperature)
    bins = extras.get("ab_bins")
    L = reference_batch(cfg.image_size)
    want = ColorizerGraph(model, cfg, bins)(L)
    report: dict = {}

    def write_checked(tmp: str) -> None:
        save_checkpoint(Path(tmp), model, cfg, extras=extras, release=True, **record)
        raw = torch.load(tmp, map_location="cpu", weights_only=True)
        bad = nonfinite_tensors(raw)
        if bad:
            raise ExportError(f"{output}: {len(bad)} tensor(s) would not be finite (first: {bad[0]}); not written")
        released, _ = load_checkpoint(tmp, torch.device("cpu"))
        report.update(ab_difference(ColorizerGraph(released, cfg, bins)(L), want))
        check_within(report, tolerance, str(output))
        report["bytes"] = Path(tmp).stat().st_size
        report["float32_tensors"] = sorted(k for part in ("encoder", "decoder") for k, v in raw[part].items()
                                           if v.dtype == torch.float32)

    atomic_write(Path(output), write_checked)
    report["images"] = len(L)
    return report


@torch.no_grad()
def export_onnx(source: Path | list[Path], output: Path, temperature: float | None = None, opset: int = 18,
                tolerance: dict[str, float] | None = None) -> dict:
    """Write the model of checkpoint ``source`` (or ``assemble``'s ensemble) with its ab decoding as ONNX.

    Checked with ONNX Runtime against torch on the reference batch before it is renamed into place.

    Input "L": (batch, 1, S, S) float32 in [-1, 1], S fixed to the working size
    (``model_config.image_size``, which is all inference feeds it), batch dynamic. Output "ab":
    (batch, 2, h, w) in [-1, 1]. The working size, loss and temperature are stored as metadata.
    """
    import onnx
    import onnxruntime as ort

    tolerance = tolerance or RELEASE_TOLERANCE
    model, cfg, extras, _ = assemble(source, temperature)
    names = " + ".join(Path(s).name for s in (source if isinstance(source, list) else [source]))
    graph = ColorizerGraph(model, cfg, extras.get("ab_bins")).eval()
    L = reference_batch(cfg.image_size)
    want = graph(L)

    def write(tmp: str) -> None:
        torch.onnx.export(graph, (L[:2],), tmp, input_names=["L"], output_names=["ab"], opset_version=opset,
                          dynamic_shapes={"L": {0: torch.export.Dim("batch", min=1, max=4096)}},
                          dynamo=True, verbose=False)
        proto = onnx.load(tmp)
        for key, value in (("image_size", cfg.image_size), ("loss", cfg.loss), ("temperature", cfg.temperature),
                           ("source", names)):
            proto.metadata_props.add(key=key, value=str(value))
        onnx.save(proto, tmp)
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        report.update(ab_difference(torch.from_numpy(session.run(["ab"], {"L": L.numpy()})[0]), want))
        check_within(report, tolerance, str(output))

    report: dict = {}
    atomic_write(Path(output), write)
    report["bytes"] = Path(output).stat().st_size
    return report


def describe(report: dict) -> str:
    """One line for the command line."""
    return (f"{report['bytes'] / 2 ** 20:.1f} MiB; decoded ab vs the source on {report.get('images', 'the')} reference "
            f"images: max {report['max']:.3f}, mean {report['mean']:.4f} Lab units")

