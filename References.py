"""Paths, configuration dataclasses and colour constants: data only, no logic.

Every other module reads its defaults from here; the command line (Engine.py)
overrides them with ``dataclasses.replace``. Nothing in this file does work at
import time beyond defining constants.

Usage:
    from References import PATHS, ModelConfig, TrainConfig, LAB
"""
from __future__ import annotations

import functools
import os
import sys
import sysconfig
from dataclasses import dataclass, field, replace
from pathlib import Path

VERSION = "0.2.0"
CHECKPOINT_FORMAT = 2  # bump when the checkpoint dict layout changes (2: adds "progress")

ROOT = Path(__file__).resolve().parent


@functools.cache
def asset_dir() -> Path:
    """Where weights/, web/ and examples/ are: next to the modules in a checkout or an editable
    install, else in ``<prefix>/share/colorizer`` where ``pip install .`` puts them."""
    if (ROOT / "weights").is_dir():
        return ROOT
    for base in (sysconfig.get_path("data"), sys.prefix, sysconfig.get_path("data", f"{os.name}_user")):
        candidate = Path(base) / "share" / "colorizer"
        if candidate.is_dir():
            return candidate
    return ROOT

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# Videos the inference and evaluate modes accept (decoded by the ffmpeg inside imageio-ffmpeg); always
# written as H.264 MP4, the one format every player and browser opens.
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv")
VIDEO_OUTPUT = ".mp4"


@dataclass(frozen=True)
class VideoConfig:
    """Video output and temporal stability (Temporal.py, Video.py, VideoFiles.py)."""

    # Weight of the flow-warped running ab estimate against each new prediction (0 = frame by frame).
    # 0.8 cut the warping error of grainy, flickering pans to 0.30-0.39x frame by frame (README, "Films and
    # home movies"); higher is steadier but slower to follow a colour the model changes its mind about.
    temporal_smoothing: float = 0.8
    crf: int = 18  # H.264 constant rate factor: 18 is visually lossless for most footage
    # x264 speed/size trade-off. On 2 CPU cores at 1080p "veryfast" ran 1.5x faster than "medium" with a file
    # no larger at crf 18 (measured like benchmarks/video_speed.py; README, "Films and home movies")
    preset: str = "veryfast"


@dataclass(frozen=True)
class Paths:
    """Where things live. Relative paths are resolved against the current directory."""

    data_dir: Path = Path("data/train")
    val_dir: Path | None = None
    runs_dir: Path = Path("runs")
    examples_dir: Path = field(default_factory=lambda: asset_dir() / "examples")
    results_dir: Path = Path("results")
    # the runtime model (ONNX Runtime, both installs) and the same release for torch (training, export, GPU)
    default_checkpoint: Path = field(default_factory=lambda: asset_dir() / "weights" / "colorizer.onnx")
    torch_checkpoint: Path = field(default_factory=lambda: asset_dir() / "weights" / "colorizer.pt")
    # None: torchvision's IMAGENET1K_V1 (cache, then download); "none": random init.
    backbone_weights: str | None = None


@dataclass(frozen=True)
class LabConstants:
    """sRGB (D65) <-> CIE Lab, with the same constants as scikit-image's rgb2lab.

    Network scaling: L in [0, 100] -> L / 50 - 1 in [-1, 1];
    a, b in about [-110, 110] -> ab / 110 in [-1, 1].
    """

    l_center: float = 50.0
    l_scale: float = 50.0
    ab_scale: float = 110.0
    white: tuple[float, float, float] = (0.95047, 1.0, 1.08883)
    xyz_from_rgb: tuple[tuple[float, float, float], ...] = (
        (0.412453, 0.357580, 0.180423),
        (0.212671, 0.715160, 0.072169),
        (0.019334, 0.119193, 0.950227),
    )
    srgb_threshold: float = 0.04045
    linear_threshold: float = 0.0031308
    xyz_epsilon: float = 0.008856
    xyz_kappa: float = 7.787
    lab_f_threshold: float = 0.2068966


LAB = LabConstants()

# torchvision's ImageNet normalisation, which both the torchvision VGG16 weights and
# the shared weights file expect (RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Output index in vgg16().features of each usable ReLU tap, and its channel count.
VGG16_TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
VGG16_TAP_CHANNELS = {"relu1_2": 64, "relu2_2": 128, "relu3_3": 256, "relu4_3": 512, "relu5_3": 512}
VGG16_TAP_STRIDE = {"relu1_2": 1, "relu2_2": 2, "relu3_3": 4, "relu4_3": 8, "relu5_3": 16}

# Pixel and concurrency limits (--max-megapixels, --max-concurrent). 80 MP takes a 600-dpi scan of an
# A4 page (35 MP) or a 48 MP camera and keeps a default run near 1.5 GB; larger scans are one flag
# away. The web limit is lower: a server takes anyone's uploads, two at a time by default.
LIMITS = {"cli_megapixels": 80.0, "web_megapixels": 40.0, "web_concurrent": 2, "web_upload_mb": 20.0,
          # the web page's editing sessions (WebSessions.SessionStore): photos kept at most, their MiB, minutes idle
          "web_sessions": 24, "web_session_mb": 400.0, "web_session_minutes": 30.0}

LOSSES = ("huber", "l1", "mse", "classification")
DECODERS = ("unet", "resunet")
GANS = ("none", "patchgan", "wgan-gp")
GAN_LOSSES = ("vanilla", "lsgan")
DEVICES = ("auto", "cpu", "cuda")
# Device files of a GPU driver torch could use: NVIDIA on Linux and in its containers, AMD ROCm (which torch also
# reaches as "cuda"), and WSL2's GPU bridge. Where none exists, --device auto is the CPU without importing torch
# (Engine.pick_device).
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


@dataclass(frozen=True)
class ModelConfig:
    """The network: working resolution, encoder taps and decoder widths."""

    image_size: int = 128  # square side the network sees; 128 trains in minutes on a 2-core CPU
    taps: tuple[str, ...] = ("relu2_2", "relu3_3", "relu4_3", "relu5_3")
    # decoder channels at each tap's scale (tap name -> width)
    widths: tuple[tuple[str, int], ...] = (
        ("relu1_2", 32), ("relu2_2", 64), ("relu3_3", 128), ("relu4_3", 192), ("relu5_3", 256),
    )
    global_width: int = 256  # width of the global-context (fusion) vector
    # unet: each up-block fuses (1x1) and refines with one 3x3 conv; resunet: the refinement is a
    # residual block of two 3x3 convs (the design seed's "U-Net of residual blocks")
    decoder: str = "unet"
    loss: str = "classification"  # won on val against huber: same PSNR, more faithful colourfulness
    # classification head: ab grid step and annealed-mean temperature (Zhang et al. 2016)
    ab_grid: int = 10
    temperature: float = 0.38
    # decoders on the one frozen encoder whose colour distributions are multiplied (a product of
    # experts); > 1 only in release files assembled from trained runs by Export.export_release
    members: int = 1
    # the decoder also takes colour points and a reference photo's colours (DecoderLayers.Hints; --guided)
    guided: bool = False
    # a guided decoder's point layers also see the image features at their scale (DecoderLayers.HintBranch)
    hint_features: bool = False
    # > 0: a guided model's hint refiner, this many channels at its first scale (RefinerLayers; --refiner)
    refiner_width: int = 0

    def scaled(self, width: float) -> "ModelConfig":
        """This config with every decoder width (and the global width) multiplied by ``width``."""
        return replace(self, widths=tuple((k, round(w * width)) for k, w in self.widths),
                       global_width=round(self.global_width * width))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the encoder is frozen, only the decoder is trained."""

    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # AdamW's decay on biases and BatchNorm weights too (True: this project's runs before issue 23); False
    # decays only conv/linear weights, the usual practice. A resumed run keeps its checkpoint's layout.
    decay_norms: bool = False
    # linear learning-rate warm-up over the first optimizer steps of a run (0 = none); 20 was neutral on
    # val_scenes PSNR and lowered FD-VGG16 in two short fine-tunes (docs/experiments.md)
    warmup_steps: int = 20
    seed: int = 0
    workers: int = 2
    crop_scale: tuple[float, float] = (0.5, 1.0)  # RandomResizedCrop area range
    huber_delta: float = 0.1  # in normalised ab units (0.1 = 11 ab units)
    # classification: lambda mixing the colour prior with uniform for the class weights
    # (0.5 = Zhang et al.; 1 = no rebalancing). 0.9 won on val: at 0.5 neutral greys are
    # down-weighted ~12x and white objects come out as rainbows. See Quantization.class_weights.
    rebalance: float = 0.9
    grad_clip: float = 1.0
    samples: int = 6  # fixed validation images in the per-epoch sample grid
    max_train_images: int = 0  # 0 = all; a cap for quick runs
    save_every_steps: int = 0  # also write last.pt every K optimizer steps (0 = only at epoch ends)
    max_steps: int = 0  # stop after this many optimizer steps in all (0 = no cap)
    compile: bool = False  # torch.compile the training forward (GPU; slow to start, faster per step)
    # start from a trained model's decoder, config and colour prior instead of a fresh decoder (--init-from);
    # init_member picks one decoder of an ensemble release
    init_from: str | None = None
    init_member: int | None = None
    # guided runs (ModelConfig.guided): hints simulated from each crop's own colours (HintSampling). The share
    # of crops with no points, the geometric law of the number of points (Zhang et al. 2017: p = 1/8), the
    # patch sides in working pixels, and the shares of crops whose global hint is the crop's own colours,
    # another window of the crop, or none (the rest)
    hint_none: float = 0.5
    hint_p: float = 0.125
    hint_max_patch: int = 9
    hint_global_self: float = 0.25
    hint_global_window: float = 0.25
    # train only the hint layers (the unguided decoder stays exactly as loaded) instead of the whole decoder
    hint_layers_only: bool = False
    hint_lr_scale: float = 10.0  # the hint layers' learning rate, as a multiple of --lr (they start from zero)
    # a hint refiner's loss (Refining.py): L1 on the decoded colour plus this weight x the rebalanced cross-entropy
    refiner_ce: float = 0.0
    # ... plus this weight x each image's |mean chroma - its truth's| (Refining.chroma_gap): against greyness
    refiner_chroma: float = 0.0


@dataclass(frozen=True)
class GanConfig:
    """Adversarial fine-tuning of the decoder (Adversarial.py); ``kind`` "none" trains without a discriminator.

    patchgan: pix2pix's conditional 70x70 PatchGAN on (L, ab), vanilla (BCE) or least-squares loss, D's loss
    halved, Adam betas (0.5, 0.999). wgan-gp: a critic with instance norm, the Wasserstein loss and a gradient
    penalty (lambda_gp 10, n_critic critic steps per generator step, Adam betas (0, 0.9); Gulrajani et al.).
    Following DeOldify's NoGAN, start from a trained generator (--init-from) and pretrain D alone first.
    """

    kind: str = "none"
    # weight of the adversarial term against the per-pixel loss (the classification loss is ~3.5, the GAN terms ~1)
    lambda_adv: float = 0.1
    gan_loss: str = "vanilla"  # patchgan only: vanilla (BCE with logits) or lsgan (least squares)
    d_lr: float = 2e-4
    d_width: int = 64  # channels of D's first layer (pix2pix's ndf)
    lambda_gp: float = 10.0
    n_critic: int = 1  # D steps per generator step (wgan-gp references use 5)
    pretrain_steps: int = 200  # D-only steps before the generator sees the adversarial term
    collapse_steps: int = 200  # stop when D's loss stays below collapse_loss for this many steps in a row
    collapse_loss: float = 0.01
