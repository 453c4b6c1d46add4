"""What ``prepare`` and ``cartoonize`` share: a batch job over image files.

Each input gets one ``Outcome`` (one report row). A bad file is reported and the job
goes on; an output that exists is kept unless ``--overwrite``; an output that would
replace an input is refused. Nothing here imports TensorFlow.
"""

import csv
import dataclasses
import json
import os
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from tfcartoon.data.images import ImageReadError, atomic_output, read_image, write_image

STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_UNREADABLE = "unreadable"
STATUS_WRITE_FAILED = "write_failed"
REPORT_FIELDS = ("input", "status", "faces", "written", "kept", "reason", "groups")


@dataclasses.dataclass
class Outcome:
    """What happened to one input file (one report row)."""

    input: str
    status: str = STATUS_OK
    faces: int = 0
    written: list = dataclasses.field(default_factory=list)
    kept: list = dataclasses.field(default_factory=list)
    reason: str = ""
    # cartoonize: the group that drew each face, in face order ('elderly:0.93' with
    # --group auto: the classifier's probability, and any fallback to the base group)
    groups: list = dataclasses.field(default_factory=list)

    def row(self):
        """The outcome as a flat dict for the CSV/JSON report."""
        return {"input": self.input, "status": self.status, "faces": self.faces,
                "written": ";".join(self.written), "kept": ";".join(self.kept),
                "reason": self.reason, "groups": ";".join(self.groups)}


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
    extension in the stem (``a_jpg``, ``a_png``) so their outputs never collide.
    """
    relative = [path.relative_to(raw_dir) for path in inputs]
    counts = Counter(rel.with_suffix("") for rel in relative)
    stems = {}
    for path, rel in zip(inputs, relative):
        key = rel.with_suffix("")
        clashes = counts[key] > 1 and rel.suffix
        stems[path] = key.with_name(f"{key.name}_{rel.suffix.lstrip('.')}") if clashes else key
    return stems


def read_and_detect(path, outcome, options, detector):
    """(image, faces) of one input, or None with ``outcome`` saying why (unreadable, no face)."""
    try:
        image = read_image(path, min_side=options.min_image_side,
                           max_megapixels=options.max_megapixels)
    except ImageReadError as error:
        outcome.status, outcome.reason = STATUS_UNREADABLE, error.reason
        return None
    found = detector.detect(image)
    if options.largest_only:
        found = found[:1]
    outcome.faces = len(found)
    if not found:
        height, width = image.shape[:2]
        outcome.status = STATUS_NO_FACE
        outcome.reason = f"no face of at least {options.min_face} px found in {width}x{height} px"
        return None
    return image, found


def claim(target, outcome, options, protected):
    """True when ``target`` is to be written; an existing one is kept (recorded) unless
    ``--overwrite``, and one that would replace an input is refused."""
    shown = str(target.relative_to(options.out_dir))
    if target.resolve() in protected:
        outcome.status, outcome.reason = STATUS_WRITE_FAILED, f"{shown} would overwrite an input file"
        return False
    if target.exists() and not options.overwrite:
        outcome.kept.append(shown)
        return False
    return True


def write_output(target, image, outcome, options):
    """Write one output atomically, recording it (or the failure) in ``outcome``."""
    shown = str(target.relative_to(options.out_dir))
    try:
        write_image(target, image, overwrite=options.overwrite)
    except OSError as error:
        outcome.status, outcome.reason = STATUS_WRITE_FAILED, f"cannot write {shown}: {error}"
        return
    outcome.written.append(shown)


def run_files(command, inputs, process, no_progress=False):
    """``process(path)`` for every input, reporting each one that did not succeed on
    stderr and going on; returns the list of ``Outcome``."""
    outcomes = []
    hide = True if no_progress else None  # None: shown only when stderr is a terminal
    with tqdm(list(inputs), desc=command, unit="file", file=sys.stderr, disable=hide) as bar:
        for path in bar:
            outcome = process(path)
            if outcome.status != STATUS_OK:
                bar.write(f"{path}: {outcome.status}: {outcome.reason}", file=sys.stderr)
            outcomes.append(outcome)
    return outcomes


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


def summary_line(command, outcomes, seconds, noun):
    """One line totalling the run: files, outputs written and kept, failures by kind."""
    failures = Counter(o.status for o in outcomes if o.status != STATUS_OK)
    failed = sum(failures.values())
    detail = f" ({', '.join(f'{n} {status}' for status, n in sorted(failures.items()))})" if failed else ""
    written = sum(len(o.written) for o in outcomes)
    kept = sum(len(o.kept) for o in outcomes)
    return (f"{command} {'FAILED' if failed else 'OK'}: {len(outcomes)} files, "
            f"{len(outcomes) - failed} ok, {failed} failed{detail}; {written} {noun} written, "
            f"{kept} kept; {seconds:.1f} s")
