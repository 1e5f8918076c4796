"""The command line: argument parsing, device choice and dispatch to the modes. Nothing else.

Modes: ``inference`` (colourise photos, folders and films at full resolution; Batch), ``training`` (Training.fit,
also under torchrun), ``evaluate`` (scores against the originals beside the grey baseline; Evaluate), ``serve``
(the web page and HTTP API; WebApp) and ``export`` (a verified .pt release or an ONNX graph; Export). Inference and
serve run in the light install (ONNX Runtime, no torch); the other modes need the [train] extra and say so. Heavy
libraries are imported only once a mode runs, so ``--help`` answers at once; ``--help`` shows the options of
the chosen ``--mode``. The installed ``colorize`` command is ``main``.

Usage:
    colorize photo.jpg --output photo_colour.png
    python Engine.py --mode inference --input examples --output results
    torchrun --standalone --nproc_per_node=2 Engine.py --mode training --data-dir photos/train --device cpu
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from CommandLine import MODE_HELP, configs_from_args, guidance_problem, value_problem
from References import GPU_DRIVER_FILES, GanConfig, ModelConfig, Paths, TrainConfig

if TYPE_CHECKING:  # Batch loads numpy, OpenCV and ONNX Runtime: only once a mode runs
    import Batch

MODES = ("inference", "training", "evaluate", "serve", "export")
NEEDS_TORCH = ("training", "evaluate", "export")
COMMON = {"help", "mode", "checkpoint", "device"}
SHOWN = {  # the options each mode's --help lists (all of them parse in every mode)
    "inference": COMMON | {"inputs", "version", "input", "output", "format", "side_by_side", "temperature", "batch_size",
                           "max_megapixels", "temporal_smoothing", "crf", "skip_existing", "workers", "hints",
                           "reference", "confidence"},
    "evaluate": COMMON | {"inputs", "input", "output", "temperature", "batch_size", "max_megapixels",
                          "temporal_smoothing", "fid_weights", "backbone_weights", "no_fd", "hints", "reference"},
    "serve": COMMON | {"host", "port", "threads", "max_concurrent", "max_megapixels", "session_mb", "temperature"},
    "export": COMMON | {"ensemble", "output", "temperature"},
}


def input_paths(args: argparse.Namespace, default: Path) -> list[Path]:
    """The positional inputs and --input values, in order (default: ``default``)."""
    given = list(args.inputs or []) + list(args.input or [])
    return [Path(p) for p in given] or [default]


def model_path(args: argparse.Namespace, paths: Paths, device: str) -> Path:
    """--checkpoint, else the shipped model: the ONNX file, or its .pt twin on a GPU (same weights, torch)."""
    if args.checkpoint:
        return Path(args.checkpoint)
    return paths.torch_checkpoint if device.startswith("cuda") else paths.default_checkpoint


def run_inference(args: argparse.Namespace, paths: Paths) -> int:
    """Colourise every input (image or video file, or folder) into --output; exit status 1 if any failed, 2 if the
    model cannot take --hints, --reference or --confidence. Under torchrun the ranks share the work; with
    --workers N, N processes do."""
    from ImageIO import check_inputs

    inputs = input_paths(args, paths.examples_dir)
    check_inputs(inputs)  # before the model, OpenCV and ONNX Runtime load
    import Batch

    out = paths.results_dir
    suffix = out.suffix if Batch.output_target(inputs, out) else "." + args.format.replace("jpeg", "jpg")
    opts = Batch.Options(args.batch_size or 8, args.side_by_side, int(args.max_megapixels * 1e6),
                         args.temporal_smoothing, args.crf, hints=Path(args.hints) if args.hints else None,
                         reference=Path(args.reference) if args.reference else None, confidence=args.confidence)
    try:
        tasks, notes = Batch.attach_guidance(Batch.plan(inputs, out, suffix, output_file=out if out.suffix == suffix
                                                        else None), opts.hints, opts.reference)
        if opts.confidence and any(t.video for t in tasks):
            notes.append("warning: --confidence maps are written for photos; films get none")
        for note in notes if int(os.environ.get("RANK", 0)) == 0 else ():  # torchrun: rank 0 says it once
            print(note, file=sys.stderr)
        skipped: list[Path] = []
        if args.skip_existing:
            tasks, skipped = Batch.skip_existing(tasks, opts.confidence)
        report, main_rank, checkpoint = run_tasks(args, paths, tasks, opts, suffix)
    except Batch.UsageError as e:
        if int(os.environ.get("RANK", 0)) == 0:  # torchrun: every rank finds it; rank 0 says it
            print(f"error: {e}", file=sys.stderr)
        return 2
    report.skipped += skipped
    if main_rank:
        print(Batch.summary(report, out, checkpoint.name, single=out.suffix == suffix))
    return 1 if report.failed else 0


def run_tasks(args: argparse.Namespace, paths: Paths, tasks: list[Batch.Task], opts: Batch.Options,
              suffix: str) -> tuple[Batch.Report, bool, Path]:
    """Batch's tasks in this process, in --workers processes or in this torchrun rank: (the report, whether this
    process prints the summary, the model file). The model is checked (Batch.check_model) before any work."""
    import Batch

    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # torchrun: each rank its share, on its own device
        return Batch.run_distributed(lambda device: model_path(args, paths, device), args.device, args.temperature,
                                     tasks, opts, suffix)
    device = pick_device(args.device)
    checkpoint = model_path(args, paths, device)
    workers = min(args.workers or 1, max(1, len(tasks)))
    colorizer = None
    if workers == 1 or opts.guided or opts.confidence:
        colorizer = Batch.open_model(checkpoint, device, args.temperature)
        Batch.check_model(colorizer, opts)
    if workers == 1:
        return Batch.run_tasks_here(colorizer, tasks, opts, suffix), True, checkpoint
    del colorizer  # the workers open their own
    threads = max(1, (os.cpu_count() or 1) // workers)
    return Batch.run_workers(Batch.model_opener(checkpoint, device, args.temperature, threads), tasks, opts,
                             workers, suffix), True, checkpoint


def run_evaluate(args: argparse.Namespace, paths: Paths) -> int:
    """Score the model and the grey baseline on each input folder (Evaluate.evaluate_inputs)."""
    from Evaluate import evaluate_inputs
    from Inference import Colorizer

    device = pick_device(args.device)
    colorizer = Colorizer.from_checkpoint(model_path(args, paths, device), device, args.temperature)

    def scorers() -> tuple:
        if args.no_fd:
            return ()
        from FrechetDistance import InceptionScores, VGGFrechet, load_fd_backbone
        found: tuple = (VGGFrechet(load_fd_backbone(args.backbone_weights, paths.torch_checkpoint), device),)
        return found + ((InceptionScores(args.fid_weights),) if args.fid_weights else ())
    return evaluate_inputs(colorizer, input_paths(args, paths.examples_dir),
                           Path(args.output) if args.output else paths.results_dir / "evaluation",
                           batch_size=args.batch_size or 8, max_pixels=int(args.max_megapixels * 1e6),
                           smoothing=args.temporal_smoothing, grid=bool(args.output), open_scorers=scorers,
                           hints=args.hints, reference=args.reference)


def run_serve(args: argparse.Namespace, paths: Paths) -> int:
    """Serve the web page and HTTP API under waitress until interrupted; a busy port fails before loading."""
    from Inference import Colorizer
    from WebApp import check_port, serve

    check_port(args.host, args.port)
    device = pick_device(args.device)
    colorizer = Colorizer.from_checkpoint(model_path(args, paths, device), device, args.temperature)
    serve(colorizer, args.host, args.port, args.threads, max_megapixels=args.max_megapixels,
          max_concurrent=args.max_concurrent, session_mb=args.session_mb)
    return 0


def run_export(args: argparse.Namespace, paths: Paths) -> int:
    """--checkpoint (a training checkpoint or release) -> --output: a verified .pt release, or .onnx."""
    from Export import describe, export_onnx, export_release

    if not args.output:
        raise ValueError("--mode export needs --output, e.g. weights/colorizer.onnx or weights/colorizer.pt")
    if args.ensemble and (args.checkpoint or len(args.ensemble) < 2):
        raise ValueError("--ensemble takes two or more checkpoints and replaces --checkpoint")
    sources = [Path(c) for c in args.ensemble or [args.checkpoint or paths.torch_checkpoint]]
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

    if args.refiner:
        from Refining import fit_refiner
        return fit_refiner(paths, tcfg, args.refiner, Distributed.resolve_device(args.device), args.run_name)

    gcfg = GanConfig(kind=args.gan, lambda_adv=args.lambda_adv, gan_loss=args.gan_loss, d_lr=args.d_lr,
                     d_width=args.d_width, lambda_gp=args.lambda_gp, n_critic=args.n_critic,
                     pretrain_steps=args.gan_pretrain_steps, collapse_steps=args.collapse_steps)
    with Distributed.process_group(args.device) as dist:
        return fit(paths, cfg, tcfg, dist, run_name=args.run_name, resume=Path(args.resume) if args.resume else None,
                   gcfg=gcfg)


def pick_device(name: str) -> str:
    """The device, chosen once: "cpu", or "cuda:N" when torch (the [train] install) sees a GPU and ``name`` allows.

    With ``name`` "auto" on a Linux machine without any GPU driver, the answer is "cpu" without importing torch:
    importing it only to hear that there is no GPU costs about 2.6 s and 600 MB, more than colourising a photo."""
    if not has_torch():
        if name == "cuda":
            raise ValueError("--device cuda needs torch: pip install 'colorizer[train]'")
        return "cpu"
    if name == "cpu" or (name == "auto" and sys.platform.startswith("linux")
                         and not any(os.path.exists(f) for f in GPU_DRIVER_FILES)):
        return "cpu"
    from Distributed import resolve_device
    return str(resolve_device(name))


def has_torch() -> bool:
    """Whether torch (the [train] install) is there, without importing it."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def build_parser(mode: str = "inference") -> argparse.ArgumentParser:
    """Every option of every mode; ``mode``'s --help lists its own (the rest parse but are not shown)."""
    from CommandLine import add_arguments  # the option definitions (imports References only)

    ap = argparse.ArgumentParser(
        prog="colorize", formatter_class=_HelpFormatter,
        description="Colourise black-and-white photos and films: 'colorize photo.jpg', 'colorize scans/', "
                    "'colorize film.mp4' (steadied from frame to frame, with its sound). The same command is "
                    "'python Engine.py'.",
        epilog=None if mode != "inference" else "Other modes have their own options: colorize --mode training "
                                                "--help (also evaluate, serve, export).")
    add_arguments(ap, MODES)
    shown = SHOWN.get(mode) or COMMON | {"batch_size", "workers"} | {  # training: its groups
        a.dest for g in ap._action_groups if g.title.startswith(("training", "adversarial")) for a in g._group_actions}
    for action in ap._actions:
        if action.dest not in shown:
            action.help = argparse.SUPPRESS
        elif action.dest in MODE_HELP.get(mode, {}):
            action.metavar, action.help = MODE_HELP[mode][action.dest]
    return ap


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" except where the help text already explains an unset default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def check_args(args: argparse.Namespace) -> str | None:
    """A usage error in words, or None; fills in --max-megapixels' default for the mode."""
    problem = value_problem(args) or guidance_problem(args)
    if problem:
        return problem
    if args.mode in NEEDS_TORCH and not has_torch():
        return f"--mode {args.mode} needs the training install (torch): pip install 'colorizer[train]'"
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv), pick the device once, run the mode. Returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--mode", default="inference")
    args = build_parser(pre.parse_known_args(argv)[0].mode).parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from ImageIO import ImageReadError, set_pixel_limit, sigterm_as_interrupt

    try:
        paths, cfg, tcfg = configs_from_args(args)
        set_pixel_limit(args.max_megapixels)
        with sigterm_as_interrupt():  # docker stop / systemd clean up exactly as Ctrl-C does
            if args.mode == "training":
                return run_training(args, paths, cfg, tcfg)
            if args.mode == "export":
                return run_export(args, paths)
            return {"evaluate": run_evaluate, "serve": run_serve}.get(args.mode, run_inference)(args, paths)
    # What a user can cause gets one line (a missing file, a bad image, a full disk, a wrong option value).
    except (OSError, ImageReadError, *user_errors()) as e:  # OSError: a missing file, a busy port, a full disk
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that carry a user-facing one-line message, from the modules already loaded."""
    found: list[type[BaseException]] = [ValueError]
    for module, name in (("EncoderLayers", "BackboneUnavailableError"), ("VideoFiles", "VideoReadError"),
                         ("Export", "ExportError")):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            found.append(cls)
    found.append(FloatingPointError)
    return tuple(found)


if __name__ == "__main__":
    sys.exit(main())
