"""Class activation map (CAM) scoring of U-GAT-IT."""

import keras
from keras import ops

from tfcartoon.layers.init import torch_kernel_initializer


@keras.saving.register_keras_serializable(package="tfcartoon")
class CAMScore(keras.layers.Layer):
    """Scores a feature map with Dense(C->1) on its global average and max pools.

    Returns ``(features, cam_logit)``: the input scaled channel-wise by each Dense
    kernel, concatenated (2C channels), and the two logits (B, 2). In the generator
    this pair of Dense layers belongs to one group; the discriminators spectrally
    normalise it and drop the bias.
    """

    def __init__(self, use_bias=True, spectral_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.use_bias = use_bias
        self.spectral_norm = spectral_norm

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gap_fc = self._scorer("gap_fc")
        self.gmp_fc = self._scorer("gmp_fc")
        for scorer in (self.gap_fc, self.gmp_fc):
            scorer.build((input_shape[0], channels))

    def _scorer(self, name):
        dense = keras.layers.Dense(1, use_bias=self.use_bias, name=name,
                                   kernel_initializer=torch_kernel_initializer(),
                                   dtype=self.dtype_policy)
        if self.spectral_norm:
            return keras.layers.SpectralNormalization(dense, name=f"{name}_sn",
                                                      dtype=self.dtype_policy)
        return dense

    def _kernel(self, scorer):
        dense = scorer.layer if self.spectral_norm else scorer
        return ops.reshape(ops.cast(dense.kernel, self.compute_dtype), (1, 1, 1, -1))

    def call(self, x, training=False):
        gap = ops.mean(x, axis=(1, 2))
        gmp = ops.max(x, axis=(1, 2))
        if self.spectral_norm:
            gap_logit = self.gap_fc(gap, training=training)
            gmp_logit = self.gmp_fc(gmp, training=training)
        else:
            gap_logit, gmp_logit = self.gap_fc(gap), self.gmp_fc(gmp)
        features = ops.concatenate(
            [x * self._kernel(self.gap_fc), x * self._kernel(self.gmp_fc)], axis=-1)
        cam_logit = ops.concatenate([gap_logit, gmp_logit], axis=-1)
        return features, cam_logit

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * input_shape[-1]), (input_shape[0], 2)

    def get_config(self):
        return {**super().get_config(), "use_bias": self.use_bias,
                "spectral_norm": self.spectral_norm}


@keras.saving.register_keras_serializable(package="tfcartoon")
class ChannelSum(keras.layers.Layer):
    """Sum over channels, keeping the axis: the CAM heatmap (B, H, W, 1)."""

    def call(self, x):
        return ops.sum(x, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)
