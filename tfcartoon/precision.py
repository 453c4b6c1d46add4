"""Temporarily switch the global Keras dtype policy (e.g. to build a float32 copy)."""

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
