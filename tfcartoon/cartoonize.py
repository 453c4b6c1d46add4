"""Turn face photos into cartoons with a trained model.

    python -m tfcartoon.cartoonize INPUT... [--model PATH] [--group NAME] -o OUT_DIR [--paste-back]

Each INPUT is a photo or a folder searched recursively (hidden files and folders
excepted; every other file is tried, whatever its extension). Every face above
``--min-face`` is aligned the way the training crops were (``align_face`` at the
model's image size), cartoonized, and written as
``OUT_DIR/<sub-folders>/<stem>_face<k>_cartoon.png`` (k = 0 for the largest face);
``--paste-back`` also writes the photo with every cartoon pasted back in place,
``<stem>_cartoonized.jpg``. A folder's sub-folder layout is kept in OUT_DIR; files
named directly go to OUT_DIR's top. The model is a run directory, a ``.keras``,
``.tflite`` or ``.onnx`` file, or ``preset:NAME``; without ``--model`` the shipped
young_women preset draws (see ``tfcartoon.inference``). ``--group auto`` lets the
group classifier pick each face's group (``python -m tfcartoon.classifier`` trains it
into a run directory; an ``--auto`` export holds its own): faces of one photo can be
drawn by different branches, and a face the classifier is unsure of is drawn by the
base group.

A report (CSV or JSON, by the extension) lists every input with its outcome, in
the same columns as ``python -m tfcartoon.prepare`` (``groups``: the group that drew
each face, with ``--group auto`` its probability and any fallback); every file that yields no
cartoon gets a one-line reason on stderr and the batch goes on. Inputs are never
modified and existing outputs are kept unless ``--overwrite``. Exit status: 0 when
every file gave at least one cartoon, 1 when any did not, 2 for bad arguments
(checked, model loaded included, before anything is written).
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

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

REPORT_NAME = "cartoonize_report.csv"
CARTOON_SUFFIX = "_cartoon.png"
PASTED_SUFFIX = "_cartoonized.jpg"


def build_parser():
    """The command-line parser of ``python -m tfcartoon.cartoonize``."""
    parser = argparse.ArgumentParser(
        prog="python -m tfcartoon.cartoonize",
        description=(
            "Detect the faces in photos, align each one like the training crops, turn it into a "
            "cartoon with a trained model, and write one PNG per face to OUT_DIR, plus a report."
        ),
        epilog="Exit status: 0 all files gave a cartoon, 1 some did not (see the report), 2 bad arguments.",
    )
    parser.add_argument("inputs", metavar="INPUT", type=Path, nargs="+",
                        help="photo, or folder of photos searched recursively")
    parser.add_argument("--model", default=None,
                        help="run directory (with config.yaml), a .keras, .tflite or .onnx model, or "
                             "preset:NAME (default: the shipped young_women preset)")
    parser.add_argument("--group", default=None,
                        help="group to draw (e.g. elderly); required when the model holds several groups. "
                             "'auto': the group classifier picks each face's group (see --classifier)")
    parser.add_argument("--classifier", type=Path, default=None,
                        help="with --group auto and a Keras model: the group classifier "
                             "(default: the run directory's group_classifier.keras; an auto "
                             "export holds its own)")
    parser.add_argument("-o", "--out-dir", type=Path, required=True,
                        help="folder for the cartoons; must not be an input folder or inside one")
    parser.add_argument("--paste-back", action="store_true",
                        help=f"also write each photo with its cartoons pasted back (<stem>{PASTED_SUFFIX})")
    parser.add_argument("--size", type=int, default=None,
                        help="side of the written cartoons in pixels (default: the model's image size)")
    parser.add_argument("--min-face", type=int, default=48,
                        help="ignore faces whose box is smaller than this many pixels (default 48)")
    parser.add_argument("--min-confidence", type=float, default=0.8,
                        help="ignore detections scored below this by MTCNN (default 0.8)")
    parser.add_argument("--largest-only", action="store_true",
                        help="cartoonize only the largest face of each photo")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="faces passed to the model at once (default 8)")
    parser.add_argument("--report", type=Path, default=None,
                        help=f"report file, .csv or .json (default OUT_DIR/{REPORT_NAME})")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist in OUT_DIR")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                        help="refuse images with more megapixels than this, checked before decoding "
                             f"(decompression-bomb guard; default {DEFAULT_MAX_MEGAPIXELS:g})")
    parser.add_argument("--min-image-side", type=int, default=DEFAULT_MIN_SIDE,
                        help=f"refuse images whose width or height is below this (default {DEFAULT_MIN_SIDE})")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the progress bar (otherwise shown on stderr when it is a terminal)")
    return parser


def argument_problem(options, report):
    """The first problem with the parsed arguments as a message, or None when they are usable."""
    out, report_path = options.out_dir.resolve(), report.resolve()
    for path in options.inputs:
        if not path.exists():
            return f"INPUT {path}: no such file or folder"
        folder = path.resolve()
        if path.is_dir() and (out == folder or folder in out.parents):
            return f"OUT_DIR {options.out_dir} is the input folder {path} or inside it; choose a folder outside it"
        if path.is_dir() and folder in report_path.parents:
            return f"--report {report} is inside the input folder {path}; put it elsewhere so inputs stay untouched"
    if out.exists() and not out.is_dir():
        return f"OUT_DIR {options.out_dir} exists and is not a folder"
    if report.suffix.lower() not in (".csv", ".json"):
        return f"--report {report} must end in .csv or .json"
    if any(report_path == path.resolve() for path in options.inputs):
        return f"--report {report} is an input file; put it elsewhere so inputs are never touched"
    if options.size is not None and options.size < 16:
        return f"--size must be at least 16, got {options.size}"
    if options.min_face < 12:
        return f"--min-face must be at least 12 (MTCNN's smallest window), got {options.min_face}"
    if options.batch_size < 1:
        return f"--batch-size must be at least 1, got {options.batch_size}"
    return None


def collect_inputs(paths):
    """Every input file with its output stem (a relative path without suffix), in order.

    A folder's files keep their sub-folder layout (``prepare.output_stems``), files
    named directly go to the top. A file named twice is processed once; stems that
    would still collide (same name in two inputs) get ``_2``, ``_3``, ... appended.
    """
    roots = {}
    for path in paths:
        if path.is_dir():
            roots.setdefault(path, []).extend(list_inputs(path))
        else:
            roots.setdefault(path.parent, []).append(path)
    seen, used, stems = set(), set(), {}
    for root, files in roots.items():
        unique = [path for path in dict.fromkeys(files) if path.resolve() not in seen]
        seen.update(path.resolve() for path in unique)
        for path, stem in output_stems(unique, root).items():
            candidate, count = stem, 1
            while candidate in used:
                count += 1
                candidate = stem.with_name(f"{stem.name}_{count}")
            used.add(candidate)
            stems[path] = candidate
    return stems


def to_model_range(crops):
    """uint8 crops (N, S, S, 3) -> float32 in [-1, 1]."""
    return np.asarray(crops, dtype=np.float32) / 127.5 - 1.0


def to_pixels(cartoons):
    """float cartoons in [-1, 1] -> uint8 (N, S, S, 3)."""
    return np.clip(np.rint((np.asarray(cartoons, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def cartoonize_crops(cartoonizer, crops, batch_size):
    """Run the model on uint8 crops, ``batch_size`` at a time.

    Returns (uint8 cartoons, the group label of each face): the cartoonizer's group,
    or with a routing model (``--group auto``) where each face went and why.
    """
    crops = np.stack(crops)
    chunks = [crops[start:start + batch_size] for start in range(0, len(crops), batch_size)]
    cartoons, labels = [], []
    for chunk in chunks:
        if hasattr(cartoonizer, "routed"):
            drawn, routes = cartoonizer.routed(to_model_range(chunk))
            labels += [route.label() for route in routes]
        else:
            drawn = cartoonizer(to_model_range(chunk))
            labels += [cartoonizer.group or ""] * len(chunk)
        cartoons.append(to_pixels(drawn))
    return np.concatenate(cartoons), labels


def resize_cartoon(cartoon, size):
    """The cartoon at ``size`` x ``size`` (area filter down, cubic up); unchanged when size is None."""
    if size is None or size == cartoon.shape[0]:
        return cartoon
    interpolation = cv2.INTER_AREA if size < cartoon.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(cartoon, (size, size), interpolation=interpolation)


def output_targets(stem, face_count, options):
    """The output paths of one input: one cartoon per face, then the pasted photo if asked."""
    folder = options.out_dir / stem.parent
    targets = [folder / f"{stem.name}_face{index}{CARTOON_SUFFIX}" for index in range(face_count)]
    if options.paste_back:
        targets.append(folder / f"{stem.name}{PASTED_SUFFIX}")
    return targets


def process_file(path, stem, options, detector, cartoonizer, protected):
    """Read, detect, align, cartoonize and write the outputs of one input; return its ``Outcome``."""
    from tfcartoon.data import faces

    outcome = Outcome(input=str(path))
    detected = read_and_detect(path, outcome, options, detector)
    if detected is None:
        return outcome
    image, found = detected
    targets = output_targets(stem, len(found), options)
    pending = [target for target in targets if claim(target, outcome, options, protected)]
    if not pending:
        return outcome
    aligned = [faces.align_face(image, face, size=cartoonizer.image_size) for face in found]
    cartoons, outcome.groups = cartoonize_crops(cartoonizer, [crop.image for crop in aligned],
                                                options.batch_size)
    images = {target: resize_cartoon(cartoon, options.size)
              for target, cartoon in zip(targets[:len(found)], cartoons)}
    if options.paste_back and targets[-1] in pending:
        images[targets[-1]] = paste_all(image, aligned, cartoons)
    for target in pending:
        write_output(target, images[target], outcome, options)
    return outcome


def paste_all(image, aligned, cartoons):
    """The photo with every face's cartoon pasted back through its alignment affine."""
    from tfcartoon.data import faces

    composite = image
    for crop, cartoon in zip(aligned, cartoons):
        composite = faces.paste_back(composite, cartoon, crop.affine)
    return composite


def run(options, cartoonizer, inputs):
    """Cartoonize every input (a dict path -> output stem); return the list of ``Outcome``."""
    from tfcartoon.data import faces

    detector = faces.FaceDetector(min_face=options.min_face, min_confidence=options.min_confidence)
    protected = {path.resolve() for path in inputs}
    return run_files("cartoonize", inputs, lambda path: process_file(
        path, inputs[path], options, detector, cartoonizer, protected), options.no_progress)


def main(argv=None):
    """Command-line entry point; returns the exit status (bad arguments exit with 2)."""
    parser = build_parser()
    options = parser.parse_args(argv)
    report = options.report or options.out_dir / REPORT_NAME
    problem = argument_problem(options, report)
    if problem is not None:
        parser.error(problem)
    from tfcartoon.inference import ModelLoadError, load_cartoonizer

    try:
        cartoonizer = load_cartoonizer(options.model, options.group, options.classifier)
    except ModelLoadError as error:
        parser.error(str(error))
    start = time.perf_counter()
    outcomes = run(options, cartoonizer, collect_inputs(options.inputs))
    write_report(report, outcomes)
    line = summary_line("cartoonize", outcomes, time.perf_counter() - start, "images")
    print(f"{line}; report: {report}", file=sys.stderr)
    return 0 if all(o.status == STATUS_OK for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
