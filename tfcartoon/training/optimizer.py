"""Adam as the reference uses it, with a small graph.

The reference trains with ``torch.optim.Adam(lr, betas, weight_decay=1e-4)``: weight
decay there is a coupled L2 term (``grad += wd * param``), not AdamW's decoupled decay,
and epsilon is 1e-8. ``ReferenceAdam`` does the same, and builds the step's scalars
(bias-corrected step size and the rest) once per step instead of once per variable:
about 10 ops per variable instead of the ~40 of Keras' generic update, which matters
for a model with ~500 variables whose training graph TensorFlow has to build and
optimise before the first step. (TensorFlow's fused ``ResourceApplyAdam`` would be
smaller still, but it made training non-deterministic next to the norm weights'
constraints.)
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfcartoon")
class ReferenceAdam(keras.optimizers.Adam):
    """Keras Adam with coupled L2 weight decay (``l2``) and a fused update kernel."""

    def __init__(self, learning_rate=1e-4, beta_1=0.5, beta_2=0.999, epsilon=1e-8, l2=0.0,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, **kwargs)
        self.l2 = l2

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # One call per ``apply``: the scalars cached below belong to this call only.
        object.__setattr__(self, "_scalar_cache", None)
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            object.__setattr__(self, "_scalar_cache", None)

    def _scalars(self, learning_rate, dtype):
        """The step's scalars (bias-corrected step size, betas, eps, l2), built once per
        ``apply`` and shared by every variable, which keeps the training graph small."""
        cached = getattr(self, "_scalar_cache", None)
        if cached is None or cached[0] is not learning_rate or cached[1] != dtype:
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            alpha = (tf.cast(learning_rate, dtype) * tf.sqrt(1.0 - tf.pow(beta_2, step))
                     / (1.0 - tf.pow(beta_1, step)))
            values = {"alpha": alpha, "one_minus_beta_1": 1.0 - beta_1,
                      "one_minus_beta_2": 1.0 - beta_2, "epsilon": tf.cast(self.epsilon, dtype),
                      "l2": tf.cast(self.l2, dtype)}
            cached = (learning_rate, dtype, values)
            object.__setattr__(self, "_scalar_cache", cached)
        return cached[2]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        s = self._scalars(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        if self.l2:
            gradient = gradient + s["l2"] * variable
        self.assign_add(m, (gradient - m) * s["one_minus_beta_1"])
        self.assign_add(v, (tf.square(gradient) - v) * s["one_minus_beta_2"])
        self.assign_sub(variable, s["alpha"] * m / (tf.sqrt(v) + s["epsilon"]))

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}
