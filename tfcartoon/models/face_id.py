"""Face-ID embedder: a TFLite face-recognition model rebuilt as a frozen Keras model.

The face-ID loss and the identity metric need a face-recognition network that
TensorFlow can differentiate through. The project's embedder ships as a float32
TFLite file (``squeezenet_fp32.tflite``: input ``[1, 112, 112, 3]`` RGB scaled
``(x - 127.5) / 128`` and aligned to the ArcFace 5-point template, output a 128-d
embedding). :func:`tflite_to_keras` reads the graph and its weights from the
flatbuffer (with the schema bundled in TensorFlow, so no extra dependency) and
rebuilds it op by op out of standard Keras layers, with the weights copied
exactly, every layer frozen and computing in float32 whatever the global dtype
policy. The result saves to and reloads from the ``.keras`` format without any
custom object.

:func:`face_embedding` maps generator images (``[-1, 1]``, aligned 256x256 crops
in the project's framing) to the embedder's input with a fixed, differentiable
crop and resize (see :data:`FACE_CROP_BOX` for how the box was chosen) and
returns the raw, *not* L2-normalised, embedding.

Command line: ``python -m tfcartoon.models.face_id IN.tflite OUT.keras [--overwrite]``.
"""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
from tensorflow.lite.python import schema_py_generated as tflite_schema

from tfcartoon.paths import shared_path

#: Where the default embedder lives inside the shared data folder.
DEFAULT_EMBEDDER = ("models", "face_id", "squeezenet_fp32.tflite")

#: Side of the aligned generator images the crop box is defined at.
REFERENCE_SIZE = 256

#: Face crop ``(top, left, side)`` in pixels of a 256x256 aligned image (rows and
#: columns 32:223). Fitted (least squares, scale + translation) so that the mean
#: MTCNN landmarks of the aligned p2c photos land on the ArcFace 112x112 template
#: once the box is resized to 112: mean landmark error 2.3 px at 112 (3.3 px per
#: image) against 6.4 px (7.0 px) for the SPEC's crop (rows 57:219, cols 47:209),
#: which sits too low and too tight for this embedder. On the lotr photos aligned
#: by ``tfcartoon.data.faces``, embeddings through this box have cosine 0.91 with
#: those of a direct 5-point template warp (SPEC box: 0.59).
FACE_CROP_BOX = (32, 32, 191)

_OP_NAMES = {
    code: name
    for name, code in vars(tflite_schema.BuiltinOperator).items()
    if not name.startswith("_")
}
_TENSOR_DTYPES = {
    tflite_schema.TensorType.FLOAT32: np.float32,
    tflite_schema.TensorType.INT32: np.int32,
    tflite_schema.TensorType.INT64: np.int64,
}
_TENSOR_TYPE_NAMES = {
    code: name
    for name, code in vars(tflite_schema.TensorType).items()
    if not name.startswith("_")
}
_FUSED_ACTIVATIONS = {
    tflite_schema.ActivationFunctionType.NONE: None,
    tflite_schema.ActivationFunctionType.RELU: "relu",
    tflite_schema.ActivationFunctionType.RELU6: "relu6",
    tflite_schema.ActivationFunctionType.TANH: "tanh",
}
_PADDINGS = {tflite_schema.Padding.SAME: "same", tflite_schema.Padding.VALID: "valid"}
_FLOAT = "float32"


class _Graph:
    """One TFLite subgraph being rebuilt: its tensors, constants and Keras values."""

    def __init__(self, model, raw, source):
        self.model = model
        self.raw = raw
        self.source = source
        self.subgraph = model.subgraphs[0]
        self.values = {}

    def tensor(self, index):
        """The flatbuffer tensor record at ``index``."""
        return self.subgraph.tensors[index]

    def describe(self, index):
        """A short human-readable name for tensor ``index``."""
        name = self.tensor(index).name
        return f"tensor {index} ({name.decode() if isinstance(name, bytes) else name})"

    def constant(self, index):
        """The constant stored for tensor ``index`` as a numpy array, or None."""
        tensor = self.tensor(index)
        data = _buffer_bytes(self.model.buffers[tensor.buffer], self.raw)
        if data is None:
            return None
        if tensor.type not in _TENSOR_DTYPES:
            raise ValueError(
                f"{self.source}: {self.describe(index)} holds "
                f"{_TENSOR_TYPE_NAMES.get(tensor.type, tensor.type)} data; only float32 "
                "weights (and int32/int64 shapes and axes) are supported, so quantized "
                "or float16 models cannot be rebuilt"
            )
        shape = () if tensor.shape is None else tuple(int(d) for d in tensor.shape)
        return np.frombuffer(data, dtype=_TENSOR_DTYPES[tensor.type]).reshape(shape).copy()

    def value(self, index):
        """The Keras tensor computed for tensor ``index``."""
        if index not in self.values:
            raise ValueError(
                f"{self.source}: {self.describe(index)} is used as an activation but is "
                "neither a graph input nor computed by an earlier op"
            )
        return self.values[index]

    def required_constant(self, index, what):
        """The constant for tensor ``index``; raise naming ``what`` when it is not one."""
        array = self.constant(index)
        if array is None:
            raise ValueError(
                f"{self.source}: expected {what} to be a constant, got computed "
                f"{self.describe(index)}"
            )
        return array


def _buffer_bytes(buffer, raw):
    """The bytes a flatbuffer Buffer holds (inline or at a file offset), or None."""
    if buffer.data is not None and len(buffer.data):
        return np.asarray(buffer.data, dtype=np.uint8).tobytes()
    if buffer.offset > 1 and buffer.size:
        return raw[buffer.offset : buffer.offset + buffer.size]
    return None


def _read_flatbuffer(path):
    """Parse a ``.tflite`` file; return ``(ModelT, raw bytes)``."""
    raw = Path(path).read_bytes()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise ValueError(
            f"{path}: not a TFLite flatbuffer (expected the 'TFL3' identifier at "
            f"bytes 4:8, got {raw[4:8]!r})"
        )
    return tflite_schema.ModelT.InitFromPackedBuf(raw, 0), raw


def _op_kind(model, op):
    """The builtin op name (e.g. ``CONV_2D``) of operator ``op``."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == tflite_schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM({code.customCode.decode() if code.customCode else '?'})"
    return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _fused_activation(graph, options, name):
    """The Keras activation name for a TFLite fused activation code."""
    code = options.fusedActivationFunction
    if code not in _FUSED_ACTIVATIONS:
        raise ValueError(
            f"{graph.source}: op {name} uses fused activation {code}; supported are "
            "NONE, RELU, RELU6 and TANH"
        )
    return _FUSED_ACTIVATIONS[code]


def _activate(x, activation, name):
    """Apply ``activation`` (a Keras name or None) as its own layer."""
    if activation is None:
        return x
    return keras.layers.Activation(activation, name=f"{name}_act", dtype=_FLOAT)(x)


def _padding(graph, options, name):
    """Keras padding for a TFLite Padding enum (SAME is TensorFlow's SAME)."""
    if options.padding not in _PADDINGS:
        raise ValueError(f"{graph.source}: op {name} has unknown padding {options.padding}")
    return _PADDINGS[options.padding]


def _optional_bias(graph, op):
    """The bias constant of a conv / fully-connected op, or None when absent."""
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return None
    return graph.required_constant(op.inputs[2], "the bias")


def _with_weights(layer, x, weights):
    """Call ``layer`` on ``x`` (building it) and load ``weights`` into it."""
    y = layer(x)
    layer.set_weights([w for w in weights if w is not None])
    return y


def _conv_2d(graph, op, name):
    """CONV_2D: TFLite kernel [out, h, w, in] -> Keras [h, w, in, out]."""
    x = graph.value(op.inputs[0])
    kernel = graph.required_constant(op.inputs[1], f"the kernel of {name}")
    bias = _optional_bias(graph, op)
    options = op.builtinOptions
    if kernel.shape[3] != x.shape[-1]:
        raise ValueError(
            f"{graph.source}: op {name} has a kernel for {kernel.shape[3]} input "
            f"channels but its input has {x.shape[-1]} (grouped convolutions are not "
            "supported)"
        )
    layer = keras.layers.Conv2D(
        filters=kernel.shape[0],
        kernel_size=kernel.shape[1:3],
        strides=(options.strideH, options.strideW),
        padding=_padding(graph, options, name),
        dilation_rate=(options.dilationHFactor, options.dilationWFactor),
        activation=_fused_activation(graph, options, name),
        use_bias=bias is not None,
        name=name,
        dtype=_FLOAT,
    )
    return _with_weights(layer, x, [kernel.transpose(1, 2, 3, 0), bias])


def _depthwise_conv_2d(graph, op, name):
    """DEPTHWISE_CONV_2D: kernel [1, h, w, in * mult] -> Keras [h, w, in, mult]."""
    x = graph.value(op.inputs[0])
    kernel = graph.required_constant(op.inputs[1], f"the kernel of {name}")
    bias = _optional_bias(graph, op)
    options = op.builtinOptions
    channels = x.shape[-1]
    if kernel.shape[3] % channels:
        raise ValueError(
            f"{graph.source}: op {name} has {kernel.shape[3]} output channels, not a "
            f"multiple of its {channels} input channels"
        )
    multiplier = kernel.shape[3] // channels
    layer = keras.layers.DepthwiseConv2D(
        kernel_size=kernel.shape[1:3],
        strides=(options.strideH, options.strideW),
        padding=_padding(graph, options, name),
        depth_multiplier=multiplier,
        dilation_rate=(options.dilationHFactor, options.dilationWFactor),
        activation=_fused_activation(graph, options, name),
        use_bias=bias is not None,
        name=name,
        dtype=_FLOAT,
    )
    depthwise = kernel[0].reshape(kernel.shape[1], kernel.shape[2], channels, multiplier)
    return _with_weights(layer, x, [depthwise, bias])


def _pool_2d(layer_class):
    """Builder for MAX_POOL_2D / AVERAGE_POOL_2D (SAME averages exclude padding)."""

    def build(graph, op, name):
        options = op.builtinOptions
        layer = layer_class(
            pool_size=(options.filterHeight, options.filterWidth),
            strides=(options.strideH, options.strideW),
            padding=_padding(graph, options, name),
            name=name,
            dtype=_FLOAT,
        )
        y = layer(graph.value(op.inputs[0]))
        return _activate(y, _fused_activation(graph, options, name), name)

    return build


def _concatenation(graph, op, name):
    """CONCATENATION along a non-batch axis."""
    inputs = [graph.value(i) for i in op.inputs]
    options = op.builtinOptions
    axis = options.axis % len(inputs[0].shape)
    if axis == 0:
        raise ValueError(f"{graph.source}: op {name} concatenates along the batch axis")
    y = keras.layers.Concatenate(axis=axis, name=name, dtype=_FLOAT)(inputs)
    return _activate(y, _fused_activation(graph, options, name), name)


def _reshape(graph, op, name):
    """RESHAPE that keeps the batch axis first."""
    x = graph.value(op.inputs[0])
    if len(op.inputs) > 1 and op.inputs[1] >= 0:
        shape = graph.required_constant(op.inputs[1], f"the new shape of {name}")
    else:
        shape = np.asarray(op.builtinOptions.newShape)
    target = [int(d) for d in shape.reshape(-1)[1:]]
    elements = int(np.prod(x.shape[1:]))
    known = int(np.prod([d for d in target if d != -1]))
    if -1 in target:
        target[target.index(-1)] = elements // known
    if int(np.prod(target)) != elements or shape.reshape(-1)[0] not in (1, -1):
        raise ValueError(
            f"{graph.source}: op {name} reshapes {tuple(x.shape)} to "
            f"{tuple(shape.tolist())}; only reshapes that keep the batch axis are supported"
        )
    return keras.layers.Reshape(target, name=name, dtype=_FLOAT)(x)


def _mean(graph, op, name):
    """MEAN over non-batch axes."""
    x = graph.value(op.inputs[0])
    axes = graph.required_constant(op.inputs[1], f"the axes of {name}").reshape(-1)
    axes = tuple(sorted({int(a) % len(x.shape) for a in axes}))
    if 0 in axes:
        raise ValueError(f"{graph.source}: op {name} averages over the batch axis")
    return keras.ops.mean(x, axis=axes, keepdims=bool(op.builtinOptions.keepDims))


def _elementwise(merge_class, constant_scale_offset):
    """Builder for ADD / MUL: two activations, or an activation and a constant.

    A constant operand becomes a ``Rescaling`` layer (``x * scale + offset``, with
    the constant kept exactly in the layer config); ``constant_scale_offset`` maps
    the constant to that pair.
    """

    def build(graph, op, name):
        constants = [graph.constant(i) for i in op.inputs]
        if all(c is not None for c in constants):
            raise ValueError(f"{graph.source}: op {name} has only constant inputs")
        options = op.builtinOptions
        if constants[0] is None and constants[1] is None:
            y = merge_class(name=name, dtype=_FLOAT)([graph.value(i) for i in op.inputs])
        else:
            tensor_input = op.inputs[0] if constants[0] is None else op.inputs[1]
            constant = constants[1] if constants[0] is None else constants[0]
            scale, offset = constant_scale_offset(constant.astype(np.float32))
            layer = keras.layers.Rescaling(scale, offset, name=name, dtype=_FLOAT)
            y = layer(graph.value(tensor_input))
        return _activate(y, _fused_activation(graph, options, name), name)

    return build


def _fully_connected(graph, op, name):
    """FULLY_CONNECTED: TFLite weights [out, in] -> Dense kernel [in, out]."""
    x = graph.value(op.inputs[0])
    weights = graph.required_constant(op.inputs[1], f"the weights of {name}")
    bias = _optional_bias(graph, op)
    options = op.builtinOptions
    if options.weightsFormat != tflite_schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
        raise ValueError(f"{graph.source}: op {name} uses shuffled weights")
    if len(x.shape) > 2 and not options.keepNumDims:
        if int(np.prod(x.shape[1:])) != weights.shape[1]:
            raise ValueError(
                f"{graph.source}: op {name} flattens {tuple(x.shape)} into rows of "
                f"{weights.shape[1]}, which would fold the batch axis"
            )
        x = keras.layers.Flatten(name=f"{name}_flatten", dtype=_FLOAT)(x)
    layer = keras.layers.Dense(
        weights.shape[0],
        activation=_fused_activation(graph, options, name),
        use_bias=bias is not None,
        name=name,
        dtype=_FLOAT,
    )
    return _with_weights(layer, x, [weights.T, bias])


def _pad(graph, op, name):
    """PAD with zeros on the two spatial axes of an NHWC tensor."""
    x = graph.value(op.inputs[0])
    pads = graph.required_constant(op.inputs[1], f"the paddings of {name}")
    if len(x.shape) != 4 or pads[0].any() or pads[3].any():
        raise ValueError(
            f"{graph.source}: op {name} pads {tuple(x.shape)} by {pads.tolist()}; only "
            "zero padding of the height and width of an NHWC tensor is supported"
        )
    padding = (tuple(int(p) for p in pads[1]), tuple(int(p) for p in pads[2]))
    return keras.layers.ZeroPadding2D(padding, name=name, dtype=_FLOAT)(x)


def _activation(activation):
    """Builder for a standalone activation op (RELU, RELU6, LOGISTIC, TANH)."""

    def build(graph, op, name):
        layer = keras.layers.Activation(activation, name=name, dtype=_FLOAT)
        return layer(graph.value(op.inputs[0]))

    return build


_BUILDERS = {
    "ADD": _elementwise(keras.layers.Add, lambda c: (1.0, c)),
    "AVERAGE_POOL_2D": _pool_2d(keras.layers.AveragePooling2D),
    "CONCATENATION": _concatenation,
    "CONV_2D": _conv_2d,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
    "FULLY_CONNECTED": _fully_connected,
    "LOGISTIC": _activation("sigmoid"),
    "MAX_POOL_2D": _pool_2d(keras.layers.MaxPooling2D),
    "MEAN": _mean,
    "MUL": _elementwise(keras.layers.Multiply, lambda c: (c, 0.0)),
    "PAD": _pad,
    "RELU": _activation("relu"),
    "RELU6": _activation("relu6"),
    "RESHAPE": _reshape,
    "TANH": _activation("tanh"),
}

#: Op kinds :func:`tflite_to_keras` can rebuild.
SUPPORTED_OPS = tuple(sorted(_BUILDERS))


def _check_supported(graph):
    """Raise NotImplementedError naming every op kind the converter lacks."""
    kinds = [_op_kind(graph.model, op) for op in graph.subgraph.operators]
    missing = sorted(set(kinds) - set(SUPPORTED_OPS))
    if missing:
        raise NotImplementedError(
            f"{graph.source}: unsupported TFLite op(s) {', '.join(missing)}; the converter "
            f"supports {', '.join(SUPPORTED_OPS)}"
        )
    return kinds


def _graph_input(graph, index):
    """A float32 ``keras.Input`` for graph input ``index`` with a free batch axis."""
    tensor = graph.tensor(index)
    if tensor.type != tflite_schema.TensorType.FLOAT32:
        raise ValueError(
            f"{graph.source}: graph input {graph.describe(index)} is "
            f"{_TENSOR_TYPE_NAMES.get(tensor.type, tensor.type)}, expected FLOAT32"
        )
    return keras.Input(shape=tuple(int(d) for d in tensor.shape[1:]), dtype=_FLOAT)


def _check_shape(graph, index, value, name):
    """Raise when the rebuilt op's output shape differs from the file's."""
    expected = tuple(int(d) for d in graph.tensor(index).shape[1:])
    if tuple(value.shape[1:]) != expected:
        raise ValueError(
            f"{graph.source}: op {name} rebuilt with output shape "
            f"{tuple(value.shape[1:])}, but the file says {expected} (batch axis omitted)"
        )


def tflite_to_keras(path, name="face_embedder"):
    """Rebuild a float32 TFLite model as a frozen, float32 Keras functional model.

    Reads the graph (first subgraph) and weights from the flatbuffer and maps each
    op in :data:`SUPPORTED_OPS` to standard Keras layers: kernels are transposed
    from TFLite's layouts (conv OHWI, depthwise 1HWC, fully-connected [out, in]),
    SAME padding keeps TensorFlow's (and TFLite's) asymmetric convention, and
    every output shape is checked against the file. The batch axis is left free.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a float32 TFLite model the converter can map.
        NotImplementedError: the graph uses an op kind outside SUPPORTED_OPS.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TFLite model not found: {path}")
    model, raw = _read_flatbuffer(path)
    if len(model.subgraphs) != 1:
        raise ValueError(f"{path}: expected one subgraph, got {len(model.subgraphs)}")
    graph = _Graph(model, raw, path)
    kinds = _check_supported(graph)
    inputs = []
    for index in graph.subgraph.inputs:
        graph.values[index] = _graph_input(graph, index)
        inputs.append(graph.values[index])
    for number, (op, kind) in enumerate(zip(graph.subgraph.operators, kinds)):
        op_name = f"{kind.lower()}_{number}"
        value = _BUILDERS[kind](graph, op, op_name)
        _check_shape(graph, op.outputs[0], value, op_name)
        graph.values[op.outputs[0]] = value
    outputs = [graph.value(index) for index in graph.subgraph.outputs]
    keras_model = keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=name,
    )
    keras_model.trainable = False
    return keras_model


def _check_embedder(model, source):
    """Raise unless ``model`` maps (B, S, S, 3) images to (B, D) embeddings."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"{source}: expected one input and one output, got {len(model.inputs)} and "
            f"{len(model.outputs)}"
        )
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(f"{source}: expected an input of shape (batch, S, S, 3), got {shape}")
    if len(model.output_shape) != 2:
        raise ValueError(
            f"{source}: expected an output of shape (batch, D), got {model.output_shape}"
        )


def load_face_embedder(path):
    """Load the face-ID embedder from a ``.tflite`` file or a converted ``.keras`` file.

    Returns a frozen float32 Keras model with the file's contract: input
    ``(batch, 112, 112, 3)`` float32 RGB aligned to the ArcFace template and scaled
    ``(x - 127.5) / 128``; output the raw ``(batch, 128)`` embedding, *not*
    L2-normalised (normalise before taking cosines). Use :func:`face_embedding`
    to feed it ``[-1, 1]`` generator images.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face embedder not found: {path}")
    if path.suffix == ".tflite":
        model = tflite_to_keras(path)
    elif path.suffix == ".keras":
        model = keras.saving.load_model(path, compile=False)
    else:
        raise ValueError(f"face embedder must be a .tflite or .keras file, got {path}")
    _check_embedder(model, path)
    model.trainable = False
    return model


def default_embedder_path():
    """Path of the shared default embedder; raise FileNotFoundError when absent."""
    path = shared_path(*DEFAULT_EMBEDDER)
    if path is None:
        raise FileNotFoundError(
            f"default face embedder {'/'.join(DEFAULT_EMBEDDER)!r} not found in the shared "
            "data folder; pass an embedder (see tfcartoon.models.face_id.load_face_embedder)"
        )
    return path


def convert_face_embedder(tflite_path, out_keras_path, overwrite=False):
    """Convert a TFLite embedder to a ``.keras`` file; return the written Path.

    The model is saved into a temporary folder beside the destination, then moved
    into place with ``os.replace``, so readers never see a partial file. An
    existing destination is an error unless ``overwrite=True``.
    """
    out = Path(out_keras_path)
    if out.suffix != ".keras":
        raise ValueError(f"output must end in .keras, got {out}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True to replace it")
    model = load_face_embedder(tflite_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A private folder beside the output: same filesystem (so os.replace is atomic)
    # and the saved file gets the usual umask permissions, unlike mkstemp's 0600.
    temp_dir = tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        temp = os.path.join(temp_dir, out.name)
        model.save(temp)
        os.replace(temp, out)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return out


def face_crop_box(size):
    """``(top, left, side)`` of the face crop in a ``size`` x ``size`` aligned image.

    :data:`FACE_CROP_BOX` scaled from 256 and rounded to whole pixels.
    """
    scale = size / REFERENCE_SIZE
    return tuple(int(round(v * scale)) for v in FACE_CROP_BOX)


def embedder_input(images, input_size=112):
    """Map ``[-1, 1]`` aligned images (B, S, S, 3) to the embedder's input.

    A fixed crop (:func:`face_crop_box`), a bilinear resize to ``input_size``
    and the rescale ``x_pix = (x + 1) * 127.5``, ``(x_pix - 127.5) / 128``.
    Differentiable and XLA-compatible (antialiased resizing is not, and did not
    change the identity scores measurably); computed in float32.
    """
    if len(images.shape) != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(
            f"images: expected shape (batch, S, S, 3) with square S, got {tuple(images.shape)}"
        )
    top, left, side = face_crop_box(images.shape[1])
    crop = keras.ops.cast(images, _FLOAT)[:, top : top + side, left : left + side, :]
    crop = keras.ops.image.resize(crop, (input_size, input_size), interpolation="bilinear")
    pixels = (crop + 1.0) * 127.5
    return (pixels - 127.5) / 128.0


def face_embedding(embedder, images):
    """Raw (not L2-normalised) embeddings of ``[-1, 1]`` aligned images (B, S, S, 3).

    Differentiable with respect to ``images``; the embedder stays frozen.
    """
    return embedder(embedder_input(images, embedder.input_shape[1]), training=False)


def main(argv=None):
    """Command line: convert a TFLite embedder to a ``.keras`` file."""
    parser = argparse.ArgumentParser(
        prog="python -m tfcartoon.models.face_id",
        description="Convert a float32 TFLite face embedder to a frozen .keras model.",
    )
    parser.add_argument("tflite", help="input .tflite file")
    parser.add_argument("output", help="output .keras file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    try:
        out = convert_face_embedder(args.tflite, args.output, overwrite=args.overwrite)
    except (OSError, ValueError, NotImplementedError) as error:
        parser.error(str(error))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
