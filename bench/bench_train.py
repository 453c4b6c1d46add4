"""Training step time and peak memory of stage one (base) and stage two (few-shot,
strict) at full size.

    python bench/bench_train.py [--size 256] [--steps 5] [--precision float32] [--jit]
        [--stages base elderly fewshot] [--one-pass]

Builds the training model exactly as ``python -m tfcartoon.train`` does (reference
widths, face-ID loss on when the shared embedder is present), feeds fixed random
batches and reports the median wall time of a step after one warm-up step (the first
step also builds the graph; its time is reported separately). Stages: ``base`` (stage
one), ``elderly`` (stage two, ``--group elderly``), ``fewshot`` (stage two, every
few-shot group at once). Each runs in a process of its own, so its peak resident memory
(``ru_maxrss``) is its own. ``--one-pass`` sets ``train.group_micro_batches=false``.
Prints a Markdown table.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
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


def time_stage(stage, size, steps, precision, jit, one_pass):
    overrides = [f"train.stage={'base' if stage == 'base' else 'fewshot'}",
                 f"model.image_size={size}", f"data.resize={size * 286 // 256}",
                 f"train.precision={precision}",
                 f"train.group_micro_batches={'false' if one_pass else 'true'}"]
    if stage == "elderly":
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
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    return {"first": first, "median": statistics.median(times), "batch": batch,
            "peak_gb": peak_gb}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the step")
    parser.add_argument("--stages", nargs="+", choices=["base", "elderly", "fewshot"],
                        default=["base", "elderly", "fewshot"], help="stages to time")
    parser.add_argument("--one-pass", action="store_true",
                        help="stage two in one pass over the batch, not per-group micro-batches")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one stage, JSON on stdout
    args = parser.parse_args()
    if args.worker:
        result = time_stage(args.worker, args.size, args.steps, args.precision, args.jit,
                            args.one_pass)
        print("RESULT " + json.dumps(result), flush=True)
        return
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    print(f"machine: {cpu_name()}, {device}; TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print("\n| stage | samples per step | size | precision | XLA | micro-batches "
          "| first step (s) | median step (s) | peak RSS (GB) | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for stage in args.stages:
        command = [sys.executable, __file__, "--worker", stage, "--size", str(args.size),
                   "--steps", str(args.steps), "--precision", args.precision]
        command += ["--jit"] * args.jit + ["--one-pass"] * args.one_pass
        load = os.getloadavg()[0]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"| {stage} | failed (exit {done.returncode}): "
                  f"{(done.stderr.strip().splitlines() or [''])[-1][:200]} |", flush=True)
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        micro = "no" if args.one_pass or stage == "base" else "yes"
        print(f"| {stage} | {r['batch']} | {args.size} | {args.precision} "
              f"| {'yes' if args.jit else 'no'} | {micro} | {r['first']:.1f} "
              f"| {r['median']:.2f} | {r['peak_gb']:.1f} | {load:.1f} |", flush=True)


if __name__ == "__main__":
    main()
