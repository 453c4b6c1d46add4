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
import csv
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from tfcartoon.data import faces
from tfcartoon.data.images import (
    DEFAULT_MAX_MEGAPIXELS,
    DEFAULT_MIN_SIDE,
    ImageReadError,
    atomic_output,
    read_image,
    write_image,
)

REPORT_NAME = "prepare_report.csv"
REPORT_FIELDS = ("input", "status", "faces", "written", "kept", "reason")

STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_UNREADABLE = "unreadable"
STATUS_WRITE_FAILED = "write_failed"


@dataclasses.dataclass
class Outcome:
    """What happened to one input file (one report row)."""

    input: str
    status: str = STATUS_OK
    faces: int = 0
    written: list = dataclasses.field(default_factory=list)
    kept: list = dataclasses.field(default_factory=list)
    reason: str = ""

    def row(self):
        """The outcome as a flat dict for the CSV/JSON report."""
        return {
            "input": self.input,
            "status": self.status,
            "faces": self.faces,
            "written": ";".join(self.written),
            "kept": ";".join(self.kept),
            "reason": self.reason,
        }


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


def list_inputs(raw_dir):
    """Every regular file under ``raw_dir`` (recursively, sorted), skipping hidden files and folders."""
    files = []
    for folder, subfolders, names in os.walk(raw_dir):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        files.extend(Path(folder, name) for name in sorted(names) if not name.startswith("."))
    return [path for path in files if path.is_file()]


def output_stems(inputs, raw_dir):
    """Map each input to its output path without suffix: same sub-folders, the file's stem.

    Two inputs differing only by extension (``a.jpg``, ``a.png``) get the
    extension in the stem (``a_jpg``, ``a_png``) so their crops never collide.
    """
    relative = [path.relative_to(raw_dir) for path in inputs]
    counts = {}
    for rel in relative:
        key = rel.with_suffix("")
        counts[key] = counts.get(key, 0) + 1
    stems = {}
    for path, rel in zip(inputs, relative):
        key = rel.with_suffix("")
        clashes = counts[key] > 1 and rel.suffix
        stems[path] = key.with_name(f"{key.name}_{rel.suffix.lstrip('.')}") if clashes else key
    return stems


def process_file(path, stem, options, detector, segmenter, protected):
    """Read, detect, align and write the crops of one input; return its ``Outcome``."""
    outcome = Outcome(input=str(path.relative_to(options.raw_dir)))
    try:
        image = read_image(path, min_side=options.min_image_side, max_megapixels=options.max_megapixels)
    except ImageReadError as error:
        outcome.status, outcome.reason = STATUS_UNREADABLE, error.reason
        return outcome
    found = detector.detect(image)
    if options.largest_only:
        found = found[:1]
    outcome.faces = len(found)
    if not found:
        outcome.status = STATUS_NO_FACE
        outcome.reason = f"no face of at least {options.min_face} px found in {image.shape[1]}x{image.shape[0]} px"
        return outcome
    for index, face in enumerate(found):
        target = options.out_dir / stem.parent / f"{stem.name}_face{index}.{options.format}"
        shown = str(target.relative_to(options.out_dir))
        if target.resolve() in protected:
            outcome.status, outcome.reason = STATUS_WRITE_FAILED, f"{shown} would overwrite an input file"
            continue
        if target.exists() and not options.overwrite:
            outcome.kept.append(shown)
            continue
        crop = faces.align_face(image, face, size=options.size, segmenter=segmenter).image
        try:
            write_image(target, crop, overwrite=options.overwrite)
        except OSError as error:
            outcome.status, outcome.reason = STATUS_WRITE_FAILED, f"cannot write {shown}: {error}"
            continue
        outcome.written.append(shown)
    return outcome


def write_report(path, outcomes):
    """Write the outcomes as CSV or JSON (by ``path``'s extension), atomically."""
    rows = [outcome.row() for outcome in outcomes]
    with atomic_output(path) as temp_name, open(temp_name, "w", encoding="utf-8", newline="") as stream:
        if path.suffix.lower() == ".json":
            json.dump(rows, stream, indent=1)
            stream.write("\n")
        else:
            writer = csv.DictWriter(stream, fieldnames=REPORT_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

def summary_line(outcomes, seconds):
    """One line totalling the run: files, crops written and kept, failures by kind."""
    failed = [o for o in outcomes if o.status != STATUS_OK]
    by_status = {}
    for outcome in failed:
        by_status[outcome.status] = by_status.get(outcome.status, 0) + 1
    written = sum(len(o.written) for o in outcomes)
    kept = sum(len(o.kept) for o in outcomes)
    head = "FAILED" if failed else "OK"
    detail = ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()))
    failures = f"{len(failed)} failed ({detail})" if failed else "0 failed"
    return (f"prepare {head}: {len(outcomes)} files, {len(outcomes) - len(failed)} ok, {failures}; "
            f"{written} crops written, {kept} kept; {seconds:.1f} s")


def run(options):
    """Process every input under ``options.raw_dir``; return the list of ``Outcome``."""
    detector = faces.FaceDetector(min_face=options.min_face, min_confidence=options.min_confidence)
    segmenter = faces.TFLiteSegmenter(options.segment_model) if options.segment_model else None
    inputs = list_inputs(options.raw_dir)
    stems = output_stems(inputs, options.raw_dir)
    protected = {path.resolve() for path in inputs}
    outcomes = []
    hide = True if options.no_progress else None  # None: shown only when stderr is a terminal
    with tqdm(inputs, desc="prepare", unit="file", file=sys.stderr, disable=hide) as bar:
        for path in bar:
            outcome = process_file(path, stems[path], options, detector, segmenter, protected)
            if outcome.status != STATUS_OK:
                bar.write(f"{path}: {outcome.status}: {outcome.reason}", file=sys.stderr)
            outcomes.append(outcome)
    return outcomes


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
    line = summary_line(outcomes, time.perf_counter() - start)
    print(f"{line}; report: {report}", file=sys.stderr)
    return 0 if all(o.status == STATUS_OK for o in outcomes) else 1

if __name__ == "__main__":
    sys.exit(main())
