"""Export photo -> cartoon group paths to ONNX, checked against Keras before writing.

    python export/to_onnx.py --model run.keras --group young_women --out dist/
    python export/to_onnx.py --model run.keras --group all --out dist/ --opset 17
    python export/to_onnx.py --model run.keras --group all --precision int8 --out dist/

Writes ``<group>.onnx`` (input ``photo`` (1, S, S, 3) float32 in [-1, 1], NHWC like
the Keras model; output ``cartoon``, same shape and range) and a model card
``<group>.onnx.json``. The batch is fixed at 1 by default, as a camera filter runs it:
with static shapes ONNX Runtime plans its memory once, and the file runs ~7% faster
than with a free batch dimension (``--batch any``). Converted with tf2onnx from the
float32 graph; the file is written only when ONNX Runtime's output matches Keras within
the fp32 gate.

``--precision int8`` writes ``<group>_int8.onnx``: the same graph with its convolutions and
the AdaLIN MLP's dense layers (Gemm) in static int8 (QDQ: per-channel int8 weights, uint8
activations whose ranges are calibrated on the parity photos, as TFLite's full_int8 is),
the norms and the rest in float32 (preset: 5.3 MB, 40.6 dB; with the dense layers in
float32 it was 7.6 MB at the same 40.6 dB). The
first and last convolutions (3-channel image in and out, 1.8% of the MACs) stay float32:
on the 256 px generator that lifts parity from 31.5 to 32.1 dB. It must reach 30 dB
against Keras. On an x86 CPU with VNNI, OpenVINO runs it ~3x faster
than the float32 file in ONNX Runtime (BENCHMARKS.md).

After tf2onnx, two exact rewrites make the graph look like a PyTorch export of the
reference (``fuse_graph``): every instance-norm pattern (GlobalAveragePool, Sub, Mul,
GlobalAveragePool, Add, Sqrt, Reciprocal, Mul: ~11 nodes and five full-tensor passes
each) becomes one ``InstanceNormalization``, and every 2x nearest ``UpSampling2D``
(two tf.repeat chains of Unsqueeze/Tile/Reshape between NHWC<->NCHW transposes)
becomes one ``Resize``. 3,173 -> 1,192 nodes on the 256 px group path; ONNX Runtime
runs it ~10% faster and closer to Keras.
"""

import collections
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from export import cli  # noqa: E402

if __name__ == "__main__":
    cli.onnx_parser().parse_args()  # --help and bad options: answered before TensorFlow loads

from tfcartoon import _quiet  # noqa: E402

_quiet.install()  # TensorFlow's start-up log stays hidden unless asked for

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime  # noqa: E402
from onnxruntime import quantization  # noqa: E402
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
from tfcartoon.inference import run_in_batches  # noqa: E402

MIN_OPSET, MAX_OPSET = cli.MIN_OPSET, cli.MAX_OPSET
PRECISIONS = cli.ONNX_PRECISIONS
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
    (photo,) = concrete.inputs
    # {cartoon} (and group_probabilities for the auto variant), in a fixed order
    outputs = {key: tensor.name for key, tensor in sorted(concrete.structured_outputs.items())}
    graph_def = tf2onnx.tf_loader.from_function(concrete, [photo.name], list(outputs.values()))
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        onnx_graph = tf2onnx.tfonnx.process_tf_graph(
            graph, opset=opset, input_names=[photo.name], output_names=list(outputs.values()),
            tensors_to_rename={photo.name: common.PHOTO,
                               **{name: key for key, name in outputs.items()}})
    optimizers = OPTIMIZERS if quick else collections.OrderedDict([TRANSPOSES, *OPTIMIZERS.items()])
    onnx_graph = tf2onnx.optimizer.optimize_graph(onnx_graph, optimizers=optimizers)
    model = onnx_graph.make_model("tfcartoon photo->cartoon")
    fuse_graph(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()


# === Graph rewrites ===

class _Graph:
    """Producer and constant lookups over an ONNX graph."""

    def __init__(self, graph):
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consts = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)

    def made_by(self, name, op_type):
        """The node of type ``op_type`` producing ``name``, else None."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def const_is(self, name, values):
        """Whether ``name`` is a constant equal to the list ``values``."""
        return name in self.consts and self.consts[name].tolist() == values

    def split_const(self, node):
        """(variable input, constant) of a binary node with one constant input."""
        for var, const in ((0, 1), (1, 0)):
            if node.input[const] in self.consts and node.input[var] not in self.consts:
                return node.input[var], self.consts[node.input[const]]
        return None, None


def _mean_input(graph, name):
    """x when ``name`` is GlobalAveragePool(x), possibly through a Reshape to (N, C, 1, 1)."""
    node = graph.producer.get(name)
    if node is not None and node.op_type == "Reshape":
        shape = graph.consts.get(node.input[1])
        if shape is None or shape.tolist()[2:] != [1, 1] or len(shape) != 4:
            return None
        node = graph.producer.get(node.input[0])
    return node.input[0] if node is not None and node.op_type == "GlobalAveragePool" else None


def _centred_input(graph, name):
    """x when ``name`` is Sub(x, mean(x)) with the mean over H and W."""
    sub = graph.made_by(name, "Sub")
    return sub.input[0] if sub is not None and _mean_input(graph, sub.input[1]) == sub.input[0] \
        else None


def _match_instance_norm(graph, node):
    """(x, epsilon, count factor, scale) when ``node`` ends an instance norm of x, else None.

    Matches ``(x - m) * k / sqrt(c * mean((x - m)^2) + eps)`` with m = mean(x) over H, W,
    constants c (1, or N/(N-1) for the unbiased variance) and k (scalar or per channel).
    """
    if node.op_type != "Mul":
        return None
    for centred, other in ((0, 1), (1, 0)):
        x = _centred_input(graph, node.input[centred])
        if x is None:
            continue
        rsqrt, scale = node.input[other], np.float32(1.0)
        scaled = graph.made_by(rsqrt, "Mul")
        if scaled is not None:
            rsqrt, scale = graph.split_const(scaled)
            if rsqrt is None:
                continue
        reciprocal = graph.made_by(rsqrt, "Reciprocal")
        sqrt = reciprocal is not None and graph.made_by(reciprocal.input[0], "Sqrt")
        add = sqrt and graph.made_by(sqrt.input[0], "Add")
        if not add:
            continue
        variance, epsilon = graph.split_const(add)
        if variance is None or np.size(epsilon) != 1:
            continue
        count = np.float32(1.0)
        corrected = graph.made_by(variance, "Mul")
        if corrected is not None:
            variance, count = graph.split_const(corrected)
            if variance is None or np.size(count) != 1:
                continue
        pool = graph.made_by(variance, "GlobalAveragePool")
        square = pool is not None and graph.made_by(pool.input[0], "Mul")
        if (not square or square.input[0] != square.input[1]
                or _centred_input(graph, square.input[0]) != x):
            continue
        return x, float(np.ravel(epsilon)[0]), float(np.ravel(count)[0]), np.ravel(scale)
    return None


def _match_upsample(graph, node):
    """X when ``node`` (a Reshape) ends tf2onnx's NHWC 2x nearest repeat of NCHW tensor X."""
    def repeat_start(name):
        tile = graph.made_by(name, "Tile")
        if tile is None or not graph.const_is(tile.input[1], [1, 1, 1, 2, 1]):
            return None
        unsqueeze = graph.made_by(tile.input[0], "Unsqueeze")
        if unsqueeze is None or len(unsqueeze.input) < 2 or not graph.const_is(
                unsqueeze.input[1], [3]):
            return None
        return unsqueeze

    if node.op_type != "Reshape":
        return None
    second = repeat_start(node.input[0])
    first_reshape = second is not None and graph.made_by(second.input[0], "Reshape")
    transpose = first_reshape and graph.made_by(first_reshape.input[0], "Transpose")
    if not transpose or list(transpose.attribute[0].ints) != [0, 2, 3, 4, 1]:
        return None
    first = repeat_start(transpose.input[0])
    return None if first is None else first.input[0]


def fuse_graph(model):
    """Rewrite instance norms and 2x nearest upsampling in place (see the module docstring).

    Both rewrites are exact up to float rounding; patterns that do not match exactly
    (e.g. the graph of ``quick`` conversions) are left alone. Returns the counts.
    """
    graph = _Graph(model.graph)
    channels = _channel_counts(model)
    nodes, initializers, counts = [], [], {"instance_norm": 0, "upsample": 0}
    for node in model.graph.node:
        norm = _match_instance_norm(graph, node)
        if norm is not None and norm[0] in channels and norm[3].size in (1, channels[norm[0]]):
            x, epsilon, count, scale = norm
            width = channels[x]
            # (x - m) / sqrt(c v + eps) = IN_{eps / c}(x) / sqrt(c), exactly.
            scale = (np.broadcast_to(scale, (width,)) / np.sqrt(count)).astype(np.float32)
            base = f"{node.name}/InstanceNormalization"
            initializers += [onnx.numpy_helper.from_array(scale, f"{base}/scale"),
                             onnx.numpy_helper.from_array(np.zeros(width, np.float32),
                                                          f"{base}/bias")]
            nodes.append(onnx.helper.make_node(
                "InstanceNormalization", [x, f"{base}/scale", f"{base}/bias"],
                list(node.output), name=base, epsilon=epsilon / count))
            counts["instance_norm"] += 1
            continue
        source = _match_upsample(graph, node)
        if source is not None:
            base = f"{node.name}/Resize"
            initializers.append(onnx.numpy_helper.from_array(
                np.array([1, 1, 2, 2], np.float32), f"{base}/scales"))
            nodes += [onnx.helper.make_node(
                          "Resize", [source, "", f"{base}/scales"], [f"{base}:0"], name=base,
                          mode="nearest", coordinate_transformation_mode="asymmetric",
                          nearest_mode="floor"),
                      # The repeat produced NHWC; ONNX Runtime cancels this transpose with
                      # the NHWC->NCHW one after it.
                      onnx.helper.make_node("Transpose", [f"{base}:0"], list(node.output),
                                            name=f"{base}/to_nhwc", perm=[0, 2, 3, 1])]
            counts["upsample"] += 1
            continue
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(initializers)
    _remove_dead_nodes(model.graph)
    return counts


def _channel_counts(model):
    """Static channel count (dim 1) of every rank-4 tensor that shape inference knows."""
    graph, counts = onnx.shape_inference.infer_shapes(model).graph, {}
    for info in [*graph.value_info, *graph.input, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            counts[info.name] = dims[1].dim_value
    return counts


def _used_names(nodes):
    """Tensor names read by ``nodes``, and by the nodes of their subgraphs (``If`` branches
    read the outer graph's tensors by name)."""
    used = set()
    for node in nodes:
        used.update(node.input)
        for attribute in node.attribute:
            for subgraph in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                used |= _used_names(subgraph.node)
    return used


def _remove_dead_nodes(graph):
    """Drop nodes whose outputs nothing uses, then unused initializers."""
    outputs = {output.name for output in graph.output}
    while True:
        used = _used_names(graph.node) | outputs
        alive = [node for node in graph.node if any(out in used for out in node.output)]
        if len(alive) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(alive)
    used = _used_names(graph.node)
    alive = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(alive)


# === int8 ===

class _Calibration(quantization.CalibrationDataReader):
    """Feeds float images to ONNX Runtime's calibration, ``batch`` at a time."""

    def __init__(self, images, batch):
        self._batches = iter([{common.PHOTO: images[i:i + batch]}
                              for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self._batches, None)


def quantize_int8(data, images):
    """Static int8 QDQ version of float32 ONNX bytes ``data``; returns bytes.

    Convolutions and dense layers (Gemm) get per-channel symmetric int8 weights and uint8
    activations whose ranges are the min/max over ``images`` (float32 NHWC in [-1, 1]),
    except the first and the last convolution (image in, image out); every other node
    stays float32.
    """
    graph = onnx.load_from_string(data).graph
    step = graph.input[0].type.tensor_type.shape.dim[0].dim_value or len(images)
    # a fixed batch needs whole chunks; repeated images leave the min/max ranges as they are
    images = np.concatenate([images, np.repeat(images[-1:], -len(images) % step, axis=0)])
    # In topological order the first conv has no conv before it (the image conv) and the
    # last none after it (the output conv).
    convs = [node.name for node in graph.node if node.op_type == "Conv"]
    with tempfile.TemporaryDirectory(prefix="tfcartoon_int8_") as workdir:
        source, prepared, quantized = (Path(workdir) / name for name in
                                       ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(data)
        quantization.shape_inference.quant_pre_process(str(source), str(prepared),
                                                       skip_symbolic_shape=True)
        quantization.quantize_static(
            str(prepared), str(quantized), _Calibration(images, step),
            quant_format=quantization.QuantFormat.QDQ, op_types_to_quantize=["Conv", "Gemm"],
            per_channel=True, activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            nodes_to_exclude=[convs[0], convs[-1]])
        return quantized.read_bytes()


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
    """Run an exported model on uint8 ``photos``, in batches of its fixed batch size (if any);
    returns float outputs."""
    runner = session(data)
    batch = runner.get_inputs()[0].shape[0]
    return run_in_batches(lambda chunk: runner.run([common.CARTOON], {common.PHOTO: chunk})[0],
                          common.photos_to_float(photos),
                          batch if isinstance(batch, int) else None)


def run_onnx_auto(data, photos):
    """(cartoons, group probabilities) of an auto file on uint8 ``photos``, one at a time."""
    runner = session(data)
    results = [runner.run([common.CARTOON, common.PROBABILITIES], {common.PHOTO: image[None]})
               for image in common.photos_to_float(photos)]
    return (np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]))


def export_onnx_auto(generator, source, out_dir, classifier, opset=17, quick=False,
                     overwrite=False, parity=None):
    """Convert, check and write ``auto.onnx``: every group and the group classifier, one
    float32 image (batch 1) in, its cartoon and the group probabilities out; the group
    paths are ONNX ``If`` branches. Returns (path, card).

    Raises:
        ValueError: opset outside [13, 18].
        FileExistsError, common.ParityError: nothing written.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    generator = common.as_float32(generator)
    groups = list(generator.groups)
    path, card_path = common.output_paths(out_dir, "auto.onnx")
    common.refuse_existing([path, card_path], overwrite)
    gate = common.gate_for("fp32")
    photos, image_source = parity or common.parity_images(generator.image_size)
    data = convert(common.serving_function(generator, classifier=classifier), opset, quick)
    figures, routing = common.auto_parity(generator, classifier, photos, False,
                                          lambda images: run_onnx_auto(data, images),
                                          path.name, gate)
    size = generator.image_size
    card = common.model_card(
        file_format="onnx", path=path, generator=generator, groups=groups, precision="fp32",
        app=False, inputs=[common.tensor_contract(common.PHOTO, (1, size, size, 3), "float32",
                                                  (-1.0, 1.0))],
        outputs=[common.tensor_contract(common.CARTOON, (1, size, size, 3), "float32",
                                        (-1.0, 1.0)),
                 common.tensor_contract(common.PROBABILITIES, (1, len(groups)), "float32",
                                        (0.0, 1.0))],
        signature=None, parity=figures, gate=gate, image_source=image_source,
        params=generator.count_params() + classifier.model.count_params(), source=source,
        ops=onnx_ops(data),
        runtime=f"onnxruntime {onnxruntime.__version__} CPU, ORT_ENABLE_ALL, "
                f"{RUN_THREADS} threads")
    card["parity"]["reference"] = ("Keras float32 group model of the group the file picked, "
                                   "per image")
    card["opset"] = opset
    card["transposes_optimized"] = not quick
    card["group_index"] = {name: index for index, name in enumerate(groups)}
    card["routing"] = common.routing_card(classifier, routing)
    card = common.write_artifact(path, card_path, data, card, overwrite)
    return path, card


def export_onnx(generator, source, out_dir, group, opset=17, quick=False, overwrite=False,
                parity=None, batch=1, precision="fp32"):
    """Convert, check and write ``<group>.onnx`` (``<group>_int8.onnx``) and its model card;
    returns (path, card).

    ``quick`` skips tf2onnx's transpose optimiser (faster export, slower file). ``batch``
    fixes the batch dimension (None: any batch size). ``precision`` is fp32 or int8
    (static QDQ convolutions calibrated on the parity photos).

    Raises:
        ValueError: opset outside [13, 18], batch not a positive int or None, unknown
            precision or group.
        FileExistsError, common.ParityError: nothing written.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be a positive int or None (any), got {batch!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: expected one of {PRECISIONS}")
    generator = common.as_float32(generator)
    common.check_groups(generator, group)
    name = f"{group}.onnx" if precision == "fp32" else f"{group}_{precision}.onnx"
    path, card_path = common.output_paths(out_dir, name)
    common.refuse_existing([path, card_path], overwrite)
    gate = common.gate_for(precision)
    photos, image_source = parity or common.parity_images(generator.image_size)

    data = convert(common.serving_function(generator, group, batch=batch), opset, quick)
    if precision == "int8":
        data = quantize_int8(data, common.photos_to_float(photos))
    figures = common.parity_figures(common.keras_reference(generator, group, photos),
                                    run_onnx(data, photos))
    common.enforce_gate(path.name, gate, figures)

    size = generator.image_size
    contract = [("N" if batch is None else batch, size, size, 3), "float32", (-1.0, 1.0)]
    card = common.model_card(
        file_format="onnx", path=path, generator=generator, groups=[group], precision=precision,
        app=False, inputs=[common.tensor_contract(common.PHOTO, *contract)],
        outputs=[common.tensor_contract(common.CARTOON, *contract)], signature=None,
        parity=figures, gate=gate, image_source=image_source,
        params=generator.group_model(group).count_params(), source=source,
        ops=onnx_ops(data),
        runtime=f"onnxruntime {onnxruntime.__version__} CPU, ORT_ENABLE_ALL, "
                f"{RUN_THREADS} threads")
    card["opset"] = opset
    card["transposes_optimized"] = not quick
    if precision == "int8":
        card["quantization"] = {
            "scheme": "static QDQ, Conv only; weights int8 per channel (symmetric), "
                      "activations uint8 (min/max calibration); the first and last Conv "
                      "and all other nodes float32",
            "calibration_images": image_source}
    card = common.write_artifact(path, card_path, data, card, overwrite)
    return path, card


def parse_args(argv=None):
    """Command-line options (``export.cli``)."""
    return cli.onnx_parser().parse_args(argv)


def main(argv=None):
    """Export every requested group; returns the exit status (1 if any was refused)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    problem = common.auto_problem(args)
    if problem is None and args.auto and (args.precision != "fp32" or args.batch != 1):
        problem = "--auto writes a float32 file of batch 1 (each image picks its branch); drop --precision/--batch"
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
    failed = False
    for group in [None] if args.auto else groups:
        try:
            if args.auto:
                path, card = export_onnx_auto(generator, checkpoint, args.out, classifier,
                                              opset=args.opset, quick=args.quick,
                                              overwrite=args.overwrite)
            else:
                path, card = export_onnx(generator, checkpoint, args.out, group,
                                         opset=args.opset, quick=args.quick,
                                         overwrite=args.overwrite, batch=args.batch,
                                         precision=args.precision)
        except (common.ParityError, FileExistsError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
            continue
        psnr = card["parity"]["psnr_db"]
        print(f"wrote {path} ({card['file_size_bytes'] / 1e6:.2f} MB): max abs err "
              f"{card['parity']['max_abs_err']:.3g}"
              + ("" if psnr is None else f", PSNR {psnr:.1f} dB")
              + f" on {card['parity']['images']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
