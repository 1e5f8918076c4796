"""The README's guided-colour table: automatic colour, 1-50 simulated points and a reference photo, each beside its
trivial post-process of the automatic output (GuidedEvaluate, GuidedBaselines), per folder of colour photos.

Rows: grey, automatic, then for each of 1, 2, 5, 10, 20, 50 points the model and "spread" (each point's correction
spread by distance and lightness), and for reference self and other the model and "transfer" (ab mean/std
transfer). Columns: PSNR, SSIM, CF, dCF, and for point rows the hint error. Prints Markdown; writes
<output>/guided_table.json and .md, and per folder <output>/<folder>/metrics.csv and metrics.json.

Usage:
    python scripts/guided_table.py                                   # val_scenes and val, the shipped model
    python scripts/guided_table.py photos/ --rows 10,self --limit 8 --checkpoint weights/colorizer.onnx
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from Evaluate import format_table, write_reports  # noqa: E402
from GuidedEvaluate import REFERENCES, Setting, evaluate_guided_folder  # noqa: E402
from ImageIO import atomic_write, find_images  # noqa: E402
from Inference import Colorizer  # noqa: E402
from Metrics import summarise  # noqa: E402
from References import ROOT, Paths  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "colorize-corpus"
ROWS = "1,2,5,10,20,50,self,other"


def settings_of(rows: str) -> list[Setting]:
    """"1,2,10,self,other" -> the Settings (a number: that many points; self/other: that reference)."""
    found = []
    for item in filter(None, (r.strip() for r in rows.split(","))):
        if item in REFERENCES:
            found.append(Setting(reference=item))
        elif item.isdigit() and int(item) > 0:
            found.append(Setting(points=int(item)))
        elif item != "auto":  # the automatic row is always there
            raise ValueError(f"--rows: {item!r} is neither a number of points nor {' or '.join(REFERENCES)}")
    return found


def folder_table(colorizer: Colorizer, folder: Path, settings: list[Setting], limit: int, out_dir: Path) -> dict:
    """Score one folder; print its table and write its per-image reports. Returns its JSON entry."""
    files = find_images(folder)[:limit or None]
    start = time.perf_counter()
    rows, _, failed = evaluate_guided_folder(colorizer, files, settings)
    seconds = time.perf_counter() - start
    if not rows:
        raise ValueError(f"{folder}: no colour photo could be read")
    table = summarise(rows)
    print(f"\n### {folder.name} ({table[0]['images']} photos, {colorizer.name}; {seconds:.0f} s)\n\n"
          f"{format_table(table)}", flush=True)
    write_reports(rows, out_dir / folder.name, table=table)
    return {"folder": folder.name, "photos": table[0]["images"], "unreadable": [str(f) for f, _ in failed],
            "seconds": seconds, "table": table}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", type=Path, default=[CORPUS / "val_scenes", CORPUS / "val"])
    ap.add_argument("--checkpoint", type=Path, default=Paths().default_checkpoint, help="a guided model")
    ap.add_argument("--rows", default=ROWS, help=f"comma-separated: numbers of points, self, other (default {ROWS})")
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos of each folder (a quick look)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: one per core)")
    ap.add_argument("--output", type=Path, default=Paths().results_dir / "guided_table")
    args = ap.parse_args(argv)
    try:
        settings = settings_of(args.rows)
        colorizer = Colorizer.from_checkpoint(args.checkpoint, threads=args.threads)
        entries = [folder_table(colorizer, f, settings, args.limit, args.output) for f in args.folders]
    except (OSError, ValueError) as e:  # HintError (an unguided model) is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1
    model = args.checkpoint.resolve()  # named relative to the repository when inside it: no machine's paths
    doc = {"checkpoint": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model), "rows": args.rows,
           "limit": args.limit, "folders": entries}
    atomic_write(args.output / "guided_table.json", lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2)))
    md = "\n\n".join(f"### {e['folder']} ({e['photos']} photos)\n\n{format_table(e['table'])}"
                     for e in entries)
    atomic_write(args.output / "guided_table.md", lambda tmp: Path(tmp).write_text(md + "\n"))
    print(f"\nwrote {args.output / 'guided_table.json'}, {args.output / 'guided_table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
