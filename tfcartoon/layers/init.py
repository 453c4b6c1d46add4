"""Weight initialisation matching PyTorch's defaults, as the reference uses them."""

import keras


def torch_kernel_initializer(seed=None):
    """PyTorch's default Conv/Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed
    )
