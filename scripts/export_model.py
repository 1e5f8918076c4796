"""Turn a training checkpoint into a verified release file (same as ``python Engine.py --mode export``).

The release file keeps everything inference needs (encoder and decoder weights, the
model config, and for classification the ab bins and prior) plus the training record
(epoch, best metric, resolved config); conv weights are float16, BatchNorm float32.
It is refused if any tensor is not finite or its outputs drift from the source (see Export.py).

Usage:
    python scripts/export_model.py runs/class128/last.pt weights/colorizer.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from Export import ExportError, describe, export_release  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="a last.pt/best.pt from a training run")
    ap.add_argument("output", help="release file to write, e.g. weights/colorizer.pt")
    args = ap.parse_args(argv)
    try:
        report = export_release(Path(args.checkpoint), Path(args.output))
    except (ExportError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {describe(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
