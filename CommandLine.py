"""The command line's options: every --flag of every mode, its default and its help. Nothing runs here.

Engine.build_parser makes the parser and decides which of these each mode's --help lists. Imports
References only, so ``colorize --help`` answers without loading numpy, OpenCV or a model. Also turns the
options into configs (``configs_from_args``), says which guidance options a mode refuses (``guidance_problem``)
and which option values are out of range (``value_problem``).

Usage:
    ap = argparse.ArgumentParser(prog="colorize"); add_arguments(ap, ("inference", "training"))
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from References import (DECODERS, DEVICES, GAN_LOSSES, GANS, LIMITS, LOSSES, VERSION, GanConfig, ModelConfig, Paths,
                        TrainConfig, VideoConfig)


def add_arguments(ap: argparse.ArgumentParser, modes: tuple[str, ...]) -> None:
    """Add every option to ``ap``; ``modes`` are --mode's choices."""
    m, t, p = ModelConfig(), TrainConfig(), Paths()
    ap.add_argument("inputs", nargs="*", metavar="INPUT", help="photos, films or folders (default: examples/)")
    ap.add_argument("--version", action="version", version=f"colorize {VERSION}")
    ap.add_argument("--mode", choices=modes, default="inference",
                    help="training, evaluate, export need the [train] install; serve: the web page and API")
    ap.add_argument("--device", choices=DEVICES, default="auto",
                    help="auto = CUDA if torch sees one, else CPU; under torchrun, cuda:LOCAL_RANK")
    ap.add_argument("--checkpoint", default=None, metavar="FILE",
                    help="model: .onnx (ONNX Runtime) or .pt (torch) (default: the shipped colorizer.onnx; .pt on a GPU)")
    ap.add_argument("--batch-size", type=int, default=None, metavar="N",
                    help="images per forward pass (default: 8)")
    ap.add_argument("--max-megapixels", type=float, default=None, metavar="MP",
                    help=f"refuse larger images, from the header (default: {LIMITS['cli_megapixels']:g})")
    g = ap.add_argument_group("photos and films")
    g.add_argument("--input", nargs="+", default=None, metavar="PATH", help="more inputs, as INPUT")
    g.add_argument("--output", default=None, metavar="PATH",
                   help=f"output folder, or one input's output file (default: {p.results_dir}/)")
    g.add_argument("--format", choices=("png", "jpg", "jpeg", "webp"), default="png",
                   help="image format (films: .mp4)")
    g.add_argument("--skip-existing", action="store_true", help="keep outputs already there (resume a job)")
    g.add_argument("--side-by-side", action="store_true",
                   help="also write <stem>_compare.png (grey|colour|original)")
    g.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="lower = more vivid (not in an .onnx) (default: the model's)")
    g.add_argument("--no-fd", action="store_true",
                   help="evaluate: skip the Fréchet distances (FD-VGG16, FID), the slowest part of a table")
    g.add_argument("--fid-weights", default=None, metavar="PATH",
                   help="evaluate: also report FID and the Inception Score, from this local copy of torch-fidelity's "
                        "Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth); without it evaluate reports "
                        "FD-VGG16, a Fréchet distance over VGG16 features that is not FID")
    g.add_argument("--temporal-smoothing", type=float, default=VideoConfig().temporal_smoothing, metavar="S",
                   help="films: weight in [0, 1) of the colour carried along the motion; 0 = frames alone")
    g.add_argument("--crf", type=int, default=VideoConfig().crf, metavar="Q",
                   help="films: H.264 quality, 0 (best) to 51")
    g.add_argument("--workers", type=int, default=None, metavar="N", help="processes sharing a folder (default 1)")
    # One definition for two modes (MODE_HELP): inference reads a path, evaluate (Evaluate.py) a count or a word.
    g.add_argument("--hints", default=None, metavar="FILE|DIR",
                   help="colour points (JSON, see README) for one input, or a folder of <stem>.json mirroring "
                        "the input folder (a/b.jpg: DIR/a/b.json; none: automatic)")
    g.add_argument("--reference", default=None, metavar="PHOTO|DIR",
                   help="a colour photo whose colours guide every input, or a folder of one per stem, as --hints")
    g.add_argument("--confidence", action="store_true",
                   help="also write <stem>.confidence.png (bright = unsure)")
    g = ap.add_argument_group("serve")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 = every interface)")
    g.add_argument("--port", type=int, default=8000, help="TCP port")
    g.add_argument("--threads", type=int, default=4, help="waitress worker threads (raised so that waiting uploads never take /healthz's)")
    g.add_argument("--max-concurrent", type=int, default=LIMITS["web_concurrent"],
                   help="images decoded and colourised at once; bounds the server's memory (others wait)")
    g.add_argument("--session-mb", type=float, default=LIMITS["web_session_mb"], metavar="MiB",
                   help=f"MiB of photos the page's editing sessions may keep (at most {LIMITS['web_sessions']} "
                        f"sessions, each kept {LIMITS['web_session_minutes']:g} min after its last use; the least "
                        "recently used go first); adds to the server's memory")
    g = ap.add_argument_group("export")
    g.add_argument("--ensemble", nargs="+", default=None, metavar="CKPT",
                   help="instead of --checkpoint: two or more classification runs (same working size, decoder "
                        "and ab bins) whose decoders become one model on the shared frozen encoder, their "
                        "colour distributions multiplied; each member adds its decoder's time and about 4 MB")
    g = ap.add_argument_group("training (batch size and learning rate: the global batch is --batch-size x the "
                              "number of processes; the learning rate is not scaled for you, and with N "
                              "processes the linear-scaling rule suggests --lr x N)")
    g.add_argument("--data-dir", default=str(p.data_dir), help="folder of colour photos to train on")
    g.add_argument("--val-dir", default=None, help="validation photos (default: a seeded 10%% of --data-dir)")
    g.add_argument("--runs-dir", default=str(p.runs_dir), help="where run folders are created")
    g.add_argument("--run-name", default=None, help="run folder name (default: a timestamp)")
    g.add_argument("--resume", default=None, help="continue from a run folder or its last.pt (mid-epoch too)")
    g.add_argument("--backbone-weights", default=p.backbone_weights,
                   help="VGG16 weights file (torchvision layout); unset = torchvision's IMAGENET1K_V1 "
                        "(cached or downloaded); 'none' = random (tests only)")
    g.add_argument("--image-size", type=int, default=m.image_size, help="working resolution (square side)")
    g.add_argument("--loss", choices=LOSSES, default=m.loss, help="ab loss (see docs/training.md)")
    g.add_argument("--rebalance", type=float, default=t.rebalance,
                   help="classification: class-rebalancing lambda, 0.5 = Zhang et al., 1 = none")
    g.add_argument("--decoder-width", type=float, default=1.0,
                   help="multiplier on every decoder width (1 = the shipped decoder's widths)")
    g.add_argument("--epochs", type=int, default=t.epochs, help="total epochs (also when resuming)")
    g.add_argument("--lr", type=float, default=t.lr, help="AdamW peak learning rate (cosine decay by epoch)")
    g.add_argument("--weight-decay", type=float, default=t.weight_decay,
                   help="AdamW weight decay on conv/linear weights (biases and norm weights are not decayed)")
    g.add_argument("--warmup-steps", type=int, default=t.warmup_steps,
                   help="linear learning-rate warm-up over the first N optimizer steps (0 = none); resumes continue it")
    g.add_argument("--crop-scale", type=float, default=t.crop_scale[0],
                   help="smallest random crop, as a fraction of the image area (augmentation)")
    g.add_argument("--seed", type=int, default=t.seed, help="random seed (data order and augmentation)")
    g.add_argument("--max-train-images", type=int, default=t.max_train_images, help="cap on training images, 0 = all")
    g.add_argument("--samples", type=int, default=t.samples, help="validation images in each epoch's sample grid")
    g.add_argument("--save-every-steps", type=int, default=t.save_every_steps,
                   help="also write last.pt every K optimizer steps, so a kill loses at most K (0 = epoch ends only)")
    g.add_argument("--max-steps", type=int, default=t.max_steps, help="stop after this many optimizer steps, 0 = no cap")
    g.add_argument("--compile", action="store_true", help="torch.compile the training forward (GPU)")
    g.add_argument("--decoder", choices=DECODERS, default=m.decoder,
                   help="unet: each up-block refines with a 3x3 conv; resunet: with a residual block of two")
    g.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from this trained model's decoder, config and colour prior (a run's last.pt or a "
                        "release) instead of a fresh decoder; tensors that do not fit a different --decoder start "
                        "fresh")
    g.add_argument("--init-member", type=int, default=None, metavar="N",
                   help="with an ensemble release as --init-from: which of its decoders to start from")
    g.add_argument("--guided", action="store_true",
                   help="train a decoder that also takes colour points and a reference photo (hints simulated from "
                        "each crop's colours); with --init-from it starts as that model, its hint layers at zero")
    g.add_argument("--hint-layers-only", action="store_true",
                   help="with --guided: train only the hint layers, so automatic colour stays exactly as loaded")
    g.add_argument("--hint-none", type=float, default=t.hint_none,
                   help="with --guided: the share of crops trained with no colour points")
    g.add_argument("--hint-p", type=float, default=t.hint_p,
                   help="with --guided: the number of points per crop is geometric with this p (mean 1/p)")
    g.add_argument("--hint-features", action="store_true",
                   help="with --guided: the point layers also see the image features at each scale")
    g.add_argument("--refiner", type=int, default=0, metavar="WIDTH",
                   help="train only a hint refiner of this width (e.g. 32) on the guided model given by --init-from, "
                        "which stays frozen (Refining.py: the data lives on the device, one process); 0 = no refiner")
    g.add_argument("--refiner-ce", type=float, default=t.refiner_ce,
                   help="with --refiner: add this weight x the rebalanced cross-entropy to its L1 loss")
    g.add_argument("--refiner-chroma", type=float, default=t.refiner_chroma,
                   help="with --refiner: add this weight x each image's |mean chroma - its photo's| to its loss, "
                        "which an L1 loss alone lets fall (greyish colours wherever the colour is unsure)")
    add_gan_arguments(ap)


def add_gan_arguments(ap: argparse.ArgumentParser) -> None:
    gan = GanConfig()
    g = ap.add_argument_group("adversarial training (--mode training --gan ...; start from a trained generator with "
                              "--init-from, and use a lower --lr such as 1e-4)")
    g.add_argument("--gan", choices=GANS, default=gan.kind,
                   help="patchgan: pix2pix's conditional 70x70 PatchGAN; wgan-gp: a Wasserstein critic with a "
                        "gradient penalty; none: the per-pixel loss alone")
    g.add_argument("--lambda-adv", type=float, default=gan.lambda_adv,
                   help="weight of the adversarial term added to the per-pixel loss")
    g.add_argument("--gan-loss", choices=GAN_LOSSES, default=gan.gan_loss,
                   help="patchgan: vanilla (cross-entropy) or lsgan (least squares)")
    g.add_argument("--d-lr", type=float, default=gan.d_lr, help="discriminator learning rate (Adam; cosine decay)")
    g.add_argument("--d-width", type=int, default=gan.d_width, help="channels of the discriminator's first layer")
    g.add_argument("--lambda-gp", type=float, default=gan.lambda_gp, help="wgan-gp: gradient-penalty weight")
    g.add_argument("--n-critic", type=int, default=gan.n_critic, help="discriminator steps per generator step")
    g.add_argument("--gan-pretrain-steps", type=int, default=gan.pretrain_steps,
                   help="steps that train the discriminator alone before the generator sees it (NoGAN)")
    g.add_argument("--collapse-steps", type=int, default=gan.collapse_steps,
                   help=f"stop when the discriminator's loss stays below {gan.collapse_loss:g} this many steps "
                        "in a row (0 = never)")


# Options whose meaning depends on --mode: that mode's (metavar, help); the help above is inference's. Each option
# is defined once, so that every mode parses every option.
MODE_HELP = {
    "evaluate": {
        "input": ("PATH", "folders of colour photos, one table each (default: examples/)"),
        "output": ("PATH", f"folder for the tables and grids (default: {Paths().results_dir}/evaluation/)"),
        "hints": ("N", "simulate N colour points per photo from its original (fixed seed)"),
        "reference": ("self|other", "guide each photo with its own colours (self) or another photo's of its "
                                    "folder (other)"),
    },
    "training": {
        "batch_size": ("N", f"images per step in each process (default: {TrainConfig().batch_size})"),
        "workers": ("N", f"data-loading processes per training process (default: {TrainConfig().workers})"),
    },
    "serve": {"max_megapixels": ("MP", f"refuse larger uploads, from the header (default: "
                                       f"{LIMITS['web_megapixels']:g})")},
    "export": {
        "output": ("FILE", "the .onnx graph or .pt release to write"),
        "temperature": ("T", "the release's default temperature (default: the source's)"),
    },
}


def configs_from_args(args: argparse.Namespace) -> tuple[Paths, ModelConfig, TrainConfig]:
    """The References defaults with the command line's overrides applied."""
    paths = dataclasses.replace(
        Paths(), data_dir=Path(args.data_dir), val_dir=Path(args.val_dir) if args.val_dir else None,
        runs_dir=Path(args.runs_dir), results_dir=Path(args.output) if args.output else Paths().results_dir,
        backbone_weights=args.backbone_weights)
    cfg = dataclasses.replace(ModelConfig().scaled(args.decoder_width), image_size=args.image_size, loss=args.loss,
                              decoder=args.decoder, guided=args.guided,
                              hint_features=args.hint_features)
    tcfg = dataclasses.replace(
        TrainConfig(), epochs=args.epochs, batch_size=args.batch_size or TrainConfig().batch_size, lr=args.lr,
        weight_decay=args.weight_decay, seed=args.seed, workers=TrainConfig().workers if args.workers is None
        else args.workers, max_train_images=args.max_train_images, samples=args.samples, rebalance=args.rebalance,
        crop_scale=(args.crop_scale, 1.0), save_every_steps=args.save_every_steps, max_steps=args.max_steps,
        compile=args.compile, warmup_steps=args.warmup_steps, init_from=args.init_from, init_member=args.init_member,
        hint_layers_only=args.hint_layers_only, hint_none=args.hint_none, hint_p=args.hint_p,
        refiner_ce=args.refiner_ce, refiner_chroma=args.refiner_chroma)
    return paths, cfg, tcfg


def guidance_problem(args: argparse.Namespace) -> str | None:
    """A usage error in --hints, --reference or --confidence for the mode, or None. Inference: the paths exist;
    evaluate reads its own meaning of --hints and --reference (Evaluate.py); the other modes take none of them."""
    given = [f for f, v in (("--hints", args.hints), ("--reference", args.reference),
                            ("--confidence", args.confidence)) if v]
    allowed = {"inference": given, "evaluate": [f for f in given if f != "--confidence"]}.get(args.mode, [])
    if set(given) - set(allowed):
        wrong = sorted(set(given) - set(allowed))
        return f"{' and '.join(wrong)} {'do' if len(wrong) > 1 else 'does'} not apply to --mode {args.mode}"
    if args.mode == "inference":
        for flag, value in (("--hints", args.hints), ("--reference", args.reference)):
            if value and not Path(value).exists():
                return f"{flag} {value}: no such file or folder"
    return None


def value_problem(args: argparse.Namespace) -> str | None:
    """A usage error in an option's value, or None; fills in --max-megapixels' default for the mode."""
    if args.max_megapixels is None:
        args.max_megapixels = LIMITS["web_megapixels" if args.mode == "serve" else "cli_megapixels"]
    if args.image_size < 32 or args.image_size % 16:
        return f"--image-size must be a multiple of 16 and at least 32 (got {args.image_size})"
    if not args.max_megapixels > 0:
        return f"--max-megapixels must be positive (got {args.max_megapixels:g})"
    if not 0 < args.session_mb < 2 ** 40:  # NaN and inf are refused too
        return f"--session-mb must be a positive number of MiB (got {args.session_mb:g})"
    if not 0 <= args.temporal_smoothing < 1:
        return f"--temporal-smoothing must be at least 0 and below 1 (got {args.temporal_smoothing:g})"
    if not 0 <= args.crf <= 51:
        return f"--crf must be between 0 and 51 (got {args.crf})"
    if args.batch_size is not None and args.batch_size < 1:
        return f"--batch-size must be at least 1 (got {args.batch_size})"
    if args.workers is not None and args.workers < (1 if args.mode == "inference" else 0):
        return f"--workers must be at least {1 if args.mode == 'inference' else 0} (got {args.workers})"
    if args.warmup_steps < 0:
        return f"--warmup-steps must be at least 0 (got {args.warmup_steps})"
    if args.n_critic < 1 or args.gan_pretrain_steps < 0 or args.lambda_adv < 0:
        return "--n-critic must be at least 1, --gan-pretrain-steps and --lambda-adv at least 0"
    if args.init_from and args.resume:
        return "--init-from starts a new run; --resume continues one: give only one of them"
    if args.refiner < 0 or not (args.refiner_ce >= 0 and args.refiner_chroma >= 0):  # "not >=": NaN is refused too
        return "--refiner, --refiner-ce and --refiner-chroma must be at least 0"
    if (args.refiner_ce or args.refiner_chroma) and not args.refiner:
        return "--refiner-ce and --refiner-chroma weight a refiner's loss: give them with --refiner WIDTH"
    if args.refiner and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "--refiner trains in one process: run it without torchrun"
    if args.refiner and (args.resume or args.gan != "none" or args.guided):
        return "--refiner trains a refiner on a guided model given by --init-from; it takes no --resume, --gan or --guided"
    return None
