"""Building blocks of the photo2cartoon generator, as functions on Keras tensors.

Each ``apply_*`` function takes a Keras tensor and returns one, creating its layers
with names under ``name``. Convolutions have no bias unless the reference has one,
pad by reflection, and use PyTorch's default initialisation.
"""

import keras
from keras import ops

from tfcartoon.layers.init import torch_kernel_initializer
from tfcartoon.layers.normalization import LIN, InstanceNorm, SoftAdaLIN, instance_norm
from tfcartoon.layers.padding import ReflectionPad2D, reflect_pad


def conv(x, filters, kernel_size, name, stride=1, pad=0, use_bias=False):
    """Reflection pad (if ``pad``) then a Conv2D with 'valid' padding."""
    if pad:
        x = ReflectionPad2D(pad, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters, kernel_size, strides=stride, padding="valid", use_bias=use_bias,
        kernel_initializer=torch_kernel_initializer(), name=name,
    )(x)


def in_relu(x, name):
    """Instance norm then ReLU."""
    x = InstanceNorm(name=f"{name}_in")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


@keras.saving.register_keras_serializable(package="tfcartoon")
class ConvBlock(keras.layers.Layer):
    """Pre-activation ConvBlock of photo2cartoon's hourglass, as one layer.

    x1 = conv3x3(ReLU(IN(x))) to C/2, x2 = conv3x3(ReLU(IN(x1))) to C/4,
    x3 = conv3x3(ReLU(IN(x2))) to C/4; returns shortcut(x) + concat(x1, x2, x3).
    The shortcut is the identity when widths match, else IN, ReLU, conv1x1. The
    reference creates that 1x1 kernel in every ConvBlock, used or not, so this layer
    owns it too: parameter counts and checkpoints then match the reference. (One layer
    instead of sixteen keeps graph tracing of the 50-odd blocks per generator fast.)
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def build(self, input_shape):
        init = torch_kernel_initializer()
        widths = [input_shape[-1], self.filters // 2, self.filters // 4, self.filters // 4]
        self.kernels = [
            self.add_weight(name=f"conv{i + 1}_kernel", shape=(3, 3, widths[i], widths[i + 1]),
                            initializer=init)
            for i in range(3)
        ]
        self.shortcut_kernel = self.add_weight(
            name="shortcut_kernel", shape=(1, 1, input_shape[-1], self.filters), initializer=init)

    def _conv(self, x, kernel, pad):
        x = ops.relu(instance_norm(x))
        if pad:
            x = reflect_pad(x, pad)
        return ops.conv(x, ops.cast(kernel, x.dtype), padding="valid")

    def call(self, x):
        outputs, h = [], x
        for kernel in self.kernels:
            h = self._conv(h, kernel, pad=1)
            outputs.append(h)
        shortcut = x if x.shape[-1] == self.filters else self._conv(x, self.shortcut_kernel, 0)
        return shortcut + ops.concatenate(outputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def apply_conv_block(x, filters, name):
    """One ``ConvBlock`` layer."""
    return ConvBlock(filters, name=name)(x)


def apply_hourglass_block(x, filters, name, depth=4):
    """Hourglass of ConvBlocks: ``depth`` levels of 2x2 average pooling and back."""
    skips = []
    for level in range(1, depth + 1):
        skips.append(apply_conv_block(x, filters, f"{name}_skip{level}"))
        x = keras.layers.AveragePooling2D(2, name=f"{name}_pool{level}")(x)
        x = apply_conv_block(x, filters, f"{name}_down{level}")
    x = apply_conv_block(x, filters, f"{name}_center")
    for level in range(depth, 0, -1):
        x = apply_conv_block(x, filters, f"{name}_up{level}")
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample{level}")(x)
        x = keras.layers.Add(name=f"{name}_merge{level}")([skips[level - 1], x])
    return x


def apply_hourglass(x, filters, name, residual=True, depth=4):
    """HourGlass module: returns ``x + conv(ll) + conv(tmp)``, or the 3-channel ``tmp``."""
    ll = apply_hourglass_block(x, filters, f"{name}_block", depth=depth)
    ll = apply_conv_block(ll, filters, f"{name}_conv_block")
    ll = conv(ll, filters, 1, f"{name}_conv_ll")
    ll = in_relu(ll, f"{name}_ll")
    tmp = conv(ll, 3, 1, f"{name}_to_rgb", use_bias=True)
    if not residual:
        return tmp
    ll = conv(ll, filters, 1, f"{name}_conv_res", use_bias=True)
    tmp = conv(tmp, filters, 1, f"{name}_from_rgb", use_bias=True)
    return keras.layers.Add(name=f"{name}_add")([x, ll, tmp])


def apply_down_block(x, filters, name):
    """pad1, conv3x3 stride 2, IN, ReLU."""
    return in_relu(conv(x, filters, 3, f"{name}_conv", stride=2, pad=1), name)


def apply_resnet_block(x, name):
    """Residual block with instance norm (encoder bottleneck)."""
    filters = x.shape[-1]
    y = in_relu(conv(x, filters, 3, f"{name}_conv1", pad=1), f"{name}_1")
    y = InstanceNorm(name=f"{name}_in2")(conv(y, filters, 3, f"{name}_conv2", pad=1))
    return keras.layers.Add(name=f"{name}_add")([x, y])


def apply_soft_adalin_block(x, content, style, name):
    """Residual block whose norms are SoftAdaLIN driven by content and style features."""
    filters = x.shape[-1]
    init = torch_kernel_initializer()
    y = conv(x, filters, 3, f"{name}_conv1", pad=1)
    y = SoftAdaLIN(kernel_initializer=init, name=f"{name}_norm1")([y, content, style])
    y = keras.layers.ReLU(name=f"{name}_relu")(y)
    y = conv(y, filters, 3, f"{name}_conv2", pad=1)
    y = SoftAdaLIN(kernel_initializer=init, name=f"{name}_norm2")([y, content, style])
    return keras.layers.Add(name=f"{name}_add")([x, y])


def apply_up_block(x, filters, name):
    """Nearest x2 upsampling, pad1, conv3x3, LIN, ReLU."""
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(x)
    x = LIN(name=f"{name}_lin")(conv(x, filters, 3, f"{name}_conv", pad=1))
    return keras.layers.ReLU(name=f"{name}_relu")(x)
