"""Turn a training checkpoint into a verified release file, .pt or .onnx (as ``python Engine.py --mode export``).

The release file keeps everything inference needs (encoder and decoder weights, the
model config, and for classification the ab bins and prior) plus the training record
(epoch, best metric, resolved config); conv weights are float16, BatchNorm float32.
It is refused if any tensor is not finite or its outputs drift from the source (see Export.py).

Several checkpoints become one ensemble (their decoders on the shared frozen encoder, see
Export.assemble); ``--temperature`` sets the release's default decoding temperature.

An output ending in .onnx is an ONNX graph for ONNX Runtime (Export.export_onnx), refused if an
initializer is not finite or ONNX Runtime's output drifts from torch's; ``--onnx-weights float16``
(the default) stores the initializers that float16 holds exactly in float16, ``float32`` all in
float32. ``weights/colorizer.onnx`` is written by the last usage line.

Usage:
    python scripts/export_model.py runs/class128/last.pt weights/colorizer.pt
    python scripts/export_model.py runs/a/last.pt runs/b/last.pt weights/colorizer.pt --temperature 0.2
    python scripts/export_model.py weights/colorizer.pt weights/colorizer.onnx
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from Export import ONNX_WEIGHTS, ExportError, describe, export_onnx, export_release  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="+", help="a last.pt/best.pt from a training run (several: an ensemble)")
    ap.add_argument("output", help="release file to write: weights/colorizer.pt, or an ONNX graph (.onnx)")
    ap.add_argument("--temperature", type=float, default=None, help="the release's default temperature")
    ap.add_argument("--onnx-weights", choices=ONNX_WEIGHTS, default="float16",
                    help="ONNX only: float16 stores the initializers float16 holds exactly in float16 (default)")
    args = ap.parse_args(argv)
    sources = [Path(c) for c in args.checkpoint]
    source, output = (sources if len(sources) > 1 else sources[0]), Path(args.output)
    try:
        if output.suffix == ".onnx":
            report = export_onnx(source, output, args.temperature, weights=args.onnx_weights)
        else:
            report = export_release(source, output, args.temperature)
    except (ExportError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {describe(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
