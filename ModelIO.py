"""Model assembly and checkpoint files: building the network, reading its output, saving and loading it.

Owns
  * ``build_model``: the frozen VGG16 encoder plus a fresh decoder, from a ModelConfig;
  * ``decode_prediction``: the model's raw output -> ab in [-1, 1] (the one decoding path that
    training, evaluation, inference and export share);
  * ``autocast`` / ``amp_dtype``: the one mixed-precision policy (bf16 on CUDA, fp32 on CPU);
  * checkpoints: self-contained, written atomically (a full disk is one ``DiskFullError`` line naming the
    file), read with ``weights_only=True`` (a dict without the keys it needs is one line naming them), and the
    release precision policy (``release_state_dict``) that keeps in float32 whatever float16
    cannot hold (BatchNorm statistics of the VGG taps reach 1.6e6; float16 stops at 65504).

Usage:
    model = build_model(cfg, "vgg16_features_imagenet.pth")
    save_checkpoint(Path("runs/x/last.pt"), model, cfg, optimizer=opt, epoch=3)
    model, ckpt = load_checkpoint("runs/x/last.pt", torch.device("cpu"))
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import Quantization
from DecoderLayers import ColorizationModel, Decoder, DecoderEnsemble
from EncoderLayers import FrozenVGG16Encoder, load_vgg16_features
from HintSampling import HINT_LAYERS
from ImageIO import atomic_write, disk_full_as_error
from RefinerLayers import HintRefiner, RefinedDecoder
from References import CHECKPOINT_FORMAT, ROOT, VERSION, ModelConfig

FP16_MAX = float(torch.finfo(torch.float16).max)
READABLE_FORMATS = (1, CHECKPOINT_FORMAT)  # format 1 had no "progress" (mid-epoch position)


# ----------------------------------------------------------------------------- the model

def build_model(cfg: ModelConfig, backbone: str | Path | None, n_bins: int | None = None) -> ColorizationModel:
    """Frozen VGG16 encoder (weights from ``backbone``, see EncoderLayers) + fresh decoder.

    A classification model has ``n_bins`` outputs (default: the bins of ``cfg.ab_grid``);
    with ``cfg.members`` > 1 the decoder is a DecoderEnsemble of that many.
    """
    encoder = FrozenVGG16Encoder(load_vgg16_features(backbone), cfg.taps)
    out = 2
    if cfg.loss == "classification":
        out = n_bins or Quantization.num_bins(cfg.ab_grid)
    decoders = [Decoder(cfg.taps, dict(cfg.widths), cfg.global_width, out_channels=out, block=cfg.decoder,
                        guided=cfg.guided, hint_features=cfg.hint_features) for _ in range(cfg.members)]
    decoder = decoders[0] if cfg.members == 1 else DecoderEnsemble(decoders)
    if cfg.refiner_width:  # its bins are a buffer: the checkpoint's (or Refining.py's) fill it
        decoder = RefinedDecoder(decoder, HintRefiner(out, cfg.temperature, cfg.refiner_width, cfg.ab_grid))
    return ColorizationModel(encoder, decoder)


def decode_prediction(pred: torch.Tensor, cfg: ModelConfig, bins: torch.Tensor | None = None,
                      temperature: float | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Model output -> ab in network units, (B, 2, h, w) float32 in [-1, 1] (differentiable).

    Regression output is already ab. Classification logits (B, Q, h, w) are decoded
    with the annealed mean at ``temperature`` (default: the config's) over ``bins`` (Q, 2).
    ``size`` (H, W) resizes the result bilinearly, e.g. to the target's size in training.
    """
    if cfg.loss != "classification":
        ab = pred.float()
    else:
        t = cfg.temperature if temperature is None else temperature
        ab = Quantization.annealed_mean(pred.float(), bins, t)
    if size is not None:
        ab = F.interpolate(ab, size=size, mode="bilinear", align_corners=False)
    return ab


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Classification logits (B, Q, h, w) -> the entropy of their colour distribution over log Q, (B, 1, h, w) in
    [0, 1]: 0 where the model is sure of one colour, 1 where every colour is as likely."""
    return distribution_and_entropy(logits)[1]


def distribution_and_entropy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification logits (B, Q, h, w) -> (the colour distribution, softmax at temperature 1, (B, Q, h, w) in
    [0, 1] summing to 1 over Q; ``normalised_entropy`` (B, 1, h, w)), sharing one log-softmax."""
    logp = torch.log_softmax(logits.float(), dim=1)
    probs = logp.exp()
    return probs, -(probs * logp).sum(dim=1, keepdim=True) / float(torch.log(torch.tensor(float(logits.shape[1]))))


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16; fp32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The one mixed-precision context: bf16 (or fp16) autocast on CUDA, nothing on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype(device))


def to_builtin(value):
    """Dataclass/Path/tuple values -> plain lists/str so ``weights_only=True`` can load them.

    Paths inside the repository are stored relative to it, so a checkpoint names no
    folder of the machine it was made on.
    """
    if isinstance(value, (str, Path)) and str(value).startswith(str(ROOT) + os.sep):
        return str(Path(value).relative_to(ROOT))
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def known_fields(cls, d: dict) -> dict:
    """The entries of ``d`` that are fields of the dataclass ``cls`` (a checkpoint may hold older or newer keys)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def model_config_from_dict(d: dict) -> ModelConfig:
    """Rebuild a ModelConfig saved by ``save_checkpoint`` (lists back to tuples)."""
    d = known_fields(ModelConfig, d)
    d["taps"] = tuple(d["taps"])
    d["widths"] = tuple((str(k), int(v)) for k, v in d["widths"])
    return ModelConfig(**d)


def release_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` for a release file: float16 where that is safe, float32 where not.

    BatchNorm parameters and running statistics always stay float32 (they are tiny, and the
    variances of the VGG taps exceed float16's range). Any other tensor that would overflow
    float16 stays float32 too. The conv and linear weights (nearly all the bytes) become float16.
    """
    keep32 = {f"{name}.{key}" if name else key
              for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              for key in m.state_dict()}
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        fits = v.numel() > 0 and bool(v.abs().max() < FP16_MAX)
        if v.is_floating_point() and k not in keep32 and fits:
            v = v.half()
        out[k] = v
    return out


def nonfinite_tensors(state: dict) -> list[str]:
    """Names of the floating tensors (nested dicts searched) holding NaN or inf; [] if all are finite."""
    bad = []
    for k, v in state.items():
        if isinstance(v, dict):
            bad += [f"{k}.{n}" for n in nonfinite_tensors(v)]
        elif isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad.append(k)
    return bad


def save_checkpoint(path: Path, model: ColorizationModel, cfg: ModelConfig, *, optimizer=None, scaler=None,
                    epoch: int = 0, best_metric: float = float("inf"), config: dict | None = None,
                    extras: dict | None = None, release: bool = False, trainable: nn.Module | None = None,
                    progress: dict | None = None, gan: dict | None = None) -> None:
    """Write a self-contained checkpoint atomically.

    Holds encoder and decoder weights, optimizer and scaler state (None for a release
    file), epoch, best metric, the resolved config, the format version, ``extras`` (e.g.
    the ab bins and their prior for a classification model) and ``progress`` (position
    inside an epoch, for mid-epoch resume) and ``gan`` (a GAN run's discriminator, its optimizer and
    counters: Adversarial.Adversary.state_dict; releases leave it out). ``release`` applies ``release_state_dict``
    (about half the size, BatchNorm kept in float32). ``trainable`` is the module whose
    weights are stored as the decoder (default ``model.decoder``; a DDP wrapper's module).
    """
    decoder = trainable if trainable is not None else model.decoder
    weights = release_state_dict if release else (lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()})
    state = {
        "format": CHECKPOINT_FORMAT, "version": VERSION, "model_config": to_builtin(cfg),
        "encoder": weights(model.encoder), "decoder": weights(decoder),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": int(epoch), "best_metric": float(best_metric),
        "config": to_builtin(config or {}), "extras": extras or {}, "progress": progress or {},
    }
    if gan is not None:
        state["gan"] = gan
    with disk_full_as_error(path):
        atomic_write(Path(path), lambda tmp: _torch_save(state, tmp))


def _torch_save(state: dict, tmp: str) -> None:
    # Through a Python file object: a failed write then raises OSError with its errno (ENOSPC), where
    # torch.save(state, filename) reports a bare "unexpected pos" RuntimeError from its zip writer.
    with open(tmp, "wb") as f:
        torch.save(state, f)


# What every checkpoint must hold to be loaded, and what a training checkpoint must add to be resumed.
MODEL_KEYS = ("model_config", "encoder", "decoder", "model_config.taps", "model_config.widths")
RESUME_KEYS = ("optimizer", "scaler", "epoch", "best_metric")


def missing_keys(ckpt: dict, keys: tuple[str, ...]) -> list[str]:
    """The ``keys`` absent from ``ckpt``; "a.b" names key b of the dict under a."""
    def has(d, dotted: str) -> bool:
        for part in dotted.split("."):
            if not isinstance(d, dict) or part not in d:
                return False
            d = d[part]
        return True
    return [k for k in keys if not has(ckpt, k)]


def require_keys(ckpt: dict, keys: tuple[str, ...], path: str | Path, what: str = "checkpoint") -> None:
    """Raise ValueError (one line naming ``path`` and every missing key) unless ``ckpt`` holds all ``keys``."""
    missing = missing_keys(ckpt, keys)
    if missing:
        raise ValueError(f"{path}: damaged or incomplete {what}, missing {', '.join(missing)}")


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict (``weights_only=True``); clear errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({e.__class__.__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{path}: not a colorizer checkpoint of format {CHECKPOINT_FORMAT}")
    require_keys(ckpt, MODEL_KEYS, path)
    bad = nonfinite_tensors({"encoder": ckpt["encoder"], "decoder": ckpt["decoder"]})
    if bad:
        raise ValueError(f"{path}: damaged checkpoint, {len(bad)} tensor(s) hold NaN or inf "
                         f"(first: {bad[0]}); re-export it from its training checkpoint")
    ckpt.setdefault("progress", {})
    ckpt.setdefault("extras", {})
    return ckpt


def load_checkpoint(path: str | Path, device: torch.device) -> tuple[ColorizationModel, dict]:
    """Load a checkpoint into a ready model on ``device``, in eval mode.

    Needs no backbone file or download: the encoder weights are in the checkpoint.
    Returns (model, the raw checkpoint dict, with "model_config" as a ModelConfig).
    """
    ckpt = read_checkpoint(path)
    cfg = model_config_from_dict(ckpt["model_config"])
    bins = ckpt.get("extras", {}).get("ab_bins")
    model = build_model(cfg, "none", None if bins is None else len(bins))
    for part in ("encoder", "decoder"):
        try:
            getattr(model, part).load_state_dict({k: v.float() if v.is_floating_point() else v
                                                  for k, v in ckpt[part].items()})
        except RuntimeError as e:  # missing or extra tensors, or shapes that do not fit model_config
            first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
            raise ValueError(f"{path}: its {part} weights do not fit its model_config ({first[:200]})") from None
    ckpt["model_config"] = cfg
    return model.to(device).eval(), ckpt


def torch_predictor(path: str | Path, device: str) -> tuple[Callable, ModelConfig, ColorizationModel, object]:
    """A .pt checkpoint as Inference.Colorizer's predictor: (predict, config, model, ab bins (Q, 2) numpy or None).

    ``predict(L, temperature, hints=None, global_hint=None, probs=False)`` takes L (B, 1, S, S) float32 numpy in
    [-1, 1] (and a guided model's hint inputs, DecoderLayers.Hints) and returns (ab (B, 2, h, w) float32 numpy in
    [-1, 1], the normalised entropy (B, 1, h, w) in [0, 1] or None for regression) and, with ``probs``, the colour
    distribution (B, Q, h, w), run on ``device`` ("cpu", "cuda", "cuda:1") under the one autocast context.
    """
    from DecoderLayers import Hints
    from Hints import no_hints_error

    dev = torch.device(device)
    model, ckpt = load_checkpoint(path, dev)
    cfg = ckpt["model_config"]
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    bins = ckpt["extras"].get("ab_bins")
    bins = None if bins is None else bins.to(dev)

    @torch.inference_mode()
    def predict(L, t: float | None, hints=None, global_hint=None, probs: bool = False):
        x = torch.from_numpy(L).to(dev)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        h = None
        if hints is not None or global_hint is not None:
            if not cfg.guided:
                raise no_hints_error(Path(path).name)
            n, s = len(L), L.shape[-1]
            local = torch.zeros(n, 3, s, s) if hints is None else torch.from_numpy(hints)
            glob = torch.zeros(n, len(bins) + 1) if global_hint is None else torch.from_numpy(global_hint)
            h = Hints(local.to(dev), glob.to(dev))
        with autocast(dev):
            pred = model(x, h)
        ab = decode_prediction(pred, cfg, bins, t).cpu().numpy()
        if cfg.loss != "classification":
            if probs:
                raise ValueError(f"{Path(path).name}: a regression model has no colour distribution")
            return ab, None
        dist, ent = distribution_and_entropy(pred)
        return (ab, ent.cpu().numpy(), dist.cpu().numpy()) if probs else (ab, ent.cpu().numpy())
    return predict, cfg, model, None if bins is None else bins.cpu().numpy()


def load_generator(path: str | Path, device: torch.device, decoder: str | None = None,
                   member: int | None = None, guided: bool = False,
                   hint_features: bool = False) -> tuple[ColorizationModel, dict, str]:
    """A trained model to start a new run from (``--init-from``): its encoder, decoder, config and ab bins.

    ``member`` picks one decoder of an ensemble release (required for one: a run trains one decoder).
    ``decoder`` ("unet" or "resunet") may differ from the source's: tensors whose name and shape
    match are copied and the rest start fresh (a new ResBlock starts as the identity). ``guided`` adds the hint
    layers to an unguided source (they start at zero, so the model starts as the source).
    Returns (model on ``device``, {"model_config", "extras"}, a one-line account of what was copied).
    """
    src, ckpt = load_checkpoint(path, device)
    cfg = ckpt["model_config"]
    weights = getattr(src.decoder, "base", src.decoder)  # a refined release: its decoder without the refiner
    cfg = dataclasses.replace(cfg, refiner_width=0)
    if cfg.members > 1:
        if member is None or not 0 <= member < cfg.members:
            raise ValueError(f"{path}: an ensemble of {cfg.members} decoders; a run trains one, so pick it with "
                             f"--init-member 0..{cfg.members - 1}")
        # the ensemble's temperature suits the product of its members, not one of them
        weights, cfg = weights.members[member], dataclasses.replace(cfg, members=1,
                                                                       temperature=ModelConfig().temperature)
    elif member is not None:
        raise ValueError(f"{path}: --init-member applies to ensemble releases; this file holds one decoder")
    if not cfg.guided and guided:  # new hint layers, of the kind asked for
        cfg = dataclasses.replace(cfg, guided=True, hint_features=hint_features)
    cfg = dataclasses.replace(cfg, decoder=decoder or cfg.decoder)
    bins = ckpt["extras"].get("ab_bins")
    model = build_model(cfg, "none", None if bins is None else len(bins))
    model.encoder.load_state_dict(src.encoder.state_dict())
    theirs, mine = weights.state_dict(), model.decoder.state_dict()
    same = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    model.decoder.load_state_dict(same, strict=False)
    fresh = sorted(k for k in mine if k not in same)
    if any(not k.startswith(HINT_LAYERS) for k in fresh) and cfg.decoder == ckpt["model_config"].decoder:
        raise ValueError(f"{path}: its decoder does not match this one ({fresh[0]} and {len(fresh) - 1} more differ)")
    note = f"copied {len(same)} of {len(mine)} decoder tensors from {path}" + (
        f" (new: {len(fresh)}, in {', '.join(sorted({k.rsplit('.', 3)[0] for k in fresh})[:4])})" if fresh else "")
    return model.to(device), {"model_config": cfg, "extras": ckpt["extras"]}, note
