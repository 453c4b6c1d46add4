"""What automatic group routing costs and how often it is right.

    python bench/bench_routing.py --classifier runs/elderly/group_classifier.keras
    python bench/bench_routing.py --classifier FILE --image-size 256 --runs 20 --json out.json

Prints, for the classifier's groups at ``--image-size`` (reference widths):

- accuracy per group and the confusion matrix on its held-out photos (from the card
  ``python -m tfcartoon.classifier`` wrote);
- the file size of the multi-group fp32 TFLite export and of the auto variant (every
  group plus the classifier), and their ratio;
- TFLite latency, batch 1, of one group path, the classifier alone, and the auto
  file, interleaved run by run (median and minimum, milliseconds).

Weights do not change speed or size, so the generator is built untrained with a fixed
seed; the classifier is the trained one.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from export import common, to_tflite  # noqa: E402
from tfcartoon import build_generator  # noqa: E402
from tfcartoon.classifier import load_group_classifier, summary  # noqa: E402


def tflite_runner(data, inputs):
    """A no-argument callable invoking the file once on fixed ``inputs`` (name -> array)."""
    interpreter = Interpreter(model_content=data, num_threads=to_tflite.RUN_THREADS)
    runner = interpreter.get_signature_runner(common.SIGNATURE)
    return lambda: runner(**inputs)


def classifier_tflite(classifier):
    """The classifier alone as TFLite bytes (photo -> probabilities)."""
    size = classifier.image_size
    call = common.frozen_call(classifier.model)
    spec = tf.TensorSpec((1, size, size, 3), tf.float32, name=common.PHOTO)
    function = tf.function(lambda photo: {common.PROBABILITIES: call(photo)},
                           input_signature=[spec])
    return to_tflite.convert(function, "fp32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", type=Path, required=True, help="trained classifier (.keras)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    probe = load_group_classifier(args.classifier)
    groups = probe.groups
    print(summary(probe.card))
    keras.utils.set_random_seed(0)
    generator = build_generator(groups, ngf=32, image_size=args.image_size)
    classifier = load_group_classifier(args.classifier, groups, args.image_size)
    parity = (common.synthetic_images(args.image_size, 2), "synthetic (seed 0, 2 images)")
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "generator.keras"
        generator.save(source)
        multi, _ = to_tflite.export_tflite(generator, source, folder, multigroup=True,
                                           parity=parity)
        auto, card = to_tflite.export_tflite(generator, source, folder, classifier=classifier,
                                             parity=parity)
        sizes = {"multigroup": multi.stat().st_size, "auto": auto.stat().st_size}
        image = common.photos_to_float(parity[0][:1])
        runners = {
            "group path (multigroup file)": tflite_runner(
                multi.read_bytes(), {common.PHOTO: image, common.GROUP: np.array([0], np.int32)}),
            "classifier alone": tflite_runner(classifier_tflite(classifier), {common.PHOTO: image}),
            "auto file": tflite_runner(auto.read_bytes(), {common.PHOTO: image}),
        }
    times = {name: [] for name in runners}
    for run in runners.values():
        run()  # warm-up
    for _ in range(args.runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    latency = {name: {"median_ms": float(np.median(t)), "min_ms": float(np.min(t))}
               for name, t in times.items()}
    path_ms = latency["group path (multigroup file)"]["min_ms"]
    figures = {
        "groups": groups,
        "image_size": args.image_size,
        "classifier_params": int(classifier.model.count_params()),
        "file_bytes": sizes,
        "auto_over_multigroup": sizes["auto"] / sizes["multigroup"],
        "added_bytes": sizes["auto"] - sizes["multigroup"],
        "latency": latency,
        "classifier_over_group_path": latency["classifier alone"]["min_ms"] / path_ms,
        "auto_over_group_path": latency["auto file"]["min_ms"] / path_ms,
        "runs": args.runs,
        "threads": to_tflite.RUN_THREADS,
        "evaluation": probe.card["evaluation"],
    }
    print(f"files: multigroup {sizes['multigroup'] / 1e6:.2f} MB, auto {sizes['auto'] / 1e6:.2f} MB "
          f"(x{figures['auto_over_multigroup']:.3f}, +{figures['added_bytes'] / 1e3:.0f} kB)")
    for name, values in latency.items():
        print(f"{name}: median {values['median_ms']:.1f} ms, min {values['min_ms']:.1f} ms")
    print(f"classifier / group path: {figures['classifier_over_group_path']:.2%}; "
          f"auto / group path: {figures['auto_over_group_path']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
