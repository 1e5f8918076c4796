"""Colourising a run's inputs: files, folders and films into --output, planned once, shared out, counted.

Owns what ``python Engine.py --mode inference`` (and ``colorize``) does with its inputs:
  * ``plan``: one output per input file for the whole run, sub-folders mirrored (several folders each
    get their own sub-folder of --output), so no output of the run overwrites another or an input;
    the output folder is never read as input;
  * ``--skip-existing``: outputs already on disk (an interrupted archive job) are left as they are;
  * sharing the work: ``--workers N`` processes take photos one at a time from a queue (each is written
    exactly once), and under ``torchrun`` each rank takes every world_size-th task; the summary counts
    are totals over all of them;
  * guided colour: ``attach_guidance`` gives each task its hint file and reference photo (--hints FILE|DIR,
    --reference PHOTO|DIR; a folder mirrors the input folder: ``scans/sub/a.jpg`` takes ``DIR/sub/a.json``
    and ``DIR/sub/a.<image>``), ``check_model`` refuses a model that cannot take them before any work, and
    --confidence writes each photo's confidence map. A photo whose hints or reference cannot be used fails
    alone, on one line; the others are still written.

Usage:
    tasks = attach_guidance(plan([Path("scans")], Path("results"), ".png"), Path("hints"), None)[0]
    report = run_workers(model_opener(Path("weights/colorizer.onnx"), "cpu", None), tasks, Options(), workers=2)
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import multiprocessing
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from Hints import HintError, Point, check_points, no_hints_error, read_hints
from tqdm.auto import tqdm

from ImageIO import ImageReadError, find_images, interrupt_on_sigterm, is_video, load_image, split_videos
from Folders import Report, colorize_paths, confidence_path, no_confidence_error, plan_outputs
from Inference import Colorizer
from References import IMAGE_EXTENSIONS, VIDEO_OUTPUT, VideoConfig


class UsageError(ValueError):
    """A request that cannot work, found before any input is colourised (the command line exits with 2)."""


@dataclass(frozen=True)
class Task:
    """One input file and the output it becomes; its hint file and reference photo, if any."""

    src: Path
    dst: Path
    rel: Path | None = None  # src under its input folder (a file input: its name), where its hints are looked up
    hints: Path | None = None
    reference: Path | None = None

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
    hints: Path | None = None  # --hints FILE or DIR (each task's own file: Task.hints)
    reference: Path | None = None  # --reference PHOTO or DIR (each task's own photo: Task.reference)
    confidence: bool = False  # also write <stem>.confidence.png beside each photo's output

    @property
    def guided(self) -> bool:
        """Whether the run gives the model colour points or reference photos."""
        return self.hints is not None or self.reference is not None


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
        return [Task(inputs[0], output_file, Path(inputs[0].name))]
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
                tasks += [Task(s, d, s.relative_to(inp) if inp.is_dir() else Path(s.name)) for s, d in zip(group, dsts)]
    return tasks


def shard(tasks: list[Task], rank: int, world: int) -> list[Task]:
    """This rank's share: every ``world``-th task from ``rank`` (disjoint, and together all of them)."""
    return tasks[rank::world]


def run_tasks_here(colorizer: Colorizer, tasks: list[Task], opts: Options, suffix: str = ".png") -> Report:
    """Colourise ``tasks`` in this process: photos in batches, then each film."""
    report = Report()
    photos = [t for t in tasks if not t.video]
    films = [t for t in tasks if t.video and not (t.hints or t.reference)]
    if photos:
        report.add(colorize_paths(colorizer, [t.src for t in photos], outputs=[t.dst for t in photos],
                                  batch_size=opts.batch_size, side_by_side=opts.side_by_side, suffix=suffix,
                                  max_pixels=opts.max_pixels, progress=opts.progress,
                                  hints=[t.hints for t in photos], references=[t.reference for t in photos],
                                  confidence=opts.confidence))
    if films:
        from Video import colorize_videos

        report.add(colorize_videos(colorizer, [t.src for t in films], Path("."), Path("."),
                                   outputs=[t.dst for t in films], smoothing=opts.smoothing, crf=opts.crf,
                                   batch_size=opts.batch_size, max_pixels=opts.max_pixels, progress=opts.progress))
    for t in tasks:
        if t.video and (t.hints or t.reference):
            report.add(colorize_film(colorizer, t, opts))
    return report


def skip_existing(tasks: list[Task], confidence: bool = False) -> tuple[list[Task], list[Path]]:
    """(the tasks still to do, the outputs already on disk). With ``confidence`` a photo is done only when its
    confidence map is there too (a run stopped between the two writes redoes it)."""
    done = {t.dst for t in tasks if t.dst.exists() and (not confidence or t.video or confidence_path(t.dst).exists())}
    return [t for t in tasks if t.dst not in done], [t.dst for t in tasks if t.dst in done]


# ----------------------------------------------------------------------------- --hints, --reference, --confidence

def attach_guidance(tasks: list[Task], hints: Path | None, reference: Path | None) -> tuple[list[Task], list[str]]:
    """Each task with its hint file and reference photo: (the tasks, warnings to print).

    A FILE applies to the one task (--hints; UsageError for more) or to every task (--reference). A folder
    mirrors each input folder: ``Task.rel`` ``sub/a.jpg`` takes ``DIR/sub/a.json`` (--hints) and the image
    ``DIR/sub/a.*`` (--reference); a task with none gets none. UsageError for two reference images of one name.
    """
    notes = []
    if hints is not None and hints.is_file() and len(tasks) != 1:
        raise UsageError(f"--hints {hints} is one file, for one photo or film; for {len(tasks)} inputs give a "
                         "folder holding <photo stem>.json for each")
    hint_files = _by_name(hints, lambda p: p.suffix.lower() == ".json") if hints is not None and hints.is_dir() else {}
    ref_files = (_by_name(reference, lambda p: p.suffix.lower() in IMAGE_EXTENSIONS)
                 if reference is not None and reference.is_dir() else {})
    out, used = [], set()
    for t in tasks:
        key = (t.rel or Path(t.src.name)).with_suffix("")
        h = hints if hints is not None and hints.is_file() else (hint_files.get(key) or [None])[0]
        refs = [reference] if reference is not None and reference.is_file() else ref_files.get(key, [])
        if len(refs) > 1:
            raise UsageError(f"--reference {reference}: {' and '.join(map(str, refs))} are both the reference for "
                             f"{t.src}; keep one")
        used.add(key)
        out.append(dataclasses.replace(t, hints=h, reference=refs[0] if refs else None))
    unused = sorted(str(f[0]) for k, f in hint_files.items() if k not in used)
    if unused:
        notes.append(f"warning: {len(unused)} hint file(s) in {hints} match no input, so they are not used: "
                     f"{', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''} (a photo scans/sub/a.jpg "
                     f"takes {hints / 'sub' / 'a.json'})")
    if ref_files and not any(t.reference for t in out):
        notes.append(f"warning: --reference {reference}: no photo there has an input's name; none is used")
    return out, notes


def _by_name(folder: Path, keep: Callable[[Path], bool]) -> dict[Path, list[Path]]:
    """The files under ``folder`` that ``keep`` accepts, by their path under it without the suffix."""
    found: dict[Path, list[Path]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and keep(p) and not p.name.startswith("."):
            found.setdefault(p.relative_to(folder).with_suffix(""), []).append(p)
    return found


def check_model(colorizer: Colorizer, opts: Options) -> None:
    """Before any work: UsageError when the model cannot take the run's colour points and references, or give
    its --confidence map; HintError or ImageReadError (naming the file) for a --reference photo that cannot
    guide anything."""
    if opts.guided and not colorizer.guided:
        raise UsageError(str(no_hints_error(colorizer.name)))
    if opts.confidence and colorizer.ab_for([np.zeros((8, 8), np.uint8)], entropy=True)[1] is None:
        raise UsageError(str(no_confidence_error(colorizer.name)))
    if opts.reference is not None and opts.reference.is_file():  # the one reference of every input: check it once
        colorizer.reference_hint(load_image(opts.reference, max_pixels=opts.max_pixels), str(opts.reference))


def film_size(path: Path) -> tuple[int, int, int]:
    """A film's (width, height, frame count) from its header (OpenCV); 0 for what it cannot tell."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0, 0, 0
        return (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))))
    finally:
        cap.release()


def film_guidance(colorizer: Colorizer, task: Task, max_pixels: int | None) -> tuple[list[Point], np.ndarray | None]:
    """A film task's (points, each with its frame or None, checked against the film's size and length; the
    reference's global hint or None). HintError or ImageReadError naming the file."""
    points: list[Point] = []
    if task.hints is not None:
        points = read_hints(task.hints)
        width, height, frames = film_size(task.src)
        if width and height:  # else the film is unreadable, and Video says so
            check_points(points, width, height, str(task.hints), frames or None)
    glob = None
    if task.reference is not None:
        glob = colorizer.reference_hint(load_image(task.reference, max_pixels=max_pixels), str(task.reference))
    return points, glob


def colorize_film(colorizer: Colorizer, task: Task, opts: Options) -> Report:
    """One film with its colour points and reference (Video.colorize_video's ``guidance`` and ``reference``);
    a film that fails, or whose hints or reference cannot be used, is reported on one line."""
    import Video
    import VideoFiles

    report = Report()
    try:
        points, glob = film_guidance(colorizer, task, opts.max_pixels)
        if "guidance" not in inspect.signature(Video.colorize_video).parameters:
            raise HintError(f"{task.src}: this version cannot guide films (Video.colorize_video takes no guidance)")
        r = Video.colorize_video(colorizer, task.src, task.dst, opts.smoothing, opts.batch_size, opts.max_pixels,
                                 opts.progress, dataclasses.replace(VideoConfig(), crf=opts.crf),
                                 guidance=points or None, reference=glob)
    except (VideoFiles.VideoReadError, OSError, HintError, ImageReadError) as e:
        report.failed.append((task.src, str(e)))
        tqdm.write(f"error: {e}", file=sys.stderr)
        return report
    report.written.append(task.dst)
    if opts.progress:
        tqdm.write(Video.summary(task.src, r, task.dst, bool(points)))
    return report


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
    report = Report()
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding a model and threads
    with ctx.Pool(workers, initializer=_init_worker, initargs=(open_model, opts, suffix)) as pool:
        try:
            with tqdm(total=len(tasks), desc=f"colourising ({workers} processes)", unit="file",
                      disable=not opts.progress) as bar:
                for r in pool.imap_unordered(_work, tasks):  # each worker prints its own errors
                    report.add(r)
                    bar.update(1)
            pool.close()  # let the workers exit: the with block's terminate() would SIGTERM them mid-wait,
            pool.join()  # and each would print a KeyboardInterrupt traceback after a run that went well
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
        check_model(colorizer, opts)
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
