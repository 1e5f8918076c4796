"""Colourising a run's inputs: files, folders and films into --output, planned once, shared out, counted.

Owns what ``python Engine.py --mode inference`` (and ``colorize``) does with its inputs:
  * ``plan``: one output per input file for the whole run, sub-folders mirrored (several folders each
    get their own sub-folder of --output), so no output of the run overwrites another or an input;
    the output folder is never read as input;
  * ``--skip-existing``: outputs already on disk (an interrupted archive job) are left as they are;
  * sharing the work: ``--workers N`` processes take photos one at a time from a queue (each is written
    exactly once), and under ``torchrun`` each rank takes every world_size-th task; the summary counts
    are totals over all of them.

Usage:
    tasks = plan([Path("scans")], Path("results"), ".png")
    report = run_workers(model_opener(Path("weights/colorizer.onnx"), "cpu", None), tasks, Options(), workers=2)
"""
from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ImageIO import find_images, interrupt_on_sigterm, is_video, split_videos
from Inference import Colorizer, Report, colorize_paths, plan_outputs
from References import IMAGE_EXTENSIONS, VIDEO_OUTPUT


@dataclass(frozen=True)
class Task:
    """One input file and the output it becomes."""

    src: Path
    dst: Path

    @property
    def video(self) -> bool:
        return is_video(self.src)


@dataclass(frozen=True)
class Options:
    """How each task is colourised (the command line's inference options)."""

    batch_size: int = 8
    side_by_side: bool = False
    max_pixels: int | None = None
    smoothing: float = 0.8
    crf: int = 20
    progress: bool = True


def output_target(inputs: list[Path], out: Path) -> bool:
    """True when --output names the one output file (one input file and a matching suffix: an image
    suffix for an image, .mp4 for a video); ValueError when it names a file that cannot be."""
    one = len(inputs) == 1 and inputs[0].is_file()
    suffix = out.suffix.lower()
    if one and suffix in ((VIDEO_OUTPUT,) if is_video(inputs[0]) else IMAGE_EXTENSIONS):
        return True
    if suffix in IMAGE_EXTENSIONS + (VIDEO_OUTPUT,) and not out.is_dir():
        named = "a video" if suffix == VIDEO_OUTPUT else "an image"
        what = ("a video" if is_video(inputs[0]) else "an image") if one else f"{len(inputs)} inputs"
        raise ValueError(f"--output {out} names {named} file, but the input is {what}; give a folder"
                         + (f" or a {VIDEO_OUTPUT} file" if one and is_video(inputs[0]) else ""))
    return False


def plan(inputs: list[Path], out: Path, suffix: str, output_file: Path | None = None) -> list[Task]:
    """Every task of a run, in input order. With ``output_file`` the one input file becomes that file.
    With several inputs, a folder ``a`` goes to ``out/a/...`` (its sub-folders mirrored) and files go to
    ``out``; names that would still clash get a suffix (``x_jpg.png``, ``x_2.png``)."""
    if output_file is not None:
        if output_file.resolve() == inputs[0].resolve():
            raise ValueError(f"--output {output_file} is the input itself; inputs are never overwritten")
        return [Task(inputs[0], output_file)]
    listed = [(inp, find_images(inp, videos=True, exclude=out)) for inp in inputs]
    every_input = {f.resolve() for _, files in listed for f in files}
    taken: set[Path] = set()
    tasks = []
    for inp, files in listed:
        root_out = out / inp.name if len(inputs) > 1 and inp.is_dir() else out
        images, clips = split_videos(files)
        for group, sfx in ((images, suffix), (clips, VIDEO_OUTPUT)):
            if group:
                dsts = plan_outputs(group, inp, root_out, sfx, taken, every_input)
                tasks += [Task(s, d) for s, d in zip(group, dsts)]
    return tasks


def shard(tasks: list[Task], rank: int, world: int) -> list[Task]:
    """This rank's share: every ``world``-th task from ``rank`` (disjoint, and together all of them)."""
    return tasks[rank::world]


def run_tasks_here(colorizer: Colorizer, tasks: list[Task], opts: Options, suffix: str = ".png") -> Report:
    """Colourise ``tasks`` in this process: photos in batches, then each film."""
    report = Report()
    photos = [t for t in tasks if not t.video]
    films = [t for t in tasks if t.video]
    if photos:
        report.add(colorize_paths(colorizer, [t.src for t in photos], outputs=[t.dst for t in photos],
                                  batch_size=opts.batch_size, side_by_side=opts.side_by_side, suffix=suffix,
                                  max_pixels=opts.max_pixels, progress=opts.progress))
    if films:
        from Video import colorize_videos

        report.add(colorize_videos(colorizer, [t.src for t in films], Path("."), Path("."),
                                   outputs=[t.dst for t in films], smoothing=opts.smoothing, crf=opts.crf,
                                   batch_size=opts.batch_size, max_pixels=opts.max_pixels, progress=opts.progress))
    return report


def skip_existing(tasks: list[Task]) -> tuple[list[Task], list[Path]]:
    """(the tasks still to do, the outputs already on disk)."""
    done = {t.dst for t in tasks if t.dst.exists()}
    return [t for t in tasks if t.dst not in done], [t.dst for t in tasks if t.dst in done]


# ----------------------------------------------------------------------------- --workers N

_worker: dict = {}


def _init_worker(open_model: Callable[[], Colorizer], opts: Options, suffix: str) -> None:
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)  # a terminated pool still removes its temp files
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _worker.update(colorizer=open_model(), opts=opts, suffix=suffix)


def _work(task: Task) -> Report:
    quiet = dataclasses.replace(_worker["opts"], progress=False)
    return run_tasks_here(_worker["colorizer"], [task], quiet, _worker["suffix"])


def run_workers(open_model: Callable[[], Colorizer], tasks: list[Task], opts: Options, workers: int,
                suffix: str = ".png") -> Report:
    """``workers`` processes, each with its own model (``open_model`` must be picklable), take the tasks one
    at a time from a shared queue; each task is done exactly once. Returns the combined report."""
    from tqdm.auto import tqdm

    report = Report()
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding a model and threads
    with ctx.Pool(workers, initializer=_init_worker, initargs=(open_model, opts, suffix)) as pool:
        try:
            with tqdm(total=len(tasks), desc=f"colourising ({workers} processes)", unit="file",
                      disable=not opts.progress) as bar:
                for r in pool.imap_unordered(_work, tasks):  # each worker prints its own errors
                    report.add(r)
                    bar.update(1)
        except BaseException:
            pool.terminate()
            raise
    return report


def open_model(checkpoint: Path, device: str, temperature: float | None, threads: int = 0) -> Colorizer:
    """``Colorizer.from_checkpoint`` as a picklable call for worker processes (``threads``: ONNX Runtime's)."""
    return Colorizer.from_checkpoint(checkpoint, device, temperature, threads=threads)


def model_opener(checkpoint: Path, device: str, temperature: float | None, threads: int = 0) -> Callable[[], Colorizer]:
    return functools.partial(open_model, checkpoint, device, temperature, threads)


# ----------------------------------------------------------------------------- torchrun

def run_distributed(checkpoint_for: Callable[[str], Path], device_name: str, temperature: float | None,
                    tasks: list[Task], opts: Options, suffix: str) -> tuple[Report, bool, Path]:
    """Under torchrun: this rank colourises its ``shard`` of ``tasks`` on its own device, with the model
    ``checkpoint_for(device)``; returns (the totals over every rank, whether this is rank 0 (the one that
    prints the summary), the model file)."""
    import Distributed

    with Distributed.process_group(device_name) as dist:
        mine = shard(tasks, dist.rank, dist.world_size)
        checkpoint = checkpoint_for(str(dist.device))
        colorizer = Colorizer.from_checkpoint(checkpoint, dist.device, temperature)
        local = run_tasks_here(colorizer, mine, dataclasses.replace(opts, progress=opts.progress and dist.is_main),
                               suffix)
        total = Report()
        for r in dist.gather(local):
            total.add(r)
        return total, dist.is_main, checkpoint


def summary(report: Report, out: Path, model: str, single: bool) -> str:
    """The run's last line: what was written where, with which model; what was skipped or failed."""
    where = report.written[0] if single and report.written else out
    videos = sum(p.suffix == VIDEO_OUTPUT for p in report.written)  # image outputs never end in .mp4
    stills = len(report.written) - videos
    counts = " and ".join([f"{stills} image(s)"] * bool(stills or not videos) + [f"{videos} video(s)"] * bool(videos))
    return (f"wrote {counts} to {where} with {model}"
            + (f"; {len(report.skipped)} already there, skipped" if report.skipped else "")
            + (f"; {len(report.failed)} failed (listed above)" if report.failed else ""))
