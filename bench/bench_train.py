"""Training step time of stage one (base) and stage two (few-shot, strict) at full size.

    python bench/bench_train.py [--size 256] [--steps 5] [--precision float32] [--jit]
        [--stages base fewshot]

Builds the training model exactly as ``python -m tfcartoon.train`` does (reference
widths, face-ID loss on when the shared embedder is present), feeds fixed random
batches and reports the median wall time of a step after one warm-up step (the first
step also builds the graph; its time is reported separately). Prints a Markdown table.
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfcartoon.config import load_config  # noqa: E402
from tfcartoon.gan import CartoonGAN  # noqa: E402
from tfcartoon.models.face_id import load_face_embedder  # noqa: E402
from tfcartoon.training.run import resolve_face_id  # noqa: E402


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_stage(stage, size, steps, precision, jit):
    overrides = [f"train.stage={stage}", f"model.image_size={size}",
                 f"data.resize={size * 286 // 256}", f"train.precision={precision}"]
    if stage == "fewshot":
        overrides.append("train.group=elderly")
    config, embedder_path = resolve_face_id(load_config(None, overrides + ["face_id.model=shared"]))
    keras.config.set_dtype_policy(precision)
    gan = CartoonGAN(config, load_face_embedder(str(embedder_path)) if embedder_path else None)
    gan.build_optimizers()
    step = tf.function(gan.train_step, jit_compile=jit)
    batch = len(gan.plan.slots)
    rng = tf.random.Generator.from_seed(0)
    data = {"photo": rng.uniform((batch, size, size, 3), -1, 1),
            "cartoon": rng.uniform((batch, size, size, 3), -1, 1),
            "group": tf.constant(gan.plan.slots, tf.int32)}
    start = time.perf_counter()
    step(data)
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        logs = step(data)
        float(logs["g_loss"])
        times.append(time.perf_counter() - start)
    keras.config.set_dtype_policy("float32")
    return first, statistics.median(times), batch


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the step")
    parser.add_argument("--stages", nargs="+", choices=["base", "fewshot"],
                        default=["base", "fewshot"], help="stages to time")
    args = parser.parse_args()
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    print(f"machine: {cpu_name()}, {device}; TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"\n| stage | batch | size | precision | XLA | first step (s) | median step (s) |")
    print("|---|---|---|---|---|---|---|")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for stage in args.stages:
        first, median, batch = time_stage(stage, args.size, args.steps, args.precision, args.jit)
        print(f"| {stage} | {batch} | {args.size} | {args.precision} | {'yes' if args.jit else 'no'} "
              f"| {first:.1f} | {median:.2f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
