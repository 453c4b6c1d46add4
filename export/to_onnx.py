"""Export photo -> cartoon group paths to ONNX, checked against Keras before writing.

    python export/to_onnx.py --model run.keras --group young_women --out dist/
    python export/to_onnx.py --model run.keras --group all --out dist/ --opset 17

Writes ``<group>.onnx`` (input ``photo`` (N, S, S, 3) float32 in [-1, 1], NHWC like
the Keras model; output ``cartoon``, same shape and range) and a model card
``<group>.onnx.json``. Converted with tf2onnx from the float32 graph; the file is
written only when ONNX Runtime's output matches Keras within the fp32 gate.
"""

import argparse
import collections
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnx  # noqa: E402
import onnxruntime  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from tf2onnx.optimizer.back_to_back_optimizer import BackToBackOptimizer  # noqa: E402
from tf2onnx.optimizer.const_fold_optimizer import ConstFoldOptimizer  # noqa: E402
from tf2onnx.optimizer.global_pool_optimizer import GlobalPoolOptimizer  # noqa: E402
from tf2onnx.optimizer.identity_optimizer import IdentityOptimizer  # noqa: E402
from tf2onnx.optimizer.merge_duplicated_nodes_optimizer import (  # noqa: E402
    MergeDuplicatedNodesOptimizer,
)
from tf2onnx.optimizer.reshape_optimizer import ReshapeOptimizer  # noqa: E402
from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer  # noqa: E402
from tf2onnx.optimizer.upsample_optimizer import UpsampleOptimizer  # noqa: E402

from export import common  # noqa: E402

MIN_OPSET, MAX_OPSET = 13, 18
RUN_THREADS = 2
# tf2onnx's graph optimisers in its own order. The transpose optimiser, which removes
# the NHWC<->NCHW transposes around every conv, takes 1-2 minutes on this ~3,000-node
# graph; without it ONNX Runtime cancels most of them when it loads the model, and the
# file runs ~20% slower (256x256, 2 threads: 614 vs 502 ms).
TRANSPOSES = ("optimize_transpose", TransposeOptimizer)
OPTIMIZERS = collections.OrderedDict([
    ("remove_redundant_upsample", UpsampleOptimizer),
    ("fold_constants", ConstFoldOptimizer),
    ("merge_duplication", MergeDuplicatedNodesOptimizer),
    ("reshape_optimizer", ReshapeOptimizer),
    ("global_pool_optimizer", GlobalPoolOptimizer),
    ("remove_identity", IdentityOptimizer),
    ("remove_back_to_back", BackToBackOptimizer),
])


def convert(function, opset, quick=False):
    """Convert a one-input, one-output ``tf.function`` to ONNX bytes (``photo`` -> ``cartoon``).

    ``quick`` skips tf2onnx's transpose optimiser (see ``TRANSPOSES``).
    """
    concrete = function.get_concrete_function()
    (photo,), (cartoon,) = concrete.inputs, concrete.outputs
    graph_def = tf2onnx.tf_loader.from_function(concrete, [photo.name], [cartoon.name])
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        onnx_graph = tf2onnx.tfonnx.process_tf_graph(
            graph, opset=opset, input_names=[photo.name], output_names=[cartoon.name],
            tensors_to_rename={photo.name: common.PHOTO, cartoon.name: common.CARTOON})
    optimizers = OPTIMIZERS if quick else collections.OrderedDict([TRANSPOSES, *OPTIMIZERS.items()])
    onnx_graph = tf2onnx.optimizer.optimize_graph(onnx_graph, optimizers=optimizers)
    model = onnx_graph.make_model("tfcartoon photo->cartoon")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_ops(data):
    """Operator types of an ONNX model (``domain::Op`` outside the default domain)."""
    graph = onnx.load_from_string(data).graph
    return {f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx")
            else node.op_type for node in graph.node}


def session(data, threads=RUN_THREADS, level=onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL):
    """An ONNX Runtime CPU session for ``data`` with ``threads`` intra-op threads."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_onnx(data, photos):
    """Run an exported model on uint8 ``photos`` (one batch); returns float outputs."""
    return session(data).run([common.CARTOON], {common.PHOTO: common.photos_to_float(photos)})[0]


def export_onnx(generator, source, out_dir, group, opset=17, quick=False, overwrite=False,
                parity=None):
    """Convert, check and write ``<group>.onnx`` and its model card; returns (path, card).

    ``quick`` skips tf2onnx's transpose optimiser (faster export, slower file).

    Raises:
        ValueError: opset outside [13, 18] or unknown group.
        FileExistsError, common.ParityError: nothing written.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    generator = common.as_float32(generator)
    common.check_groups(generator, group)
    path, card_path = common.output_paths(out_dir, f"{group}.onnx")
    common.refuse_existing([path, card_path], overwrite)
    gate = common.gate_for("fp32")
    photos, image_source = parity or common.parity_images(generator.image_size)

    data = convert(common.serving_function(generator, group, batch=None), opset, quick)
    figures = common.parity_figures(common.keras_reference(generator, group, photos),
                                    run_onnx(data, photos))
    common.enforce_gate(path.name, gate, figures)

    size = generator.image_size
    contract = [("N", size, size, 3), "float32", (-1.0, 1.0)]
    card = common.model_card(
        file_format="onnx", path=path, generator=generator, groups=[group], precision="fp32",
        app=False, inputs=[common.tensor_contract(common.PHOTO, *contract)],
        outputs=[common.tensor_contract(common.CARTOON, *contract)], signature=None,
        parity=figures, gate=gate, image_source=image_source,
        params=generator.group_model(group).count_params(), source=source,
        ops=onnx_ops(data),
        runtime=f"onnxruntime {onnxruntime.__version__} CPU, ORT_ENABLE_ALL, "
                f"{RUN_THREADS} threads")
    card["opset"] = opset
    card["transposes_optimized"] = not quick
    card = common.write_artifact(path, card_path, data, card, overwrite)
    return path, card


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Export photo->cartoon group paths of a tfcartoon generator to ONNX "
                    "(float32). Each file is checked against the Keras model on real photos "
                    "with ONNX Runtime first and is not written if it disagrees.")
    parser.add_argument("--model", required=True,
                        help="generator checkpoint: a .keras file or a training run directory")
    parser.add_argument("--group", default="all",
                        help="group to export, or 'all' for one file per group (default: all)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--opset", type=int, default=17,
                        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: 17)")
    parser.add_argument("--quick", action="store_true",
                        help="skip tf2onnx's transpose optimiser: converts in well under a "
                             "minute instead of 1-2, but runs ~20%% slower in ONNX Runtime")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser.parse_args(argv)


def main(argv=None):
    """Export every requested group; returns the exit status (1 if any was refused)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    generator, checkpoint = common.load_checkpoint(args.model)
    failed = False
    for group in common.check_groups(generator, args.group):
        try:
            path, card = export_onnx(generator, checkpoint, args.out, group, opset=args.opset,
                                     quick=args.quick, overwrite=args.overwrite)
        except (common.ParityError, FileExistsError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
            continue
        print(f"wrote {path} ({card['file_size_bytes'] / 1e6:.2f} MB): max abs err "
              f"{card['parity']['max_abs_err']:.3g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
