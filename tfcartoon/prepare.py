"""Turn a folder of raw photos into aligned 256x256 face crops for training.

    python -m tfcartoon.prepare RAW_DIR OUT_DIR [--size 256] [--min-face 48] [--report report.csv]

Every file under RAW_DIR (recursively, hidden files and folders excepted) is
tried, whatever its extension. Each
face found becomes one aligned crop in OUT_DIR, in the same sub-folder layout,
named ``<stem>_face<k>.jpg`` (k = 0 for the largest face). A report (CSV or JSON,
by the extension) lists every input with its outcome; every file that yields no
crop gets a one-line reason on stderr. Inputs are never modified and existing
outputs are kept unless ``--overwrite``. Exit status: 0 when every file gave at
least one crop, 1 when any did not, 2 for bad arguments.
"""

import argparse
import sys
import time
from pathlib import Path

from tfcartoon.data.images import DEFAULT_MAX_MEGAPIXELS, DEFAULT_MIN_SIDE
from tfcartoon.filejobs import (
    STATUS_OK,
    Outcome,
    claim,
    list_inputs,
    output_stems,
    read_and_detect,
    run_files,
    summary_line,
    write_output,
    write_report,
)

REPORT_NAME = "prepare_report.csv"


def build_parser():
    """The command-line parser of ``python -m tfcartoon.prepare``."""
    parser = argparse.ArgumentParser(
        prog="python -m tfcartoon.prepare",
        description=(
            "Detect faces in every file under RAW_DIR and write one aligned, eye-level, "
            "white-padded square crop per face to OUT_DIR (same sub-folders), plus a report."
        ),
        epilog="Exit status: 0 all files gave a crop, 1 some did not (see the report), 2 bad arguments.",
    )
    parser.add_argument("raw_dir", metavar="RAW_DIR", type=Path, help="folder of photos, searched recursively")
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path,
                        help="folder for the crops; must not be RAW_DIR or inside it")
    parser.add_argument("--size", type=int, default=256, help="side of the square crops in pixels (default 256)")
    parser.add_argument("--min-face", type=int, default=48,
                        help="ignore faces whose box is smaller than this many pixels (default 48)")
    parser.add_argument("--min-confidence", type=float, default=0.8,
                        help="ignore detections scored below this by MTCNN (default 0.8)")
    parser.add_argument("--largest-only", action="store_true", help="keep only the largest face of each photo")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="crop file format (default jpg)")
    parser.add_argument("--report", type=Path, default=None,
                        help=f"report file, .csv or .json (default OUT_DIR/{REPORT_NAME})")
    parser.add_argument("--overwrite", action="store_true", help="replace crops that already exist in OUT_DIR")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                        help="refuse images with more megapixels than this, checked before decoding "
                             f"(decompression-bomb guard; default {DEFAULT_MAX_MEGAPIXELS:g})")
    parser.add_argument("--min-image-side", type=int, default=DEFAULT_MIN_SIDE,
                        help=f"refuse images whose width or height is below this (default {DEFAULT_MIN_SIDE})")
    parser.add_argument("--segment-model", type=Path, default=None,
                        help="optional person-segmentation .tflite (e.g. MediaPipe selfie_segmentation.tflite); "
                             "the background of each crop is then made white")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the progress bar (otherwise shown on stderr when it is a terminal)")
    return parser


def check_dirs(raw_dir, out_dir):
    """Return an error message if the folders are unusable or OUT_DIR could overwrite inputs, else None."""
    if not raw_dir.is_dir():
        return f"RAW_DIR {raw_dir} is not a folder"
    raw, out = raw_dir.resolve(), out_dir.resolve()
    if out == raw or raw in out.parents:
        return f"OUT_DIR {out_dir} is RAW_DIR or inside it; choose a folder outside {raw_dir}"
    if out.exists() and not out.is_dir():
        return f"OUT_DIR {out_dir} exists and is not a folder"
    return None


def process_file(path, stem, options, detector, segmenter, protected):
    """Read, detect, align and write the crops of one input; return its ``Outcome``."""
    from tfcartoon.data import faces

    outcome = Outcome(input=str(path.relative_to(options.raw_dir)))
    detected = read_and_detect(path, outcome, options, detector)
    if detected is None:
        return outcome
    image, found = detected
    for index, face in enumerate(found):
        target = options.out_dir / stem.parent / f"{stem.name}_face{index}.{options.format}"
        if claim(target, outcome, options, protected):
            crop = faces.align_face(image, face, size=options.size, segmenter=segmenter).image
            write_output(target, crop, outcome, options)
    return outcome


def run(options):
    """Process every input under ``options.raw_dir``; return the list of ``Outcome``."""
    from tfcartoon.data import faces

    detector = faces.FaceDetector(min_face=options.min_face, min_confidence=options.min_confidence)
    segmenter = faces.TFLiteSegmenter(options.segment_model) if options.segment_model else None
    inputs = list_inputs(options.raw_dir)
    stems = output_stems(inputs, options.raw_dir)
    protected = {path.resolve() for path in inputs}
    return run_files("prepare", inputs, lambda path: process_file(
        path, stems[path], options, detector, segmenter, protected), options.no_progress)


def argument_problem(options, report):
    """The first problem with the parsed arguments as a message, or None when they are usable."""
    problem = check_dirs(options.raw_dir, options.out_dir)
    if problem is not None:
        return problem
    if options.size < 16:
        return f"--size must be at least 16, got {options.size}"
    if options.min_face < 12:
        return f"--min-face must be at least 12 (MTCNN's smallest window), got {options.min_face}"
    if report.suffix.lower() not in (".csv", ".json"):
        return f"--report {report} must end in .csv or .json"
    if options.raw_dir.resolve() in report.resolve().parents:
        return f"--report {report} is inside RAW_DIR; put it elsewhere so inputs are never touched"
    if options.segment_model is not None and not options.segment_model.is_file():
        return f"--segment-model {options.segment_model} is not a file"
    return None


def main(argv=None):
    """Command-line entry point; returns the exit status (bad arguments exit with 2)."""
    parser = build_parser()
    options = parser.parse_args(argv)
    report = options.report or options.out_dir / REPORT_NAME
    problem = argument_problem(options, report)
    if problem is not None:
        parser.error(problem)
    start = time.perf_counter()
    outcomes = run(options)
    write_report(report, outcomes)
    line = summary_line("prepare", outcomes, time.perf_counter() - start, "crops")
    print(f"{line}; report: {report}", file=sys.stderr)
    return 0 if all(o.status == STATUS_OK for o in outcomes) else 1

if __name__ == "__main__":
    sys.exit(main())
