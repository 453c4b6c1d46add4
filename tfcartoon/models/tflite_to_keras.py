"""A float32 TFLite model rebuilt op by op as a frozen Keras functional model.

:func:`tflite_to_keras` reads the graph and its weights from the flatbuffer (with the
schema bundled in TensorFlow, so no extra dependency) and rebuilds it out of standard
Keras layers, with the weights copied exactly, every layer frozen and computing in
float32 whatever the global dtype policy. The result saves to and reloads from the
``.keras`` format without any custom object. Used for the face-ID embedder
(:mod:`tfcartoon.models.face_id`); nothing in it is specific to faces.
"""

from pathlib import Path

import keras
import numpy as np
from tensorflow.lite.python import schema_py_generated as tflite_schema

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
