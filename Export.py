"""Release files: a verified .pt release, and an ONNX graph for ONNX Runtime.

Owns turning training checkpoints into what users get:
  * ``assemble``: one checkpoint as it is, or several runs' decoders as one model on the shared
    frozen encoder (DecoderLayers.DecoderEnsemble), optionally with a new default temperature;
  * ``export_release``: a self-contained .pt without optimizer state, float16 where that is
    safe (ModelIO.release_state_dict). It refuses to write a file in which any tensor is not
    finite, or whose decoded ab on a fixed batch (the bundled examples at the working size)
    differs from the source checkpoint's by more than ``RELEASE_TOLERANCE`` Lab units.
  * ``export_onnx``: the model plus its decoding to ab (annealed mean for classification) as one
    ONNX graph with a dynamic batch, for ONNX Runtime without torch. By default the initializers
    that float16 holds exactly (a release's conv weights) are stored in float16 behind a Cast, so
    the file is half the float32 size and computes the same float32 values. Refused if any
    initializer is not finite or ONNX Runtime's output differs from torch's by more than
    ``ONNX_TOLERANCE``. ``weights/colorizer.onnx`` is this export of ``weights/colorizer.pt``.

Usage:
    report = export_release(Path("runs/x/last.pt"), Path("weights/colorizer.pt"))
    report = export_release([Path("runs/a/last.pt"), Path("runs/b/last.pt")], Path("weights/colorizer.pt"), 0.2)
    report = export_onnx(Path("weights/colorizer.pt"), Path("weights/colorizer.onnx"))
    python Engine.py --mode export --checkpoint runs/x/last.pt --output weights/colorizer.pt
    python Engine.py --mode export --checkpoint weights/colorizer.pt --output weights/colorizer.onnx
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from DecoderLayers import ColorizationModel, DecoderEnsemble, Hints

from LoadData import find_images, load_rgb, normalize_lab, resize_to_square, rgb_to_lab, to_tensor
from ModelIO import (atomic_write, decode_prediction, distribution_and_entropy, load_checkpoint, nonfinite_tensors,
                     save_checkpoint)
from References import LAB, VERSION, ModelConfig, Paths

# What must agree between the runs of an ensemble for their decoders to share one encoder and decoding.
SHARED_CONFIG = ("image_size", "taps", "widths", "global_width", "loss", "ab_grid", "members", "decoder", "guided", "hint_features")

# Largest |ab| difference (Lab units, any pixel of the fixed batch) a release may show against its
# source. float16 conv weights move the decoded ab by about 0.01-0.1 units on average; an overflowed
# BatchNorm moves it by tens of units.
RELEASE_TOLERANCE = {"max": 2.0, "mean": 0.25}

# Largest |ab| difference (Lab units) an ONNX file may show against torch on the reference batch.
# ONNX Runtime computes in float32 like torch and float16 storage here is exact, so honest files
# differ by far less than 0.01 units; anything near these bounds is a broken graph or a broken weight.
ONNX_TOLERANCE = {"max": 0.5, "mean": 0.02}
ENTROPY_TOLERANCE = 0.01  # largest difference of the normalised entropy (in [0, 1]) from torch's
GRAPH_INPUTS = ("L", "hints", "global_hint")  # an ONNX export's inputs (the last two for guided models only)
ONNX_WEIGHTS = ("float16", "float32")  # how export_onnx stores the initializers; see store_float16
MIN_FLOAT16_ELEMENTS = 64  # a Cast node for a smaller tensor costs about what it saves


class ExportError(ValueError):
    """The exported file would not reproduce its source; the message says how."""


def reference_batch(size: int, folder: Path | None = None) -> torch.Tensor:
    """The fixed batch releases are checked on: the bundled examples as L, (N, 1, size, size) in [-1, 1]."""
    files = find_images(folder or Paths().examples_dir)
    rgb = torch.stack([resize_to_square(to_tensor(load_rgb(f)), size) for f in files])
    return normalize_lab(rgb_to_lab(rgb))[0]


def reference_hints(n: int, size: int, bins: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed synthetic hints for checking a guided export: (local (n, 3, size, size), global (n, bins + 1)).

    Each image gets 12 patches of random colours (ab in [-0.6, 0.6] network units), and every other image a
    random global distribution with its flag, so every hint input of the graph is exercised.
    """
    g = torch.Generator().manual_seed(seed)
    local = torch.zeros(n, 3, size, size)
    for i in range(n):
        for _ in range(12):
            s = int(torch.randint(1, 10, (1,), generator=g))
            y, x = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
            local[i, :2, y:y + s, x:x + s] = (torch.rand(2, 1, 1, generator=g) - 0.5) * 1.2
            local[i, 2, y:y + s, x:x + s] = 1.0
    glob = torch.zeros(n, bins + 1)
    dist = torch.rand(n, bins, generator=g) ** 8
    glob[::2, :-1] = (dist / dist.sum(dim=1, keepdim=True))[::2]
    glob[::2, -1] = 1.0
    return local, glob


class ColorizerGraph(nn.Module):
    """The model and its decoding in one module: L (B, 1, H, W) in [-1, 1] -> ab (B, 2, h, w) in [-1, 1].

    h, w = H, W for regression; H/2, W/2 (the logits' scale) for classification. A guided model also takes
    ``hints`` (B, 3, H, W) and ``global_hint`` (B, Q + 1) (DecoderLayers.Hints); with ``entropy`` the graph
    also returns the colour distribution's normalised entropy (B, 1, h, w) in [0, 1] and the distribution itself,
    "probs" (B, Q, h, w) in [0, 1] (classification only; the web page's suggested colours read it). An ONNX
    Runtime caller that asks only for "ab" and "entropy" gets no copy of it.
    """

    def __init__(self, model: nn.Module, cfg: ModelConfig, bins: torch.Tensor | None, entropy: bool = False) -> None:
        super().__init__()
        self.model, self.cfg, self.entropy = model, cfg, entropy and cfg.loss == "classification"
        self.register_buffer("bins", bins if bins is not None else torch.zeros(0, 2), persistent=False)

    def forward(self, L: torch.Tensor, hints: torch.Tensor | None = None,
                global_hint: torch.Tensor | None = None):
        bins = self.bins if self.cfg.loss == "classification" else None
        pred = self.model(L, None if hints is None else Hints(hints, global_hint))
        ab = decode_prediction(pred, self.cfg, bins)
        if not self.entropy:
            return ab
        probs, entropy = distribution_and_entropy(pred)
        return ab, entropy, probs


def graph_inputs(cfg: ModelConfig, L: torch.Tensor, n_bins: int) -> tuple[torch.Tensor, ...]:
    """The inputs an export is checked on: (L,) or, for a guided model, (L, hints, global_hint) for the batch twice,
    first with no hints (all zero), then with ``reference_hints``."""
    if not cfg.guided:
        return (L,)
    local, glob = reference_hints(len(L), L.shape[-1], n_bins)
    return (torch.cat((L, L)), torch.cat((torch.zeros_like(local), local)), torch.cat((torch.zeros_like(glob), glob)))


def ab_difference(a, b) -> dict[str, float]:
    """Max and mean |a - b| of two ab arrays (torch tensors or numpy, network units), reported in Lab units."""
    d = (torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs() * LAB.ab_scale
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
    refined = next((s for s, (_, c) in zip(sources, loaded) if c["model_config"].refiner_width), None)
    if refined is not None:
        raise ValueError(f"{refined}: a model with a hint refiner cannot join an ensemble; combine the runs without "
                         "one, then train a refiner on the ensemble (--refiner)")
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
    inputs = graph_inputs(cfg, reference_batch(cfg.image_size), 0 if bins is None else len(bins))
    want = ColorizerGraph(model, cfg, bins)(*inputs)
    report: dict = {}

    def write_checked(tmp: str) -> None:
        save_checkpoint(Path(tmp), model, cfg, extras=extras, release=True, **record)
        raw = torch.load(tmp, map_location="cpu", weights_only=True)
        bad = nonfinite_tensors(raw)
        if bad:
            raise ExportError(f"{output}: {len(bad)} tensor(s) would not be finite (first: {bad[0]}); not written")
        released, _ = load_checkpoint(tmp, torch.device("cpu"))
        report.update(ab_difference(ColorizerGraph(released, cfg, bins)(*inputs), want))
        check_within(report, tolerance, str(output))
        report["bytes"] = Path(tmp).stat().st_size
        report["float32_tensors"] = sorted(k for part in ("encoder", "decoder") for k, v in raw[part].items()
                                           if v.dtype == torch.float32)

    atomic_write(Path(output), write_checked)
    report["images"] = len(inputs[0])
    return report


def store_float16(proto) -> dict[str, int]:
    """Store every float32 initializer that float16 holds exactly as float16, behind a Cast to float32.

    Compute stays float32 (ONNX Runtime folds the Casts into float32 constants when the session
    is created) and no value changes: a release .pt already holds its conv weights in float16, so
    those halve, while BatchNorm statistics (variances above float16's range) stay float32.
    Modifies ``proto`` (an onnx.ModelProto) in place; returns {"float16": n, "float32": n} tensors.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph, casts, counts = proto.graph, [], {"float16": 0, "float32": 0}
    for i, t in enumerate(graph.initializer):
        if t.data_type != TensorProto.FLOAT:
            continue
        a = numpy_helper.to_array(t)
        with np.errstate(over="ignore"):
            half = a.astype(np.float16)
        exact = a.size >= MIN_FLOAT16_ELEMENTS and np.array_equal(half.astype(np.float32), a)
        counts["float16" if exact else "float32"] += 1
        if exact:
            name = t.name  # t is the stored message itself: read its name before replacing it
            graph.initializer[i].CopyFrom(numpy_helper.from_array(half, f"{name}.float16"))
            casts.append(helper.make_node("Cast", [f"{name}.float16"], [name], to=TensorProto.FLOAT,
                                          name=f"{name}.cast"))
    for j, node in enumerate(casts):  # ahead of every consumer, so the graph stays topologically sorted
        graph.node.insert(j, node)
    return counts


def nonfinite_initializers(proto) -> list[str]:
    """Names of the floating initializers of an onnx.ModelProto holding NaN or inf; [] if all are finite."""
    import numpy as np
    from onnx import numpy_helper

    arrays = ((t.name, numpy_helper.to_array(t)) for t in proto.graph.initializer)
    return [n for n, a in arrays if a.dtype.kind == "f" and not np.isfinite(a).all()]


def onnx_proto(graph: nn.Module, inputs: tuple[torch.Tensor, ...], opset: int):
    """``graph`` traced on ``inputs`` (L, and a guided model's hints) by the dynamo exporter as an onnx.ModelProto: constants folded, BatchNorm kept.

    The exporter's own optimiser would also fold each BatchNorm into its convolution, which turns
    float16-exact conv weights into values only float32 holds; ONNX Runtime does that fusion
    itself at session creation, so only constant folding is done here.
    """
    from onnxscript import optimizer

    names = GRAPH_INPUTS[:len(inputs)]
    batch = torch.export.Dim("batch", min=1, max=4096)
    outputs = ["ab", "entropy", "probs"] if graph.entropy else ["ab"]
    program = torch.onnx.export(graph, tuple(x[:2] for x in inputs), None, input_names=list(names),
                                output_names=outputs, opset_version=opset,
                                dynamic_shapes={n: {0: batch} for n in names}, dynamo=True, optimize=False,
                                verbose=False)
    optimizer.fold_constants(program.model)
    optimizer.remove_unused_nodes(program.model)
    proto = program.model_proto
    # The exporter labels each node with the Python stack that made it (absolute paths of this machine, about
    # 1 MB): debugging aids that users' files need not carry. Subgraphs too (an If's branches).
    for graph in [proto.graph, *proto.functions]:
        strip_node_labels(graph.node)
    return proto


def strip_node_labels(nodes) -> None:
    """Clear ``metadata_props`` and ``doc_string`` of ONNX ``nodes`` and of every node in their subgraphs."""
    for node in nodes:
        del node.metadata_props[:]
        node.doc_string = ""
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.HasField("g") else attr.graphs:
                strip_node_labels(sub.node)


@torch.no_grad()
def export_onnx(source: Path | list[Path], output: Path, temperature: float | None = None, opset: int = 18,
                tolerance: dict[str, float] | None = None, weights: str = "float16") -> dict:
    """Write the model of checkpoint ``source`` (or ``assemble``'s ensemble) with its ab decoding as ONNX.

    Input "L": (batch, 1, S, S) float32 in [-1, 1], S fixed to the working size
    (``model_config.image_size``, which is all inference feeds it), batch dynamic; a guided model also takes
    "hints" (batch, 3, S, S) and "global_hint" (batch, Q + 1) (DecoderLayers.Hints; zeros = none). Outputs
    "ab": (batch, 2, h, w) in [-1, 1] and, for classification, "entropy" (batch, 1, h, w) in [0, 1]
    (``normalised_entropy``) and "probs" (batch, Q, h, w), the colour distribution. Metadata: image_size, loss,
    temperature, members, guided, ab_bins (JSON, Lab units), weights, version (of this package), source.
    ``weights="float16"`` stores the initializers float16 holds exactly in float16 (``store_float16``; half the size for a release .pt), "float32" all
    in float32. The file is written under a temporary name, refused (ExportError, nothing left
    behind) if an initializer is not finite or ONNX Runtime's CPU output on the reference batch
    differs from torch's by more than ``tolerance`` (default ONNX_TOLERANCE), then renamed.
    Returns the figures: max/mean drift (Lab units), bytes, float16/float32 initializer counts.
    """
    import onnx
    import onnxruntime as ort

    if weights not in ONNX_WEIGHTS:
        raise ValueError(f"weights={weights!r}: choose one of {', '.join(ONNX_WEIGHTS)}")
    tolerance = tolerance or ONNX_TOLERANCE
    model, cfg, extras, _ = assemble(source, temperature)
    names = " + ".join(Path(s).name for s in (source if isinstance(source, list) else [source]))
    bins = extras.get("ab_bins")
    graph = ColorizerGraph(model, cfg, bins, entropy=True).eval()
    inputs = graph_inputs(cfg, reference_batch(cfg.image_size), 0 if bins is None else len(bins))
    want = graph(*inputs)
    want_ab, want_entropy, want_probs = want if graph.entropy else (want, None, None)
    proto = onnx_proto(graph, inputs, opset)
    report: dict = store_float16(proto) if weights == "float16" else {}
    bins_json = json.dumps([[round(float(v), 4) for v in row] for row in bins]) if bins is not None else "[]"
    for key, value in (("image_size", cfg.image_size), ("loss", cfg.loss), ("temperature", cfg.temperature),
                       ("members", cfg.members), ("guided", int(cfg.guided)), ("ab_bins", bins_json),
                       ("weights", weights), ("version", VERSION), ("source", names)):
        proto.metadata_props.add(key=key, value=str(value))

    def write(tmp: str) -> None:
        onnx.save(proto, tmp)
        written = onnx.load(tmp)  # what users get, read back
        bad = nonfinite_initializers(written)
        if bad:
            raise ExportError(f"{output}: {len(bad)} initializer(s) would not be finite (first: {bad[0]}); not written")
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        got = session.run(None, {n: x.numpy() for n, x in zip(GRAPH_INPUTS, inputs)})
        report.update(ab_difference(torch.from_numpy(got[0]), want_ab))
        check_within(report, tolerance, str(output))
        if cfg.guided:  # the hint-free half alone: a graph may branch on "any hint in the batch" (RefinedDecoder)
            n = len(inputs[0]) // 2
            alone = session.run(["ab"], {k: x[:n].numpy() for k, x in zip(GRAPH_INPUTS, inputs)})[0]
            check_within(ab_difference(torch.from_numpy(alone), want_ab[:n]), tolerance, f"{output} (no hints)")
        if want_entropy is not None:
            report["entropy_max"] = float((torch.from_numpy(got[1]) - want_entropy).abs().max())
            if not report["entropy_max"] <= ENTROPY_TOLERANCE:
                raise ExportError(f"{output}: its entropy output differs from the source checkpoint's by "
                                  f"{report['entropy_max']:.4f} (> {ENTROPY_TOLERANCE}); not written")
            report["probs_max"] = float((torch.from_numpy(got[2]) - want_probs).abs().max())
            if not report["probs_max"] <= ENTROPY_TOLERANCE:
                raise ExportError(f"{output}: its colour distribution differs from the source checkpoint's by "
                                  f"{report['probs_max']:.4f} (> {ENTROPY_TOLERANCE}); not written")
        report["bytes"] = Path(tmp).stat().st_size

    atomic_write(Path(output), write)
    report["images"] = len(inputs[0])
    return report


def describe(report: dict) -> str:
    """One line for the command line."""
    stored = f" ({report['float16']} initializers stored float16, exactly)" if report.get("float16") else ""
    return (f"{report['bytes'] / 2 ** 20:.1f} MiB{stored}; decoded ab vs the source on {report.get('images', 'the')} "
            f"reference images: max {report['max']:.3f}, mean {report['mean']:.4f} Lab units")

