"""Time face detection + alignment per 512-px photo; print a Markdown table row.

    python bench/bench_faces.py [--photos DIR] [--repeats 1] [--size 256] [--min-face 48]

Reads the 512x512 CelebA-HQ photos of ``../shared/data/raw_photos/celeba_hq``
(at least 20 are needed), warms the detector up on one of them (building and
tracing the MTCNN networks takes seconds, once per process), then times
``FaceDetector.detect`` + ``align_face`` of the largest face on every photo.
Image decoding is not timed.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tfcartoon.data import faces  # noqa: E402
from tfcartoon.data.images import read_image  # noqa: E402
from tfcartoon.paths import shared_path  # noqa: E402

MIN_PHOTOS = 20


def parse_args(argv=None):
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=shared_path("data", "raw_photos", "celeba_hq"),
                        help="folder of photos, searched recursively (default ../shared/data/raw_photos/celeba_hq)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes over all photos (default 1)")
    parser.add_argument("--size", type=int, default=256, help="aligned crop side (default 256)")
    parser.add_argument("--min-face", type=int, default=48, help="smallest face in pixels (default 48)")
    return parser.parse_args(argv)


def load_photos(folder):
    """Decode every .jpg/.png under ``folder`` (sorted); exit with a message if fewer than 20."""
    if folder is None or not Path(folder).is_dir():
        sys.exit(f"photo folder {folder} not found (the shared data is absent; pass --photos DIR)")
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(paths) < MIN_PHOTOS:
        sys.exit(f"{folder} holds {len(paths)} photos; the benchmark needs at least {MIN_PHOTOS}")
    return [read_image(path) for path in paths]


def time_photos(photos, detector, size, repeats):
    """Seconds of detect + align for each photo and pass; also the count of photos with a face."""
    seconds, found = [], 0
    for _ in range(repeats):
        found = 0
        for photo in photos:
            start = time.perf_counter()
            detected = detector.detect(photo)
            if detected:
                faces.align_face(photo, detected[0], size=size)
                found += 1
            seconds.append(time.perf_counter() - start)
    return np.asarray(seconds), found


def main(argv=None):
    """Run the benchmark and print the header and one Markdown row."""
    args = parse_args(argv)
    photos = load_photos(args.photos)
    detector = faces.FaceDetector(min_face=args.min_face)
    detector.detect(photos[0])  # warm-up: builds and traces the networks
    seconds, found = time_photos(photos, detector, args.size, args.repeats)
    shape = "x".join(str(n) for n in photos[0].shape[:2])
    milliseconds = seconds * 1000.0
    print("| photos | photo size | detect + align median | p90 | faces found | CPU cores |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(photos)} x {args.repeats} | {shape} | {np.median(milliseconds):.0f} ms "
          f"| {np.percentile(milliseconds, 90):.0f} ms | {found}/{len(photos)} | {os.cpu_count()} "
          f"({platform.machine()}) |")


if __name__ == "__main__":
    main()
