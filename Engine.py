"""The command line: argument parsing, device choice and dispatch to the modes. Nothing else.

Modes: ``inference`` (colourise images and videos, files or folders, at full resolution), ``training`` (Training.fit,
also under torchrun), ``evaluate`` (scores against the originals, next to the grey baseline, one
table per folder), ``serve`` (the web page and HTTP API) and ``export`` (a verified .pt release
or an ONNX graph). Heavy libraries are imported only once a mode runs, so ``--help`` and
``--version`` answer at once. The installed ``colorize`` command is ``main``.

Usage:
    colorize photo.jpg --output photo_colour.png
    python Engine.py --mode inference --input examples --output results
    torchrun --standalone --nproc_per_node=2 Engine.py --mode training --data-dir photos/train --device cpu
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from References import (DECODERS, DEVICES, GAN_LOSSES, GANS, IMAGE_EXTENSIONS, LIMITS, LOSSES, VERSION, VIDEO_OUTPUT,
                        GanConfig, ModelConfig, Paths, TrainConfig, VideoConfig)

MODES = ("inference", "training", "evaluate", "serve", "export")


def open_colorizer(args: argparse.Namespace, paths: Paths, device):
    """The --checkpoint model (default: the shipped one; .onnx runs on ONNX Runtime) with --temperature."""
    from Inference import Colorizer

    checkpoint = Path(args.checkpoint) if args.checkpoint else paths.default_checkpoint
    return Colorizer.from_checkpoint(checkpoint, device, args.temperature)


def input_paths(args: argparse.Namespace, default: Path) -> list[Path]:
    """The positional inputs and --input values, in order (default: ``default``)."""
    given = list(args.inputs or []) + list(args.input or [])
    return [Path(p) for p in given] or [default]


def output_target(inputs: list[Path], out: Path) -> bool:
    """True when --output names the one output file (one input file and a matching suffix: an image
    suffix for an image, .mp4 for a video); ValueError when it names a file that cannot be."""
    from LoadData import is_video

    one = len(inputs) == 1 and inputs[0].is_file()
    suffix = out.suffix.lower()
    if one and suffix in ((VIDEO_OUTPUT,) if is_video(inputs[0]) else IMAGE_EXTENSIONS):
        return True
    if suffix in IMAGE_EXTENSIONS + (VIDEO_OUTPUT,) and not out.is_dir():
        named = "a video" if suffix == VIDEO_OUTPUT else "an image"
        what = ("a video" if is_video(inputs[0]) else "an image") if one else "not one file"
        raise ValueError(f"--output {out} names {named} file, but the input is {what}; give a folder"
                         + (f" or a {VIDEO_OUTPUT} file" if one and is_video(inputs[0]) else ""))
    return False


def run_inference(args: argparse.Namespace, paths: Paths, device) -> int:
    """Colourise every input (image or video file, or folder) into --output; exit status 1 if any failed."""
    from Inference import colorize_paths, Report
    from LoadData import find_images, split_videos

    inputs = input_paths(args, paths.examples_dir)
    out = paths.results_dir
    single = output_target(inputs, out)
    batch, max_pixels = args.batch_size or 8, int(args.max_megapixels * 1e6)
    colorizer = open_colorizer(args, paths, device)
    report = Report()
    for inp in inputs:
        images, clips = split_videos(find_images(inp, videos=True))
        runs = []
        if images:
            runs.append(colorize_paths(colorizer, images, inp, out.parent if single else out, batch_size=batch,
                                       side_by_side=args.side_by_side, suffix=out.suffix if single else "." + args.format,
                                       max_pixels=max_pixels, output_file=out if single else None))
        if clips:
            from Video import colorize_videos

            runs.append(colorize_videos(colorizer, clips, inp, out, smoothing=args.temporal_smoothing, crf=args.crf,
                                        batch_size=batch, max_pixels=max_pixels, output_file=out if single else None))
        for r in runs:
            report.written += r.written
            report.failed += r.failed
    where = report.written[0] if single and report.written else out
    videos = sum(p.suffix == VIDEO_OUTPUT for p in report.written)  # image outputs never end in .mp4
    stills = len(report.written) - videos
    counts = " and ".join([f"{stills} image(s)"] * bool(stills or not videos) + [f"{videos} video(s)"] * bool(videos))
    print(f"wrote {counts} to {where} with {colorizer.name}"
          + (f"; {len(report.failed)} failed (listed above)" if report.failed else ""))
    return 1 if report.failed else 0


def run_evaluate(args: argparse.Namespace, paths: Paths, device) -> int:
    """Score the model and the grey baseline on each input folder: one table per folder, CSV/JSON (+ grid).
    Videos get the flicker table instead: warping error frame by frame and stabilised, and speed."""
    from Evaluate import add_distribution_scores, evaluate_folder, evaluate_videos, format_table, write_reports
    from LoadData import find_images, split_videos
    from Metrics import summarise

    colorizer = open_colorizer(args, paths, device)
    folders = input_paths(args, paths.examples_dir)
    out_root = Path(args.output) if args.output else paths.results_dir / "evaluation"
    failures, scorers = 0, None
    for folder in folders:
        images, clips = split_videos(find_images(folder, videos=True))
        out_dir = out_root / folder.name if len(folders) > 1 else out_root
        if clips:
            failures += evaluate_videos(colorizer, clips, out_dir, args.temporal_smoothing, args.batch_size or 8,
                                        int(args.max_megapixels * 1e6))
        if not images:
            continue
        scorers = scorers or distribution_scorers(args, paths, device)  # loaded at the first folder of photos
        for scorer in scorers:
            scorer.reset()
        rows, grid, failed = evaluate_folder(colorizer, images, args.batch_size or 8,
                                             grid_height=160 if args.output else 0,
                                             max_pixels=int(args.max_megapixels * 1e6), scorers=scorers)
        failures += len(failed)
        if not rows:
            raise ValueError(f"{folder}: no image could be read")
        table = add_distribution_scores(summarise(rows), scorers) if len(rows) >= 4 else summarise(rows)
        print(f"\n{folder} ({len(rows) // 2} photos)\n{format_table(table)}")
        print("wrote " + ", ".join(str(p) for p in write_reports(rows, out_dir, grid, table).values()))
    if failures:
        print(f"{failures} file(s) could not be read (listed above)", file=sys.stderr)
    return 1 if failures else 0


def distribution_scorers(args: argparse.Namespace, paths: Paths, device) -> tuple:
    """The Fréchet-distance scorers, loaded once for every folder: FD-VGG16 always (VGG16 from --backbone-weights,
    else from the shipped model's encoder), FID and IS too with --fid-weights."""
    from FrechetDistance import InceptionScores, VGGFrechet, load_fd_backbone

    scorers: tuple = (VGGFrechet(load_fd_backbone(args.backbone_weights, paths.default_checkpoint), device),)
    if args.fid_weights:
        scorers += (InceptionScores(args.fid_weights),)
    return scorers


def run_serve(args: argparse.Namespace, paths: Paths, device) -> int:
    """Serve the web page and HTTP API under waitress until interrupted; a busy port fails before loading."""
    from WebApp import check_port, serve

    check_port(args.host, args.port)
    limit = args.max_megapixels if args.max_megapixels_given else LIMITS["web_megapixels"]
    serve(open_colorizer(args, paths, device), args.host, args.port, args.threads, max_megapixels=limit,
          max_concurrent=args.max_concurrent)
    return 0


def run_export(args: argparse.Namespace, paths: Paths) -> int:
    """--checkpoint (a training checkpoint or release) -> --output: a verified .pt release, or .onnx."""
    from Export import describe, export_onnx, export_release

    if not args.output:
        raise ValueError("--mode export needs --output, e.g. weights/colorizer.onnx or weights/colorizer.pt")
    if args.ensemble and (args.checkpoint or len(args.ensemble) < 2):
        raise ValueError("--ensemble takes two or more checkpoints and replaces --checkpoint")
    sources = [Path(c) for c in args.ensemble] if args.ensemble else \
        [Path(args.checkpoint) if args.checkpoint else paths.default_checkpoint]
    out = Path(args.output)
    if out.suffix not in (".onnx", ".pt"):
        raise ValueError(f"--output {out}: name a .onnx (ONNX graph) or .pt (release checkpoint) file")
    if any(out.resolve() == s.resolve() for s in sources):
        raise ValueError(f"--output {out} is one of the sources; write the export elsewhere")
    export = export_onnx if out.suffix == ".onnx" else export_release
    report = export(sources if len(sources) > 1 else sources[0], out, args.temperature)
    print(f"wrote {out} from {' + '.join(map(str, sources))}: {describe(report)}")
    return 0


def run_training(args: argparse.Namespace, paths: Paths, cfg: ModelConfig, tcfg: TrainConfig) -> int:
    """Training.fit in this process, or in each process torchrun started (the group is always left on exit)."""
    import Distributed
    from Training import fit

    gcfg = GanConfig(kind=args.gan, lambda_adv=args.lambda_adv, gan_loss=args.gan_loss, d_lr=args.d_lr,
                     d_width=args.d_width, lambda_gp=args.lambda_gp, n_critic=args.n_critic,
                     pretrain_steps=args.gan_pretrain_steps, collapse_steps=args.collapse_steps)
    with Distributed.process_group(args.device) as dist:
        return fit(paths, cfg, tcfg, dist, run_name=args.run_name, resume=Path(args.resume) if args.resume else None,
                   gcfg=gcfg)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" except where the help text already explains an unset default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    m, t, p = ModelConfig(), TrainConfig(), Paths()
    ap = argparse.ArgumentParser(
        prog="colorize", formatter_class=_HelpFormatter,
        description="Automatic image colourizer: a frozen ImageNet VGG16 encoder and a trained decoder predict "
                    "the Lab colour (ab) of a black-and-white photo, laid over its own full-resolution lightness. "
                    "'colorize photo.jpg' colourises a file, 'colorize film.mp4' a video (steadied from frame to frame, "
                    "with its sound); see --mode for training, evaluation, the web app and export. The same "
                    "command is 'python Engine.py'.")
    ap.add_argument("inputs", nargs="*", metavar="INPUT", help="image or video files, or folders (same as --input)")
    ap.add_argument("--version", action="version", version=f"colorize {VERSION}")
    ap.add_argument("--mode", choices=MODES, default="inference",
                    help="inference: colourise the inputs; training: train on --data-dir; evaluate: score the "
                         "model and the grey baseline on folders of colour photos; serve: web page and HTTP API; "
                         "export: write --checkpoint as a verified .pt release or an .onnx graph (--output)")
    ap.add_argument("--device", choices=DEVICES, default="auto",
                    help="auto = CUDA when available, else CPU; under torchrun each process uses cuda:LOCAL_RANK")
    ap.add_argument("--checkpoint", default=None,
                    help="model file: a .pt checkpoint or an .onnx export (run on ONNX Runtime) (default: "
                         "weights/colorizer.pt, the shipped model)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help=f"images per forward pass; in training, per process: the global batch is batch size x "
                         f"processes (default: {t.batch_size} for training, 8 otherwise)")
    ap.add_argument("--max-megapixels", type=float, default=LIMITS["cli_megapixels"],
                    help=f"refuse images larger than this, checked from the file header before decoding (serve: "
                         f"default {LIMITS['web_megapixels']:g})")
    g = ap.add_argument_group("inference and evaluate")
    g.add_argument("--input", nargs="+", default=None,
                   help="image or video files, or folders (searched recursively); evaluate takes several folders "
                        "and prints one table each (videos: a flicker table) (default: examples/)")
    g.add_argument("--output", default=None,
                   help=f"output folder, created; with one input file it may name the output file (e.g. out.png) "
                        f"(default: {p.results_dir}/; evaluate writes CSV/JSON to {p.results_dir}/evaluation/, "
                        "plus a grid PNG only when --output is given)")
    g.add_argument("--format", choices=("png", "jpg", "webp"), default="png",
                   help="image output format in folder mode (videos are always .mp4)")
    g.add_argument("--side-by-side", action="store_true",
                   help="images: also write <stem>_compare.png: grey | colourised | original (if in colour)")
    g.add_argument("--temperature", type=float, default=None,
                   help="annealed-mean temperature for classification models (lower = more vivid); with "
                        "--mode export, the release's new default (default: the checkpoint's, "
                        f"{m.temperature} when trained here)")
    g.add_argument("--fid-weights", default=None, metavar="PATH",
                   help="evaluate: also report FID and the Inception Score, from this local copy of torch-fidelity's "
                        "Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth); without it evaluate reports "
                        "FD-VGG16, a Fréchet distance over VGG16 features that is not FID")
    g.add_argument("--temporal-smoothing", type=float, default=VideoConfig().temporal_smoothing, metavar="S",
                   help="videos: weight in [0, 1) of the colour carried along the motion from earlier frames "
                        "against each frame's own prediction, where optical flow can follow the scene; reset at "
                        "cuts; 0 = every frame on its own. Videos are written as H.264 .mp4 with their audio")
    g.add_argument("--crf", type=int, default=VideoConfig().crf,
                   help="videos: H.264 quality, 0 (best, largest) to 51 (smallest); +6 about halves the file")
    g = ap.add_argument_group("serve")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 = every interface)")
    g.add_argument("--port", type=int, default=8000, help="TCP port")
    g.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    g.add_argument("--max-concurrent", type=int, default=LIMITS["web_concurrent"],
                   help="images decoded and colourised at once; bounds the server's memory (others wait)")
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
    g.add_argument("--loss", choices=LOSSES, default=m.loss, help="ab loss (see README)")
    g.add_argument("--rebalance", type=float, default=t.rebalance,
                   help="classification: class-rebalancing lambda, 0.5 = Zhang et al., 1 = none")
    g.add_argument("--decoder-width", type=float, default=1.0,
                   help="multiplier on every decoder width (1 = the shipped decoder's widths)")
    g.add_argument("--epochs", type=int, default=t.epochs, help="total epochs (also when resuming)")
    g.add_argument("--lr", type=float, default=t.lr, help="AdamW peak learning rate (cosine decay by epoch)")
    g.add_argument("--weight-decay", type=float, default=t.weight_decay, help="AdamW weight decay")
    g.add_argument("--crop-scale", type=float, default=t.crop_scale[0],
                   help="smallest random crop, as a fraction of the image area (augmentation)")
    g.add_argument("--seed", type=int, default=t.seed, help="random seed (data order and augmentation)")
    g.add_argument("--workers", type=int, default=t.workers, help="data-loading processes (per training process)")
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
    add_gan_arguments(ap)
    return ap


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


def configs_from_args(args: argparse.Namespace) -> tuple[Paths, ModelConfig, TrainConfig]:
    """The References defaults with the command line's overrides applied."""
    paths = dataclasses.replace(
        Paths(), data_dir=Path(args.data_dir), val_dir=Path(args.val_dir) if args.val_dir else None,
        runs_dir=Path(args.runs_dir), results_dir=Path(args.output) if args.output else Paths().results_dir,
        backbone_weights=args.backbone_weights)
    cfg = dataclasses.replace(ModelConfig().scaled(args.decoder_width), image_size=args.image_size, loss=args.loss,
                              decoder=args.decoder)
    tcfg = dataclasses.replace(
        TrainConfig(), epochs=args.epochs, batch_size=args.batch_size or TrainConfig().batch_size, lr=args.lr,
        weight_decay=args.weight_decay, seed=args.seed, workers=args.workers, max_train_images=args.max_train_images,
        samples=args.samples, rebalance=args.rebalance, crop_scale=(args.crop_scale, 1.0),
        save_every_steps=args.save_every_steps, max_steps=args.max_steps, compile=args.compile,
        init_from=args.init_from, init_member=args.init_member)
    return paths, cfg, tcfg


def check_args(args: argparse.Namespace) -> str | None:
    """A usage error in words, or None."""
    if args.image_size < 32 or args.image_size % 16:
        return f"--image-size must be a multiple of 16 and at least 32 (got {args.image_size})"
    if not args.max_megapixels > 0:
        return f"--max-megapixels must be positive (got {args.max_megapixels:g})"
    if not 0 <= args.temporal_smoothing < 1:
        return f"--temporal-smoothing must be at least 0 and below 1 (got {args.temporal_smoothing:g})"
    if not 0 <= args.crf <= 51:
        return f"--crf must be between 0 and 51 (got {args.crf})"
    if args.batch_size is not None and args.batch_size < 1:
        return f"--batch-size must be at least 1 (got {args.batch_size})"
    if args.n_critic < 1 or args.gan_pretrain_steps < 0 or args.lambda_adv < 0:
        return "--n-critic must be at least 1, --gan-pretrain-steps and --lambda-adv at least 0"
    if args.init_from and args.resume:
        return "--init-from starts a new run; --resume continues one: give only one of them"
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv), pick the device once, run the mode. Returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.max_megapixels_given = any(a.startswith("--max-megapixels") for a in argv)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from EncoderLayers import BackboneUnavailableError  # imports torch: only once a mode runs
    from LoadData import ImageReadError, set_pixel_limit

    try:
        paths, cfg, tcfg = configs_from_args(args)
        set_pixel_limit(args.max_megapixels if args.mode != "serve" or args.max_megapixels_given
                        else LIMITS["web_megapixels"])
        if args.mode == "training":
            return run_training(args, paths, cfg, tcfg)
        if args.mode == "export":
            return run_export(args, paths)
        from Distributed import resolve_device

        device = resolve_device(args.device)
        return {"evaluate": run_evaluate, "serve": run_serve}.get(args.mode, run_inference)(args, paths, device)
    # User errors get one line; anything else (out of memory, a shape mismatch: bugs) keeps its traceback.
    except (OSError, ValueError, BackboneUnavailableError, ImageReadError, FloatingPointError) as e:  # VideoReadError too
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
