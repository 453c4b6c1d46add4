"""Loss terms of the method, as pure functions on tensors.

Every loss returns a float32 scalar, also when its inputs are float16 (mixed
precision). Weights are applied by the caller (see ``tfcartoon.config``).
"""

import keras
from keras import ops


def _f32(x):
    return ops.cast(x, "float32")


def lsgan_real(logits):
    """LSGAN term for logits that should say 'real': mean((logits - 1)^2)."""
    return ops.mean(ops.square(_f32(logits) - 1.0))


def lsgan_fake(logits):
    """LSGAN term for logits that should say 'fake': mean(logits^2)."""
    return ops.mean(ops.square(_f32(logits)))


def discriminator_adversarial(real_logits, fake_logits):
    """LSGAN discriminator loss: real -> 1, fake -> 0."""
    return lsgan_real(real_logits) + lsgan_fake(fake_logits)


def generator_adversarial(fake_logits):
    """LSGAN generator loss: make the discriminator say 'real' on fakes."""
    return lsgan_real(fake_logits)


def l1(a, b):
    """Mean absolute difference (cycle and identity losses)."""
    return ops.mean(ops.abs(_f32(a) - _f32(b)))


def cam_bce(logits, target):
    """Binary cross-entropy with logits against a constant target (1 or 0), mean over all."""
    logits = _f32(logits)
    labels = ops.full_like(logits, float(target))
    return ops.mean(keras.losses.binary_crossentropy(labels, logits, from_logits=True))


def face_id(real_embedding, fake_embedding):
    """1 - cosine similarity of two embeddings (B, D), averaged over the batch."""
    real = ops.normalize(_f32(real_embedding), axis=-1)
    fake = ops.normalize(_f32(fake_embedding), axis=-1)
    return ops.mean(1.0 - ops.sum(real * fake, axis=-1))


def group_classification(logits, group, n_groups):
    """MSE between group logits (B, n_groups) and the one-hot of ``group`` (B,)."""
    target = ops.one_hot(ops.cast(group, "int32"), n_groups)
    return ops.mean(ops.square(_f32(logits) - target))
