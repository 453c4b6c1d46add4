"""Latency, size and fidelity of the exported generator on this machine's CPU.

    python bench/bench_export.py                 # measure and update BENCHMARKS.md
    python bench/bench_export.py --runs 30 --no-write
    python bench/bench_export.py --reference photo2cartoon_ngf32.onnx

Times one group path (batch 1, default 256x256) of an untrained generator built with
a fixed seed (weights do not change the speed) in Keras and in every exported form,
interleaving the runtimes run by run so that load from other processes hits them
alike. The ONNX file also runs in OpenVINO (float32, bfloat16 and int8) when
``openvino`` is installed (``pip install -e ".[bench]"``). ``--reference`` times an ONNX
export of the reference photo2cartoon generator in the same loop, so that the latency
targets, set by that generator on an idle machine, can be checked on the same footing.
Fidelity is measured against the Keras float32 output on real p2c photos
(``export.common.parity_images``). Writes the "Export and inference" section of
BENCHMARKS.md between its markers, leaving the rest of the file alone.
"""

import argparse
import datetime
import os
import platform
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
from onnxruntime import quantization  # noqa: E402

from export import common, to_onnx, to_tflite  # noqa: E402
from tfcartoon import build_generator  # noqa: E402
from tfcartoon.precision import dtype_policy  # noqa: E402

GROUPS = ["young_women", "young_men", "kids", "elderly"]
SPEC_GFLOP = 37.3  # 18.65 GMAC per 256x256 image at ngf=32 (SPEC.md)
BEGIN, END = "<!-- export-bench:begin -->", "<!-- export-bench:end -->"
HEADING = "## Export and inference"
REFERENCE_MS = {"fp32": 215.0, "best": 145.0}  # targets from the reference, measured idle


class Candidate:
    """One way of running the group path: a name, its file (if any) and a batch-1 runner."""

    def __init__(self, runtime, precision, run, path=None, gate=None, comparable=True):
        self.runtime, self.precision, self.run, self.gate = runtime, precision, run, gate
        self.comparable = comparable  # same weights as the Keras model: fidelity is measured
        self.exported = path is not None
        self.size = Path(path).stat().st_size if self.exported else None
        self.times = []
        self.figures = None


# === Runners ===

def keras_runner(model):
    """A batch-1 tf.function runner of a Keras model."""
    function = tf.function(lambda x: model(x))
    return lambda image: function(tf.constant(image)).numpy().astype(np.float32)


def tflite_runner(path, threads, latest_features=False):
    """A batch-1 runner of an exported TFLite file (XNNPACK, ``threads`` threads)."""
    interpreter = Interpreter(model_path=str(path), num_threads=threads,
                              experimental_default_delegate_latest_features=latest_features)
    runner = interpreter.get_signature_runner(common.SIGNATURE)
    return lambda image: runner(**{common.PHOTO: image})[common.CARTOON]


def onnx_runner(path, threads):
    """A batch-1 ONNX Runtime runner (all graph optimisations)."""
    session = to_onnx.session(Path(path).read_bytes(), threads)
    return lambda image: session.run([common.CARTOON], {common.PHOTO: image})[0]


def reference_runner(path, threads):
    """A batch-1 ONNX Runtime runner of the reference generator's NCHW export.

    The NHWC<->NCHW transposes of the 256x256x3 image are done outside the session (under
    1 ms), and the first output is the cartoon whatever the file names it.
    """
    session = to_onnx.session(Path(path).read_bytes(), threads)
    (photo,) = session.get_inputs()
    if len(photo.shape) != 4 or photo.shape[1] != 3:
        raise ValueError(f"--reference {path}: expected an NCHW image input (1, 3, S, S), "
                         f"got {photo.name} {photo.shape}")
    output = session.get_outputs()[0].name
    return lambda image: session.run([output], {photo.name: np.ascontiguousarray(
        image.transpose(0, 3, 1, 2))})[0].transpose(0, 2, 3, 1)


def openvino_runner(path, threads, precision):
    """A batch-1 OpenVINO CPU runner of an ONNX file at inference ``precision`` (f32, bf16)."""
    import openvino  # noqa: PLC0415 (optional: pip install 'tfcartoon[bench]')
    compiled = openvino.Core().compile_model(str(path), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return lambda image: request.infer({0: image})[0].copy()


# === Building the candidates ===

def write(path, data):
    """Write bytes to ``path`` and return it."""
    Path(path).write_bytes(data)
    return path


def keras_candidates(generator, group):
    """Keras float32 and mixed bfloat16 (oneDNN) runs of the group path."""
    with dtype_policy("mixed_bfloat16"):
        bf16 = type(generator).from_config(generator.get_config())
    bf16.set_weights(generator.get_weights())
    return [Candidate("Keras (tf.function)", "fp32", keras_runner(generator.group_model(group))),
            Candidate("Keras (tf.function)", "mixed bf16", keras_runner(bf16.group_model(group)))]


def tflite_candidates(generator, group, workdir, threads):
    """TFLite fp32/fp16/int8 files of the group path, and multi-group file sizes."""
    function = common.serving_function(generator, group)
    candidates, sizes = [], {}
    for precision in ("fp32", "fp16", "int8"):
        log(f"converting TFLite {precision}")
        path = write(workdir / f"{group}_{precision}.tflite",
                     to_tflite.convert(function, precision))
        sizes[f"single {precision}"] = path.stat().st_size
        gate = common.GATES[precision]
        candidates.append(Candidate("TFLite (XNNPACK)", precision, tflite_runner(path, threads),
                                    path, gate))
        if precision == "fp32":
            candidates.append(Candidate("TFLite (XNNPACK latest features)", precision,
                                        tflite_runner(path, threads, True), path, gate))
    for precision in ("fp32", "fp16"):
        log(f"converting the multi-group TFLite file, {precision}")
        data = to_tflite.convert(common.serving_function(generator), precision)
        sizes[f"multigroup {precision}"] = len(data)
    return candidates, sizes


def onnx_candidates(generator, group, images, workdir, threads):
    """ONNX files of the group path (batch 1 as exported, and any batch), int8 versions, and
    the same files run by OpenVINO when it is installed (f32, bf16, int8)."""
    log("converting ONNX (batch 1 and any batch)")
    full = write(workdir / f"{group}.onnx", to_onnx.convert(
        common.serving_function(generator, group, batch=1), 17))
    free = write(workdir / f"{group}_any_batch.onnx", to_onnx.convert(
        common.serving_function(generator, group, batch=None), 17))
    gate = common.GATES["fp32"]
    candidates = [Candidate("ONNX Runtime", "fp32", onnx_runner(full, threads), full, gate),
                  Candidate("ONNX Runtime (any-batch file)", "fp32", onnx_runner(free, threads),
                            free, gate)]
    log("quantizing ONNX convs to int8 (to_onnx --precision int8, and dynamic)")
    static = write(workdir / f"{group}_int8.onnx",
                   to_onnx.quantize_int8(full.read_bytes(), images))
    prepared = workdir / f"{group}_prepared.onnx"
    quantization.shape_inference.quant_pre_process(str(full), str(prepared),
                                                   skip_symbolic_shape=True)
    dynamic = workdir / f"{group}_int8_dynamic.onnx"
    quantization.quantize_dynamic(str(prepared), str(dynamic), op_types_to_quantize=["Conv"],
                                  weight_type=quantization.QuantType.QUInt8)
    for path, precision in ((static, "int8 (--precision int8)"), (dynamic, "int8 dynamic convs")):
        candidates.append(Candidate("ONNX Runtime", precision, onnx_runner(path, threads),
                                    path, common.GATES["int8"]))
    try:
        import openvino  # noqa: F401, PLC0415
    except ImportError:
        log("openvino is not installed (pip install 'tfcartoon[bench]'): no OpenVINO rows")
        return candidates
    # OpenVINO's bf16 keeps float32 accumulation; it is gated like fp16 (reduced float).
    for path, precision, label, gate in (
            (full, "f32", "fp32", common.GATES["fp32"]),
            (full, "bf16", "bf16", common.GATES["fp16"]),
            (static, "bf16", "int8 (--precision int8), bf16 elsewhere", common.GATES["int8"])):
        candidates.append(Candidate("OpenVINO (ONNX file)", label,
                                    openvino_runner(path, threads, precision), path, gate))
    return candidates


# === Measuring ===

def cpu_ticks():
    """(busy ticks of the whole machine, ticks of this process) from /proc."""
    with open("/proc/stat", encoding="utf-8") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    with open("/proc/self/stat", encoding="utf-8") as handle:
        own = handle.read().rsplit(")", 1)[1].split()
    return sum(fields[:8]) - idle, int(own[11]) + int(own[12])  # utime + stime


def measure(candidates, images, reference, runs, warmup):
    """Fill in fidelity figures and run times (interleaved); returns the CPU share (in cores)
    other processes used while the runs were timed."""
    for candidate in candidates:
        if candidate.comparable:
            outputs = np.concatenate([candidate.run(image[None]) for image in images])
            candidate.figures = common.parity_figures(reference, outputs)
            log(f"{candidate.runtime} {candidate.precision}: {candidate.figures}")
        for _ in range(warmup):
            candidate.run(images[:1])
    busy, own = cpu_ticks()
    start_time = time.perf_counter()
    for index in range(runs):
        for candidate in candidates:
            start = time.perf_counter()
            candidate.run(images[:1])
            candidate.times.append(time.perf_counter() - start)
        log(f"run {index + 1}/{runs}")
    busy_after, own_after = cpu_ticks()
    ticks = os.sysconf("SC_CLK_TCK") * (time.perf_counter() - start_time)
    return max(0.0, (busy_after - busy) - (own_after - own)) / ticks


def conv_gflop(model):
    """FLOPs (2 x MACs) of the Conv2D layers of a (nested) functional model, in G."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += conv_gflop(layer) * 1e9
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, _ = layer.output.shape
            total += 2 * height * width * int(np.prod(layer.kernel.shape))
    return total / 1e9


def machine():
    """CPU model, core count and the SIMD flags that matter here."""
    model, flags = platform.processor() or "unknown", set()
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"]
    return model, os.cpu_count(), [flag for flag in wanted if flag in flags]


# === Report ===

def report(candidates, sizes, args, work_gflop, counted_gflop, image_source, others):
    """The markdown of the benchmark section."""
    model, cores, flags = machine()
    lines = [
        HEADING, "", BEGIN,
        f"Measured {datetime.date.today().isoformat()} with `python bench/bench_export.py` on "
        f"{model}, {cores} cores ({', '.join(flags)}). Other processes used {others:.2f} "
        f"cores on average while the runs were timed"
        + (" (a quiet machine reads below 0.05)." if others < 0.05 else
           ": the medians are inflated, the minimum is the better estimate of an idle "
           "machine; rerun when it is idle."),
        f"Group path of an untrained generator (seed 0, ngf {args.ngf}, {args.image_size}x"
        f"{args.image_size}), batch 1, {args.threads} threads; median of {args.runs} runs after "
        f"{args.warmup} warm-up runs, runtimes interleaved. Fidelity against the Keras float32 "
        f"output on {image_source}. GFLOP/s counts {work_gflop:.1f} GFLOP per image "
        f"(the Conv2D layers alone are {counted_gflop:.1f} GFLOP).",
        "Versions: " + ", ".join(f"{name} {version}" for name, version
                                 in common.versions().items()) + ".",
        "",
        "| runtime | precision | file MB | median ms | min ms | p10-p90 ms | GFLOP/s (median) | "
        "PSNR dB | max abs err | export gate |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in candidates:
        times = np.array(c.times) * 1e3
        median = float(np.median(times))
        size = "" if c.size is None else f"{c.size / 1e6:.2f}"
        if c.figures is None:
            psnr, error = "n/a (other weights)", ""
        else:
            psnr = "identical" if c.figures["psnr_db"] is None else f"{c.figures['psnr_db']:.1f}"
            error = f"{c.figures['max_abs_err']:.2g}"
        gate = "n/a" if c.gate is None else ("pass" if not c.gate.failures(c.figures) else
                                             "fail: " + "; ".join(c.gate.failures(c.figures)))
        lines.append(
            f"| {c.runtime} | {c.precision} | {size} | {median:.0f} | {times.min():.0f} | "
            f"{np.percentile(times, 10):.0f}-{np.percentile(times, 90):.0f} | "
            f"{work_gflop / median * 1e3:.0f} | {psnr} | {error} | {gate} |")
    lines += ["", *targets(candidates), "",
              "Multi-group TFLite file (all four groups, one trunk, `group` input) against one "
              "group path: " + ", ".join(
                  f"{precision} {sizes[f'multigroup {precision}'] / 1e6:.2f} MB = "
                  f"{sizes[f'multigroup {precision}'] / sizes[f'single {precision}']:.3f}x"
                  for precision in ("fp32", "fp16")) + ".", END, ""]
    return "\n".join(lines)


def timing(candidate):
    """(median, min) of a candidate's run times in ms."""
    times = np.array(candidate.times) * 1e3
    return float(np.median(times)), float(times.min())


def targets(candidates):
    """Lines comparing the results with the project's latency targets (on the medians).

    The targets are the reference generator's ONNX Runtime time measured on an idle
    machine (215 ms) and 1.5x faster (145 ms). When the reference itself was timed in the
    same run (``--reference``), the targets are also checked against its median then, which
    cancels out how busy the machine was.
    """
    onnx_fp32 = [c for c in candidates if c.runtime.startswith("ONNX Runtime") and c.exported
                 and c.precision == "fp32"]
    good = [c for c in candidates if c.exported and c.figures["psnr_db"] is not None
            and c.figures["psnr_db"] >= 30.0 and not c.gate.failures(c.figures)]
    reference = [c for c in candidates if not c.comparable]
    lines = []
    for label, pool, key, factor in (("fp32 export in ONNX Runtime", onnx_fp32, "fp32", 1.0),
                                     ("best export at PSNR >= 30 dB", good, "best", 1.5)):
        if not pool:
            lines.append(f"- Target {label}: no candidate qualifies.")
            continue
        best = min(pool, key=lambda c: timing(c)[0])
        median, fastest = timing(best)
        limit = REFERENCE_MS[key]
        line = (f"- Target {label} <= {limit:.0f} ms: median {median:.0f} ms (min "
                f"{fastest:.0f} ms), {best.runtime} {best.precision}: "
                f"{'met' if median <= limit else 'missed'}")
        if reference:
            same_run = timing(reference[0])[0]
            line += (f"; against the reference timed in this run ({same_run:.0f} ms"
                     + (f" / {factor:g} = {same_run / factor:.0f} ms" if factor != 1 else "")
                     + f"): {same_run / median:.2f}x its speed, "
                     f"{'met' if median * factor <= same_run else 'missed'}")
        lines.append(line + ".")
    return lines


def update_benchmarks(path, section):
    """Replace the section between the markers in ``path`` (or append it)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        start = text.rindex(HEADING, 0, text.index(BEGIN)) if HEADING in text else text.index(
            BEGIN)
        rest = text[text.index(END) + len(END):].lstrip("\n")
        text = text[:start] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    common.write_atomic(path, text.encode(), overwrite=True)


def log(message):
    """Progress on stderr."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Benchmark Keras, TFLite and ONNX Runtime on one group path of the "
                    "generator and update the 'Export and inference' section of BENCHMARKS.md.")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per runtime (>= 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads per runtime (default 2)")
    parser.add_argument("--ngf", type=int, default=32, help="generator width (default 32)")
    parser.add_argument("--image-size", type=int, default=256, help="image size (default 256)")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"),
                        help="markdown file to update (default: BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    parser.add_argument("--reference", type=Path,
                        help="ONNX export of the reference photo2cartoon generator (NCHW input "
                             "1x3xSxS, first output the cartoon) to time alongside, so the "
                             "targets can be checked against it on the same machine state")
    args = parser.parse_args(argv)
    if args.runs < 20:
        parser.error(f"--runs must be at least 20, got {args.runs}")
    if args.reference is not None and not args.reference.is_file():
        parser.error(f"--reference {args.reference}: no such file")
    return args


def main(argv=None):
    """Run the benchmark; print the section and write it unless --no-write."""
    args = parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    generator = build_generator(GROUPS, ngf=args.ngf, image_size=args.image_size)
    group = GROUPS[0]
    photos, image_source = common.parity_images(args.image_size)
    images = common.photos_to_float(photos)
    reference = generator.group_model(group).predict(images, verbose=0)
    with tempfile.TemporaryDirectory(prefix="tfcartoon_bench_") as workdir:
        tflite, sizes = tflite_candidates(generator, group, Path(workdir), args.threads)
        candidates = [*keras_candidates(generator, group), *tflite,
                      *onnx_candidates(generator, group, images, Path(workdir), args.threads)]
        if args.reference is not None:
            candidates.append(Candidate(
                "ONNX Runtime: reference photo2cartoon generator", "fp32",
                reference_runner(args.reference, args.threads), comparable=False))
        others = measure(candidates, images, reference, args.runs, args.warmup)
    counted = conv_gflop(generator.group_model(group))
    default = (args.ngf, args.image_size) == (32, 256)
    section = report(candidates, sizes, args, SPEC_GFLOP if default else counted, counted,
                     image_source, others)
    print(section)
    if not args.no_write:
        update_benchmarks(args.output, section)
        log(f"updated {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
