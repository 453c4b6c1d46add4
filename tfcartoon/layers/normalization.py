"""Normalisation layers of photo2cartoon / U-GAT-IT: IN, LIN and SoftAdaLIN.

Statistics are always computed in float32, also under a mixed precision policy (in
float64 under a float64 policy), and the result is cast back to the layer's compute
dtype. Inputs are NHWC.

``InstanceNorm`` follows ``torch.nn.InstanceNorm2d`` (biased variance, no affine).
``LIN`` and ``SoftAdaLIN`` follow the reference's hand-written norms, which use the
unbiased variance (``torch.var``, N-1) with eps inside the square root.
"""

import keras
from keras import ops

from tfcartoon.precision import at_least_float32

EPSILON = 1e-5


def _normalize(x, axes, unbiased, epsilon):
    """(x - mean) / sqrt(var + eps) over ``axes`` in float32."""
    mean, variance = ops.moments(x, axes=axes, keepdims=True)
    if unbiased:
        # Scale by the factor N / (N - 1), never by N itself: N reaches 65536 at 256 px,
        # which a float16 conversion (TFLite fp16 export) cannot represent.
        sizes = [x.shape[axis] for axis in axes]
        if all(size is not None for size in sizes):
            count = 1
            for size in sizes:
                count *= size
            variance = variance * (count / (count - 1.0))
        else:
            count = ops.cast(ops.prod(ops.take(ops.shape(x), list(axes))), x.dtype)
            variance = variance / (1.0 - 1.0 / count)
    return (x - mean) * ops.rsqrt(variance + epsilon)


def instance_norm(x, epsilon=EPSILON):
    """Instance norm without affine (biased variance), statistics in float32."""
    out = _normalize(ops.cast(x, at_least_float32(x.dtype)), (1, 2), unbiased=False, epsilon=epsilon)
    return ops.cast(out, x.dtype)


def _instance_layer_mix(x, rho, epsilon):
    """rho * IN(x) + (1 - rho) * LN(x) with unbiased statistics, in float32."""
    x = ops.cast(x, at_least_float32(x.dtype))
    out_in = _normalize(x, (1, 2), unbiased=True, epsilon=epsilon)
    out_ln = _normalize(x, (1, 2, 3), unbiased=True, epsilon=epsilon)
    rho = ops.cast(rho, x.dtype)
    return rho * out_in + (1.0 - rho) * out_ln


@keras.saving.register_keras_serializable(package="tfcartoon")
class UnitInterval(keras.constraints.Constraint):
    """Clips a weight to [0, 1] after every optimizer update (rho and w of the norms)."""

    def __call__(self, w):
        return ops.clip(w, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="tfcartoon")
class InstanceNorm(keras.layers.Layer):
    """Instance normalisation without learnable scale or shift (biased variance)."""

    def __init__(self, epsilon=EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, x):
        return ops.cast(instance_norm(x, self.epsilon), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="tfcartoon")
class LIN(keras.layers.Layer):
    """Layer-Instance Normalisation: rho * IN + (1 - rho) * LN, then gamma, beta.

    rho starts at 0 and is kept in [0, 1] by a constraint; gamma = 1, beta = 0 per channel.
    """

    def __init__(self, epsilon=EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.rho = self.add_weight(
            name="rho", shape=(channels,), initializer="zeros",
            constraint=UnitInterval(),
        )
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, x):
        out = _instance_layer_mix(x, self.rho, self.epsilon)
        out = out * ops.cast(self.gamma, out.dtype) + ops.cast(self.beta, out.dtype)
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="tfcartoon")
class SoftAdaLIN(keras.layers.Layer):
    """Soft adaptive LIN of photo2cartoon: called as ``SoftAdaLIN()([x, content, style])``.

    gamma and beta blend a content estimate (Dense-ReLU-Dense on the content feature)
    and a style estimate (one Dense on the style feature) with per-channel weights
    ``w_gamma``/``w_beta`` (init 0, kept in [0, 1]); the normalisation is
    ``rho * IN + (1 - rho) * LN`` with rho init 0.9, kept in [0, 1].
    Every SoftAdaLIN owns its MLPs.
    """

    def __init__(self, epsilon=EPSILON, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer or "glorot_uniform")

    def _dense(self, units, name, activation=None):
        return keras.layers.Dense(
            units, activation=activation, kernel_initializer=self.kernel_initializer,
            name=name, dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        x_shape, content_shape, style_shape = input_shape
        channels = x_shape[-1]
        self.content_gamma = [self._dense(channels, "content_gamma_0", "relu"),
                              self._dense(channels, "content_gamma_1")]
        self.content_beta = [self._dense(channels, "content_beta_0", "relu"),
                             self._dense(channels, "content_beta_1")]
        self.style_gamma = self._dense(channels, "style_gamma")
        self.style_beta = self._dense(channels, "style_beta")
        for first, second in (self.content_gamma, self.content_beta):
            first.build(content_shape)
            second.build((content_shape[0], channels))
        self.style_gamma.build(style_shape)
        self.style_beta.build(style_shape)
        self.rho = self.add_weight(name="rho", shape=(channels,),
                                   initializer=keras.initializers.Constant(0.9),
                                   constraint=UnitInterval())
        self.w_gamma = self.add_weight(name="w_gamma", shape=(channels,), initializer="zeros",
                                       constraint=UnitInterval())
        self.w_beta = self.add_weight(name="w_beta", shape=(channels,), initializer="zeros",
                                      constraint=UnitInterval())

    def call(self, inputs):
        x, content, style = inputs
        content_gamma = self.content_gamma[1](self.content_gamma[0](content))
        content_beta = self.content_beta[1](self.content_beta[0](content))
        style_gamma, style_beta = self.style_gamma(style), self.style_beta(style)
        out = _instance_layer_mix(x, self.rho, self.epsilon)
        dtype = out.dtype
        w_gamma, w_beta = ops.cast(self.w_gamma, dtype), ops.cast(self.w_beta, dtype)
        gamma = (1.0 - w_gamma) * ops.cast(style_gamma, dtype) + w_gamma * ops.cast(
            content_gamma, dtype)
        beta = (1.0 - w_beta) * ops.cast(style_beta, dtype) + w_beta * ops.cast(
            content_beta, dtype)
        out = out * gamma[:, None, None, :] + beta[:, None, None, :]
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
