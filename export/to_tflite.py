"""Export photo -> cartoon group paths to TFLite, checked against Keras before writing.

    python export/to_tflite.py --model run.keras --group young_women --precision fp16 --out dist/
    python export/to_tflite.py --model run.keras --group all --precision fp32 --app --out dist/
    python export/to_tflite.py --model run.keras --multigroup --precision fp32 --out dist/

Writes ``<group>_<precision>[_app].tflite`` (or ``multigroup_<precision>[_app].tflite``)
and a model card ``<file>.json`` beside it. Only TFLite builtin ops are allowed; the
file is written only when the converted model matches the Keras float32 model on
real face photos (synthetic images when the shared data are absent; the
model card says which) within the precision's gate (``export.common.GATES``).
"""

import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from export import cli  # noqa: E402

if __name__ == "__main__":
    cli.tflite_parser().parse_args()  # --help and bad options: answered before TensorFlow loads

from tfcartoon import _quiet  # noqa: E402

_quiet.install()  # TensorFlow's start-up log stays hidden unless asked for

import flatbuffers  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from export import common  # noqa: E402

RUN_THREADS = 2
_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}


# === Graph to convert ===

def converter_for(function, saved_model_dir, precision, representative=None):
    """A TFLiteConverter for ``function`` (saved to ``saved_model_dir``) at ``precision``."""
    module = tf.Module()
    module.serve = function
    tf.saved_model.save(module, saved_model_dir, signatures={common.SIGNATURE: function})
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[common.SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if precision == "full_int8":
        if representative is None:
            raise ValueError("full_int8 needs a representative dataset")
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def convert(function, precision, representative=None):
    """Convert ``function`` to TFLite bytes at ``precision`` (builtin ops only)."""
    with tempfile.TemporaryDirectory(prefix="tfcartoon_export_") as saved_model_dir:
        converter = converter_for(function, saved_model_dir, precision, representative)
        return compact(converter.convert())


def representative_dataset(photos, app, group_count=None):
    """Calibration inputs for full int8: every photo (for every group of a multi-group file)."""
    images = photos if app else common.photos_to_float(photos)

    def generate():
        for index in range(group_count or 1):
            for image in images:
                inputs = {common.PHOTO: image[None]}
                if group_count:
                    inputs[common.GROUP] = np.array([index], np.int32)
                yield inputs

    return generate


# === Flatbuffer checks ===

def compact(data):
    """Drop the names of intermediate tensors and share one empty buffer among them.

    Signature, input and output names stay. This saves ~2% per file, most of it in
    a multi-group file, where the branches repeat the tensor tables.
    """
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    keep, remap = [0], {0: 0}
    for index, buffer in enumerate(model.buffers):
        if index and buffer.data is not None and len(buffer.data):
            remap[index] = len(keep)
            keep.append(index)
    for subgraph in model.subgraphs:
        named = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in named:
                tensor.name = None
            tensor.buffer = remap.get(tensor.buffer, 0)
    for metadata in model.metadata or []:
        metadata.buffer = remap[metadata.buffer]
    model.buffers = [model.buffers[index] for index in keep]
    builder = flatbuffers.Builder(len(data) + (1 << 20))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_ops(data):
    """Names of the operators a TFLite model uses (custom ops as ``CUSTOM:<name>``)."""
    model = schema.Model.GetRootAs(data, 0)
    names = set()
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.add(f"CUSTOM:{(code.CustomCode() or b'?').decode()}")
        else:
            names.add(_OP_NAMES.get(builtin, f"BUILTIN_{builtin}"))
    return names


def check_builtin_ops(data, name):
    """The model's op names; raise UnsupportedOpsError if any is a custom or Flex op."""
    ops = tflite_ops(data)
    custom = sorted(op for op in ops if op.startswith("CUSTOM:"))
    if custom:
        raise common.UnsupportedOpsError(
            f"{name}: refused, the converted model needs non-builtin ops {custom} "
            "(expected TFLite builtin ops only; nothing was written)")
    return ops


# === Running ===

def run_tflite(data, photos, app=False, group_index=None, threads=RUN_THREADS,
               probabilities=False):
    """Run a converted model on uint8 ``photos`` one at a time; returns the stacked outputs
    (with ``probabilities``: the cartoons and the auto file's group probabilities)."""
    interpreter = Interpreter(model_content=data, num_threads=threads)
    runner = interpreter.get_signature_runner(common.SIGNATURE)
    images = photos if app else common.photos_to_float(photos)
    outputs, routing = [], []
    for image in images:
        inputs = {common.PHOTO: image[None]}
        if group_index is not None:
            inputs[common.GROUP] = np.array([group_index], np.int32)
        result = runner(**inputs)
        outputs.append(result[common.CARTOON])
        if probabilities:
            routing.append(result[common.PROBABILITIES])
    if probabilities:
        return np.concatenate(outputs), np.concatenate(routing)
    return np.concatenate(outputs)


def group_parity(generator, data, photos, groups, app, multigroup, name, gate):
    """Parity figures per group; raises ParityError at the first group failing ``gate``."""
    figures = {}
    for group in groups:
        index = generator.group_index(group) if multigroup else None
        output = run_tflite(data, photos, app=app, group_index=index)
        figures[group] = common.parity_figures(
            common.keras_reference(generator, group, photos, app), output)
        common.enforce_gate(f"{name} [{group}]", gate, figures[group])
    return figures


def worst(figures):
    """The worst of several groups' parity figures."""
    values = list(figures.values())
    psnrs = [f["psnr_db"] for f in values if f["psnr_db"] is not None]
    return {"max_abs_err": max(f["max_abs_err"] for f in values),
            "mean_abs_err": max(f["mean_abs_err"] for f in values),
            "psnr_db": min(psnrs) if psnrs else None}


# === Export ===

def export_tflite(generator, source, out_dir, precision="fp32", group=None, multigroup=False,
                  app=False, overwrite=False, parity=None, classifier=None):
    """Convert, check and write one TFLite file and its model card; returns (path, card).

    Args:
        generator: a ``CartoonGenerator`` (rebuilt in float32 if it is not).
        source: the checkpoint file it came from (recorded with its sha256).
        out_dir: output folder.
        precision: one of ``common.PRECISIONS``.
        group: the group to export (ignored with ``multigroup``).
        multigroup: one file holding every group, selected by a ``group`` input.
        app: uint8 RGB input and output, scaling inside the model.
        overwrite: replace existing outputs.
        parity: (uint8 photos, description); default ``common.parity_images``.
        classifier: a ``GroupClassifier`` for the generator's groups: write the auto
            variant (``auto_<precision>.tflite``), every group plus the classifier, the
            image its only input.

    Raises:
        FileExistsError, common.UnsupportedOpsError, common.ParityError: nothing written.
    """
    generator = common.as_float32(generator)
    if classifier is not None:
        return _export_auto(generator, source, out_dir, precision, app, overwrite, parity,
                            classifier)
    groups = list(generator.groups) if multigroup else common.check_groups(generator, group)
    if len(groups) != 1 and not multigroup:
        raise ValueError(f"export_tflite exports one group, got {group!r}; use main() for 'all'")
    stem = "multigroup" if multigroup else groups[0]
    path, card_path = common.output_paths(
        out_dir, f"{stem}_{precision}{'_app' if app else ''}.tflite")
    common.refuse_existing([path, card_path], overwrite)
    gate = common.gate_for(precision, app)
    photos, image_source = parity or common.parity_images(generator.image_size)

    function = common.serving_function(generator, None if multigroup else groups[0], app)
    representative = representative_dataset(
        photos, app, len(groups) if multigroup else None) if precision == "full_int8" else None
    data = convert(function, precision, representative)
    ops = check_builtin_ops(data, path.name)
    figures = group_parity(generator, data, photos, groups, app, multigroup, path.name, gate)

    inputs = [common.image_contract(common.PHOTO, generator.image_size, app)]
    if multigroup:
        inputs.append(common.tensor_contract(common.GROUP, (1,), "int32", (0, len(groups) - 1)))
    params = generator.count_params() if multigroup else (
        generator.group_model(groups[0]).count_params())
    card = common.model_card(
        file_format="tflite", path=path, generator=generator, groups=groups,
        precision=precision, app=app, inputs=inputs,
        outputs=[common.image_contract(common.CARTOON, generator.image_size, app)],
        signature=common.SIGNATURE, parity=worst(figures), gate=gate,
        image_source=image_source, params=params, source=source, ops=ops,
        runtime=f"ai-edge-litert Interpreter, default delegates, {RUN_THREADS} threads")
    if multigroup:
        card["parity"]["per_group"] = figures
        card["group_index"] = {name: index for index, name in enumerate(groups)}
    card = common.write_artifact(path, card_path, data, card, overwrite)
    return path, card


def _export_auto(generator, source, out_dir, precision, app, overwrite, parity, classifier):
    """``export_tflite`` for the auto variant (see there)."""
    groups = list(generator.groups)
    path, card_path = common.output_paths(
        out_dir, f"auto_{precision}{'_app' if app else ''}.tflite")
    common.refuse_existing([path, card_path], overwrite)
    gate = common.gate_for(precision, app)
    photos, image_source = parity or common.parity_images(generator.image_size)
    function = common.serving_function(generator, app=app, classifier=classifier)
    representative = representative_dataset(photos, app) if precision == "full_int8" else None
    data = convert(function, precision, representative)
    ops = check_builtin_ops(data, path.name)
    figures, routing = common.auto_parity(
        generator, classifier, photos, app,
        lambda images: run_tflite(data, images, app=app, probabilities=True), path.name, gate)
    params = generator.count_params() + classifier.model.count_params()
    card = common.model_card(
        file_format="tflite", path=path, generator=generator, groups=groups,
        precision=precision, app=app,
        inputs=[common.image_contract(common.PHOTO, generator.image_size, app)],
        outputs=[common.image_contract(common.CARTOON, generator.image_size, app),
                 common.tensor_contract(common.PROBABILITIES, (1, len(groups)), "float32",
                                        (0.0, 1.0))],
        signature=common.SIGNATURE, parity=figures, gate=gate,
        image_source=image_source, params=params, source=source, ops=ops,
        runtime=f"ai-edge-litert Interpreter, default delegates, {RUN_THREADS} threads")
    card["parity"]["reference"] = ("Keras float32 group model of the group the file picked, "
                                   "per image")
    card["group_index"] = {name: index for index, name in enumerate(groups)}
    card["routing"] = common.routing_card(classifier, routing)
    card = common.write_artifact(path, card_path, data, card, overwrite)
    return path, card


def parse_args(argv=None):
    """Command-line options (``export.cli``)."""
    return cli.tflite_parser().parse_args(argv)


def main(argv=None):
    """Export every requested file; returns the exit status (1 if any was refused)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    if args.multigroup and args.group is not None:
        print(f"error: --multigroup writes every group into one file; --group {args.group} "
              "cannot apply (drop one of them)", file=sys.stderr)
        return 2
    problem = common.auto_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    loaded = common.load_for_cli(args.model, args.group)
    if loaded is None:
        return 2
    generator, checkpoint, groups = loaded
    classifier = common.classifier_for_cli(args, generator)
    if classifier is False:
        return 2
    jobs = [None] if args.multigroup or args.auto else groups
    failed = False
    for group in jobs:
        try:
            path, card = export_tflite(
                generator, checkpoint, args.out, precision=args.precision, group=group,
                multigroup=args.multigroup, app=args.app, overwrite=args.overwrite,
                classifier=classifier)
        except (common.ParityError, common.UnsupportedOpsError, FileExistsError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
            continue
        parity = card["parity"]
        psnr = "identical" if parity["psnr_db"] is None else f"PSNR {parity['psnr_db']:.1f} dB"
        print(f"wrote {path} ({card['file_size_bytes'] / 1e6:.2f} MB): max abs err "
              f"{parity['max_abs_err']:.3g}, {psnr} on {parity['images']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
