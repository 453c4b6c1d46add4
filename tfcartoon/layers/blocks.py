"""Building blocks of the photo2cartoon generator, as functions on Keras tensors.

Each ``apply_*`` function takes a Keras tensor and returns one, creating its layers
with names under ``name``. Convolutions have no bias unless the reference has one,
pad by reflection, and use PyTorch's default initialisation.
"""

import keras
from keras import ops

from tfcartoon.layers.init import torch_kernel_initializer
from tfcartoon.layers.normalization import LIN, InstanceNorm, SoftAdaLIN
from tfcartoon.layers.padding import ReflectionPad2D


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
class ConvBlockShortcut(keras.layers.Layer):
    """Shortcut of the reference ConvBlock: IN, ReLU, conv1x1 when widths differ.

    The reference creates this 1x1 projection in every ConvBlock but only applies it
    when the input and output widths differ; in the generator they never do, so the
    layer is the identity there. It still owns the kernel so that parameter counts
    and checkpoints match the reference.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(1, 1, input_shape[-1], self.filters),
            initializer=torch_kernel_initializer(),
        )
        self.norm = InstanceNorm(dtype=self.dtype_policy)

    def call(self, x):
        if x.shape[-1] == self.filters:
            return x
        x = ops.relu(self.norm(x))
        return ops.conv(x, ops.cast(self.kernel, self.compute_dtype), padding="valid")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def apply_conv_block(x, filters, name):
    """Pre-activation ConvBlock: concat of three 3x3 convs (C/2, C/4, C/4) + shortcut."""
    x1 = conv(in_relu(x, f"{name}_1"), filters // 2, 3, f"{name}_1_conv", pad=1)
    x2 = conv(in_relu(x1, f"{name}_2"), filters // 4, 3, f"{name}_2_conv", pad=1)
    x3 = conv(in_relu(x2, f"{name}_3"), filters // 4, 3, f"{name}_3_conv", pad=1)
    out = keras.layers.Concatenate(name=f"{name}_concat")([x1, x2, x3])
    shortcut = ConvBlockShortcut(filters, name=f"{name}_shortcut")(x)
    return keras.layers.Add(name=f"{name}_add")([shortcut, out])


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


def apply_hourglass(x, filters, name, residual=True):
    """HourGlass module: returns ``x + conv(ll) + conv(tmp)``, or the 3-channel ``tmp``."""
    ll = apply_hourglass_block(x, filters, f"{name}_block")
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
