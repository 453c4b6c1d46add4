"""Reflection padding (every padded conv of the reference pads by reflection)."""

import keras
from keras import ops


def reflect_pad(x, padding):
    """Reflection-pad H and W of an NHWC tensor by ``padding`` pixels."""
    p = padding
    return ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")


@keras.saving.register_keras_serializable(package="tfcartoon")
class ReflectionPad2D(keras.layers.Layer):
    """Pads H and W of an NHWC tensor by ``padding`` pixels, mirroring without the edge."""

    def __init__(self, padding, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, x):
        return reflect_pad(x, self.padding)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        grow = 2 * self.padding
        return (batch, None if height is None else height + grow,
                None if width is None else width + grow, channels)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}
