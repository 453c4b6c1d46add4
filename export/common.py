"""Shared logic of the exporters: loading, float32 rebuild, frozen graphs, parity gates,
model cards and atomic writes.

Every exporter follows the same steps: load a generator (``load_generator``), make
sure it computes in float32 (``as_float32``), trace the group path with its weights
baked in as constants (``frozen_call``), convert, run the converted model on a few
real face photos (``parity_images``) next to the Keras model, and write the file and
its JSON model card only when the parity gate passes (``write_artifact``).
"""

import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

import tfcartoon
from export.cli import TFLITE_PRECISIONS
from export.multigroup import auto_core, multigroup_core
from tfcartoon.data.images import usual_permissions
from tfcartoon.models.generator import CartoonGenerator
from tfcartoon.paths import shared_path
from tfcartoon.precision import dtype_policy

PRECISIONS = TFLITE_PRECISIONS
PARITY_IMAGES = 8
SIGNATURE = "cartoonize"
PHOTO = "photo"
GROUP = "group"
CARTOON = "cartoon"
PROBABILITIES = "group_probabilities"
ONE_LEVEL = 2.0 / 255.0  # one 8-bit output level on the [-1, 1] scale
# Largest difference allowed between an auto export's group probabilities and the Keras
# classifier's: a routing decision can only flip for faces this close to the threshold.
PROBABILITY_TOLERANCE = 0.02
EXPORT_PACKAGES = ("tensorflow", "keras", "ai-edge-litert", "tf2onnx", "onnx", "onnxruntime")


class ParityError(RuntimeError):
    """The converted model disagrees with the Keras model beyond its gate; nothing was written."""


class UnsupportedOpsError(RuntimeError):
    """The converted model needs ops outside the runtime's builtin set; nothing was written."""


@dataclasses.dataclass(frozen=True)
class Gate:
    """Thresholds a converted model must meet against the Keras float32 model.

    Errors are on the [-1, 1] output scale; PSNR uses the peak-to-peak range 2.
    ``None`` means the figure is not checked.
    """

    max_abs_err: float | None = None
    mean_abs_err: float | None = None
    min_psnr_db: float | None = None

    def failures(self, figures):
        """Human-readable reasons why ``figures`` (from ``parity_figures``) fail this gate."""
        reasons = []
        if self.max_abs_err is not None and figures["max_abs_err"] > self.max_abs_err:
            reasons.append(f"max abs error {figures['max_abs_err']:.3g} > {self.max_abs_err:.3g}")
        if self.mean_abs_err is not None and figures["mean_abs_err"] > self.mean_abs_err:
            reasons.append(
                f"mean abs error {figures['mean_abs_err']:.3g} > {self.mean_abs_err:.3g}")
        psnr = figures["psnr_db"]
        if self.min_psnr_db is not None and psnr is not None and psnr < self.min_psnr_db:
            reasons.append(f"PSNR {psnr:.2f} dB < {self.min_psnr_db:g} dB")
        return reasons

    def as_dict(self):
        """The thresholds that are checked, for model cards."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


# fp32: TFLite's float32 MEAN kernels accumulate the normalisation statistics
# sequentially over up to 2M elements; on the 256 generator that puts the fp32 TFLite
# export 5e-4 from Keras (XNNPACK; 2e-3 with the reference kernels) and ONNX Runtime
# 3e-4, while Keras itself is 2e-5 from a float64 run. A 1e-4 bound on the largest
# error cannot be met; the gate is a quarter of one 8-bit output level at any pixel
# and 1e-4 on average.
GATES = {
    "fp32": Gate(max_abs_err=2e-3, mean_abs_err=1e-4),
    "fp16": Gate(min_psnr_db=40.0),
    "int8": Gate(min_psnr_db=30.0),
    "full_int8": Gate(min_psnr_db=30.0),
}
# The app variant rounds to uint8: a float32 export may land one level off at a
# rounding boundary, never more.
APP_GATES = {**GATES, "fp32": Gate(max_abs_err=ONE_LEVEL * 1.001)}


def gate_for(precision, app=False):
    """The parity gate of ``precision`` (one of PRECISIONS), for the app variant if ``app``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: expected one of {PRECISIONS}")
    return (APP_GATES if app else GATES)[precision]


# === Loading ===

def _load_errors():
    from tfcartoon.preset import PresetError
    from tfcartoon.training.checkpoints import CheckpointError
    from tfcartoon.training.run import TrainingError

    return (ValueError, TypeError, OSError, RuntimeError, PresetError, CheckpointError,
            TrainingError)


# What loading a model can raise; the CLIs turn each into one line and exit status 2.
LOAD_ERRORS = _load_errors()


def load_checkpoint(path=None):
    """Load a photo2cartoon generator; returns ``(generator, checkpoint file)``.

    ``path`` is a ``.keras`` file, a training run directory, read with
    ``tfcartoon.load(path).photo2cartoon`` (its latest checkpoint), or
    ``preset:NAME``; None is the default preset shipped with the package.
    """
    from tfcartoon.preset import DEFAULT_PRESET, load_preset, parse_preset_ref

    preset = DEFAULT_PRESET if path is None else parse_preset_ref(path)
    if preset is not None:
        loaded = load_preset(preset)
        return loaded.photo2cartoon, loaded.checkpoint
    path = Path(path)
    if path.is_dir():
        run = tfcartoon.load(path)
        generator, checkpoint = run.photo2cartoon, Path(getattr(run, "checkpoint", path))
    elif path.is_file() and path.suffix == ".keras":
        generator, checkpoint = keras.models.load_model(path, compile=False), path
    elif path.exists():
        raise ValueError(f"{path}: expected a .keras file or a training run directory")
    else:
        raise FileNotFoundError(f"{path}: no such file or directory (expected a .keras "
                                "file or a training run directory)")
    if not isinstance(generator, CartoonGenerator):
        raise TypeError(f"{path}: expected a tfcartoon CartoonGenerator, got "
                        f"{type(generator).__name__}")
    return generator, checkpoint


def load_for_cli(model, group):
    """(generator, checkpoint, groups) for an export CLI, or None after printing the
    one-line error (the caller exits with status 2)."""
    import sys

    try:
        generator, checkpoint = load_checkpoint(model)
        groups = check_groups(generator, group or "all")
    except LOAD_ERRORS as error:
        print(f"error: --model {model or 'preset:young_women'}: {error}", file=sys.stderr)
        return None
    for name in untrained_groups(model, groups):
        print(f"warning: --model {model}: the {name} branch was not trained by this run "
              "(it is the base branch's copy or its initial weights); exporting it anyway",
              file=sys.stderr)
    return generator, checkpoint, groups


def auto_problem(args):
    """Why ``--auto``/``--classifier`` cannot apply to these options, or None."""
    if args.classifier is not None and not args.auto:
        return (f"--classifier {args.classifier} is used only by the auto variant; add --auto "
                "or drop it")
    if args.auto and getattr(args, "multigroup", False):
        return ("--auto already writes every group into one file (with the classifier); "
                "drop --multigroup")
    if args.auto and args.group is not None:
        return (f"--auto writes every group into one file and routes by itself; --group "
                f"{args.group} cannot apply (drop one of them)")
    if args.auto and args.classifier is None and (args.model is None or not Path(args.model).is_dir()):
        return ("--auto needs a group classifier: pass --classifier FILE, or a run directory "
                "as --model that holds group_classifier.keras")
    return None


def classifier_for_cli(args, generator):
    """The group classifier of an ``--auto`` export (None without --auto), or False after
    printing the one-line error (the caller exits with status 2)."""
    import sys

    from tfcartoon.classifier import ClassifierError, default_path

    if not args.auto:
        return None
    path = args.classifier or default_path(args.model)
    try:
        return load_classifier_for(generator, path)
    except ClassifierError as error:
        print(f"error: --auto: {error}", file=sys.stderr)
        return False


def routing_card(classifier, routing_figures):
    """The ``routing`` entry of an auto export's model card."""
    evaluation = classifier.card.get("evaluation", {})
    return {
        "threshold": classifier.threshold,
        "fallback_group": classifier.groups[0],
        "rule": "the most probable group, or the fallback group below the threshold",
        "classifier": {"path": str(Path(classifier.source).resolve()),
                       "sha256": source_sha256(classifier.source),
                       "params": int(classifier.model.count_params()),
                       "accuracy": evaluation.get("accuracy"),
                       "per_group_accuracy": evaluation.get("per_group_accuracy"),
                       "evaluation_photos": classifier.card.get("evaluation_photos")},
        "parity": routing_figures,
    }


def untrained_groups(model, groups):
    """Those of ``groups`` whose branch the run directory ``model`` did not train."""
    from tfcartoon.training.run import read_run_config, trained_groups

    if model is None or not Path(model).is_dir():
        return []
    trained = trained_groups(read_run_config(model))
    return [name for name in groups if name not in trained]


def load_generator(path):
    """Load a photo2cartoon ``CartoonGenerator`` from a ``.keras`` file or a training run."""
    return load_checkpoint(path)[0]


def compute_dtypes(generator):
    """The set of compute dtypes used by the generator's layers."""
    models = [*generator.heads, *generator.tails, generator.encoder, generator.decoder]
    layers = [generator, *generator.cams, *models]
    layers += [layer for model in models for layer in model.layers]
    return {layer.dtype_policy.compute_dtype for layer in layers}


def as_float32(generator):
    """``generator`` if it computes in float32, else a float32 rebuild with its weights.

    A generator trained under mixed precision computes in float16; exports are built
    in float32 and converted to lower precision by the converter, if asked.
    """
    if compute_dtypes(generator) == {"float32"}:
        return generator
    with dtype_policy("float32"):
        rebuilt = type(generator).from_config(generator.get_config())
    rebuilt.set_weights(generator.get_weights())
    return rebuilt


def source_sha256(path):
    """sha256 of a checkpoint file, or of a directory's files (relative names + bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_groups(generator, group):
    """The list of groups named by ``group`` ('all' or one name) for this generator."""
    if group == "all":
        return list(generator.groups)
    generator.group_index(group)  # raises ValueError listing the known groups
    return [group]


# === Frozen graphs ===

def frozen_call(layer):
    """A function calling ``layer`` with its current weights baked in as constants.

    Traced inside a ``tf.function``, the weights become graph constants: converters
    see no variables, and the converted file holds each weight once.
    """
    trainable = [keras.ops.convert_to_numpy(v) for v in layer.trainable_variables]
    non_trainable = [keras.ops.convert_to_numpy(v) for v in layer.non_trainable_variables]

    def call(*args):
        outputs, _ = layer.stateless_call([tf.constant(w) for w in trainable],
                                          [tf.constant(w) for w in non_trainable], *args)
        return outputs

    return call


def app_io(core):
    """Wrap ``core`` (float [-1, 1] -> [-1, 1]) as uint8 RGB in -> uint8 RGB out."""

    def serve(photo, *extra):
        return _app_levels(core(_app_input(photo), *extra))

    return serve


def _app_input(photo):
    """uint8 RGB -> float32 in [-1, 1], inside the app variant's graph."""
    return tf.cast(photo, tf.float32) / 127.5 - 1.0


def _app_levels(cartoon):
    """float32 in [-1, 1] -> uint8 RGB, rounded, inside the app variant's graph."""
    return tf.cast(tf.clip_by_value(tf.round((cartoon + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def serving_function(generator, group=None, app=False, batch=1, classifier=None):
    """A ``tf.function`` for the export signature: ``photo`` (+ ``group``) -> {``cartoon``}.

    ``group`` names one group path; ``None`` builds the multi-group graph with a
    ``group`` index input (1,) int32. ``app`` makes input and output uint8 RGB.
    ``batch`` is the batch size of the signature (None: any). ``classifier`` (a
    ``tfcartoon.classifier.GroupClassifier`` for the generator's groups) builds the
    auto variant instead: ``photo`` -> {``cartoon``, ``group_probabilities``}, the
    branch picked inside by ``route_index``.
    """
    size = generator.image_size
    photo = tf.TensorSpec((batch, size, size, 3), tf.uint8 if app else tf.float32, name=PHOTO)
    if classifier is not None:
        if batch != 1 or group is not None:
            raise ValueError("the auto variant routes one image at a time: batch must be 1 "
                             f"and no group named, got batch={batch!r}, group={group!r}")
        return _auto_serving_function(generator, classifier, app, photo)
    if group is None:
        core = multigroup_core(generator, frozen_call)
    else:
        path = frozen_call(generator.group_model(group))

        def core(image):
            return path(image)

    if app:
        core = app_io(core)
    if group is None:
        index = tf.TensorSpec((1,), tf.int32, name=GROUP)

        def serve(photo, group):
            return {CARTOON: core(photo, group)}

        return tf.function(serve, input_signature=[photo, index])

    def serve(photo):
        return {CARTOON: core(photo)}

    return tf.function(serve, input_signature=[photo])


def _auto_serving_function(generator, classifier, app, photo):
    """The auto variant's ``tf.function``: one image in, its cartoon and group probabilities out."""
    core = auto_core(generator, classifier.model, classifier.threshold, frozen_call)

    def serve(photo):
        cartoon, probabilities = core(_app_input(photo) if app else photo)
        return {CARTOON: _app_levels(cartoon) if app else cartoon, PROBABILITIES: probabilities}

    return tf.function(serve, input_signature=[photo])


def load_classifier_for(generator, path):
    """The group classifier at ``path`` for ``generator`` (same groups, its image size)."""
    from tfcartoon.classifier import load_group_classifier

    return load_group_classifier(path, generator.groups, generator.image_size)


def auto_parity(generator, classifier, photos, app, run, name, gate):
    """Parity of an auto export, image by image; raises ParityError on a failed gate.

    ``run(photos)`` -> (cartoons, probabilities) of the exported file. The cartoons are
    checked against the Keras group path of the group the file itself picked (routing
    by hand with its prediction), the probabilities against the Keras classifier's.
    Returns (cartoon figures, routing figures).
    """
    from tfcartoon.models.group_classifier import route_index

    cartoons, probabilities = run(photos)
    index, _, _ = route_index(probabilities, classifier.threshold)
    reference = np.empty_like(cartoons)
    for group_index in sorted(set(index.tolist())):
        chosen = index == group_index
        reference[chosen] = keras_reference(generator, generator.groups[group_index],
                                            photos[chosen], app)
    figures = parity_figures(reference, cartoons)
    enforce_gate(f"{name} [routed by its own prediction]", gate, figures)
    keras_probabilities = classifier.probabilities(photos_to_float(photos))
    keras_index, _, _ = route_index(keras_probabilities, classifier.threshold)
    error = float(np.abs(keras_probabilities - probabilities).max())
    if error > PROBABILITY_TOLERANCE:
        raise ParityError(f"{name}: refused, its group probabilities are {error:.3g} from the "
                          f"Keras classifier's (> {PROBABILITY_TOLERANCE}) (nothing was written)")
    routing = {"probabilities_max_abs_err": error,
               "same_group_as_keras": int((keras_index == index).sum()),
               "images": int(len(index)),
               "groups_picked": {generator.groups[i]: int((index == i).sum())
                                 for i in sorted(set(index.tolist()))}}
    return figures, routing


def to_levels(images):
    """Float images in [-1, 1] -> uint8 levels, rounded the way the app variant does."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(
        np.uint8)


def from_levels(levels):
    """uint8 levels -> float32 on the [-1, 1] scale."""
    return np.asarray(levels, np.float32) / 127.5 - 1.0


# === Parity ===

def parity_images(image_size, count=PARITY_IMAGES):
    """``count`` uint8 RGB images (N, S, S, 3) to check exports on, and where they come from.

    Real face photos from ``shared/data/p2c/train/photos`` (first ``count`` by name)
    when that folder exists, else deterministic synthetic images.
    """
    folder = shared_path("data", "p2c", "train", "photos")
    files = sorted(folder.glob("*.jpg"))[:count] if folder is not None else []
    if len(files) == count:
        images = []
        for file in files:
            with Image.open(file) as image:
                images.append(np.asarray(
                    image.convert("RGB").resize((image_size, image_size), Image.BILINEAR)))
        return np.stack(images), f"data/p2c/train/photos ({count} photos: {files[0].name}..)"
    return synthetic_images(image_size, count), f"synthetic (seed 0, {count} images)"


def synthetic_images(image_size, count, seed=0):
    """Smooth random colour fields with a bright ellipse: deterministic stand-in photos."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1.0, 1.0, image_size)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((image_size, image_size),
                                                          Image.BICUBIC), np.float32)
        cy, cx, ry, rx = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), *rng.uniform(0.3, 0.6, 2)
        face = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
        field[face] = 0.5 * field[face] + 0.5 * np.array([230.0, 190.0, 160.0])
        images.append(np.clip(field, 0, 255).astype(np.uint8))
    return np.stack(images)


def photos_to_float(photos):
    """uint8 photos -> float32 images in [-1, 1] (the generator's input)."""
    return np.asarray(photos, np.float32) / 127.5 - 1.0


def keras_reference(generator, group, photos, app=False):
    """The Keras group path's output on uint8 ``photos``: floats in [-1, 1], or levels (app)."""
    outputs = generator.group_model(group).predict(photos_to_float(photos), verbose=0)
    return to_levels(outputs) if app else outputs


def parity_figures(reference, output):
    """max/mean abs error and PSNR (dB, peak-to-peak 2) of ``output`` against ``reference``.

    uint8 arrays are compared as levels mapped to [-1, 1]. PSNR is None for identical outputs.
    """
    reference, output = (from_levels(a) if np.asarray(a).dtype == np.uint8 else
                         np.asarray(a, np.float32) for a in (reference, output))
    if reference.shape != output.shape:
        raise ValueError(f"parity: output shape {output.shape} differs from the Keras "
                         f"output {reference.shape}")
    error = np.abs(output.astype(np.float64) - reference)
    if not np.all(np.isfinite(error)):
        return {"max_abs_err": math.inf, "mean_abs_err": math.inf, "psnr_db": -math.inf}
    mse = float(np.mean(error ** 2))
    return {
        "max_abs_err": float(error.max()),
        "mean_abs_err": float(error.mean()),
        "psnr_db": None if mse == 0 else 10.0 * math.log10(4.0 / mse),
    }


def enforce_gate(name, gate, figures):
    """Raise ParityError naming ``name`` when ``figures`` fail ``gate``."""
    reasons = gate.failures(figures)
    if reasons:
        raise ParityError(f"{name}: refused, the export disagrees with the Keras model: "
                          + "; ".join(reasons) + " (nothing was written)")


# === Model cards and writing ===

def output_paths(out_dir, filename):
    """(model path, model card path) for ``filename`` in ``out_dir``."""
    path = Path(out_dir) / filename
    return path, path.with_name(path.name + ".json")


def refuse_existing(paths, overwrite):
    """Raise FileExistsError if any of ``paths`` exists and ``overwrite`` is false."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass --overwrite "
                              "to replace")


def tensor_contract(name, shape, dtype, value_range):
    """One entry of a model card's input/output contract."""
    return {"name": name, "shape": list(shape), "dtype": dtype, "range": list(value_range)}


def image_contract(name, image_size, app):
    """Contract of an RGB image tensor: uint8 [0, 255] (app) or float32 [-1, 1]."""
    shape = (1, image_size, image_size, 3)
    return tensor_contract(name, shape, "uint8", (0, 255)) if app else tensor_contract(
        name, shape, "float32", (-1.0, 1.0))


def model_card(*, file_format, path, generator, groups, precision, app, inputs, outputs,
               signature, parity, gate, image_source, params, source, ops, runtime):
    """The JSON-serialisable model card written next to an exported file."""
    return {
        "format": file_format,
        "file": Path(path).name,
        "groups": list(groups),
        "precision": precision,
        "variant": "app" if app else "float",
        "signature": signature,
        "inputs": inputs,
        "outputs": outputs,
        "parity": {
            **{key: _json_number(value) for key, value in parity.items()},
            "gate": gate.as_dict(),
            "reference": "Keras float32 group model",
            "images": image_source,
            "runtime": runtime,
        },
        "params": int(params),
        "image_size": generator.image_size,
        "ngf": generator.ngf,
        "source": {"path": str(Path(source).resolve()), "sha256": source_sha256(source)},
        "ops": sorted(ops),
        "tfcartoon_version": tfcartoon.__version__,
        "versions": versions(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
    }


def _json_number(value):
    """Floats as JSON can hold them (non-finite values as strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def versions():
    """Versions of Python and of the installed libraries an export depends on."""
    found = {"python": platform.python_version()}
    for package in EXPORT_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def write_atomic(path, data, overwrite=False):
    """Write ``data`` (bytes) to ``path`` via a temp file in the same folder and a rename."""
    path = Path(path)
    refuse_existing([path], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        usual_permissions(temp_name)
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.remove(temp_name)
    return path


def write_artifact(path, card_path, data, card, overwrite=False):
    """Write an exported model and its model card (with the file size filled in)."""
    refuse_existing([path, card_path], overwrite)
    card = {**card, "file_size_bytes": len(data)}
    write_atomic(path, data, overwrite)
    write_atomic(card_path, (json.dumps(card, indent=2) + "\n").encode(), overwrite)
    return card
