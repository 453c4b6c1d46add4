"""Quality figures of a photo -> cartoon model on held-out pairs (the preset's acceptance).

    python bench/bench_preset.py --data ../shared/data/p2c/train --holdout 0.1
    python bench/bench_preset.py --model young_women_fp16.tflite --data PAIRS_DIR

``--data`` holds ``photos/`` and ``cartoons/`` with the same file names (the cartoon is
the reference model's cartoon of the photo). With ``--holdout F`` only the pairs that
the training recipe's ``data.holdout=F`` kept out of training are used (the same
file-name hash); without it every pair is. Figures, at the model's size (256 px):

- PSNR (dB, mean over images) of our cartoon against the reference cartoon, next to the
  unchanged photo against the reference (the floor);
- edge energy: mean absolute image gradient of our cartoons divided by the reference
  cartoons' (1 = as crisp as the reference; a blur is well below 1);
- identity: face-ID cosine between each photo and our cartoon, next to the reference
  cartoons' own score.

``--model`` is anything ``load_cartoonizer`` takes (default: the shipped preset).
``--json`` writes the figures; ``--grid`` writes rows of photo | ours | reference.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def edge_energy(images):
    """Mean absolute finite difference (both axes) over a batch of [-1, 1] images."""
    images = np.asarray(images, np.float64)
    dy = np.abs(np.diff(images, axis=1)).mean()
    dx = np.abs(np.diff(images, axis=2)).mean()
    return 0.5 * (dx + dy)


def load_pairs(data_dir, size, holdout=None):
    """(names, photos, references) as [-1, 1] arrays of the pairs in ``data_dir``."""
    from tfcartoon.data.dataset import is_held_out
    from tfcartoon.evaluate import _read_folder

    skipped = []
    photos = _read_folder(Path(data_dir) / "photos", size, skipped)
    cartoons = _read_folder(Path(data_dir) / "cartoons", size, skipped)
    names = sorted(set(photos) & set(cartoons))
    if holdout:
        names = [n for n in names if is_held_out(n, holdout)]
    if not names:
        raise SystemExit(f"error: no photo/cartoon pairs (same file names) in {data_dir}"
                         + (f" held out at {holdout}" if holdout else ""))
    return (names, np.stack([photos[n] for n in names]),
            np.stack([cartoons[n] for n in names]))


def measure(cartoonizer, photos, references, batch_size=8):
    from tfcartoon.evaluate import paired_scores
    from tfcartoon.metrics import identity_similarity

    started = time.perf_counter()
    ours = np.concatenate([cartoonizer(photos[i:i + batch_size])
                           for i in range(0, len(photos), batch_size)])
    seconds = time.perf_counter() - started
    ours = np.clip(ours, -1.0, 1.0)
    reference_edges = edge_energy(references)
    return ours, {
        "images": int(len(photos)),
        "psnr_db": float(paired_scores(ours, references)["psnr"].mean()),
        "psnr_photo_floor_db": float(paired_scores(photos, references)["psnr"].mean()),
        "edge_energy_ratio": float(edge_energy(ours) / reference_edges),
        "identity": float(identity_similarity(photos, ours).mean()),
        "identity_reference": float(identity_similarity(photos, references).mean()),
        "seconds_per_image": seconds / len(photos),
    }


def write_grid(path, photos, ours, references, rows=4):
    from PIL import Image

    strips = [np.concatenate([photos[i], ours[i], references[i]], axis=1) for i in range(rows)]
    grid = np.clip((np.concatenate(strips, axis=0) + 1.0) * 127.5 + 0.5, 0, 255)
    Image.fromarray(grid.astype(np.uint8)).save(path, quality=85)


def resized_run(run_dir, group, image_size):
    """The photo2cartoon path of a training run, rebuilt at ``image_size``."""
    import tfcartoon
    from tfcartoon.inference import _keras_cartoonizer
    from tfcartoon.models.generator import build_generator

    run = tfcartoon.load(run_dir)
    trained = run.photo2cartoon
    generator = build_generator(trained.groups, trained.ngf, image_size,
                                trained.hourglass_depth, name="photo2cartoon")
    generator.set_weights(trained.get_weights())
    group = group or run.config.base_group
    return _keras_cartoonizer(generator.group_model(group), group, run_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="run dir, .keras, .tflite, .onnx or preset:NAME "
                             "(default: the shipped preset)")
    parser.add_argument("--group", default=None, help="group of a multi-group model")
    parser.add_argument("--data", required=True, type=Path, help="folder with photos/ + cartoons/")
    parser.add_argument("--holdout", type=float, default=None,
                        help="use only the pairs a recipe with data.holdout=F kept out")
    parser.add_argument("--image-size", type=int, default=None,
                        help="run a training run's generator at this size (e.g. a 128 px "
                             "run at 256; no weight depends on the size)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--grid", type=Path, help="write a photo | ours | reference grid here")
    args = parser.parse_args(argv)

    from tfcartoon.inference import load_cartoonizer

    if args.image_size:
        cartoonizer = resized_run(args.model, args.group, args.image_size)
    else:
        cartoonizer = load_cartoonizer(args.model, args.group)
    names, photos, references = load_pairs(args.data, cartoonizer.image_size, args.holdout)
    ours, figures = measure(cartoonizer, photos, references)
    figures["model"] = cartoonizer.source
    figures["data"] = str(args.data) + (f" (held out at {args.holdout})" if args.holdout else "")
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    if args.grid:
        write_grid(args.grid, photos, ours, references)
    return 0


if __name__ == "__main__":
    sys.exit(main())
