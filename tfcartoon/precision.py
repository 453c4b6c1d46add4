"""Dtype policy helpers: switch the global policy for a block (e.g. to build a float32
copy); the dtype of the parts that stay out of float16."""

import contextlib

import keras


@contextlib.contextmanager
def dtype_policy(name):
    """Set the global Keras dtype policy to ``name`` inside the block, then restore it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def at_least_float32(dtype=None):
    """The dtype of what never computes in float16 (norm statistics, losses,
    discriminators, the generator's output): float32, or float64 where ``dtype`` (a
    tensor's or layer's; default: the global policy's compute dtype) is float64, as in
    tests that compare two computations without float32 rounding."""
    if dtype is None:
        dtype = keras.config.dtype_policy().compute_dtype
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"
