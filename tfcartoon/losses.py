"""Loss terms of the method, as pure functions on tensors.

Every loss returns a float32 value, also for float16 inputs (mixed precision), or
float64 for float64 inputs.
With ``per_sample=True`` a loss returns one value per sample (B,), the mean over the
sample's elements; the default is the mean over the batch, which equals the
reference's mean over all elements. Weights are applied by the caller.
"""

import keras
from keras import ops

from tfcartoon.precision import at_least_float32


def _f32(*tensors):
    """The tensors in float32 (float16 activations of a mixed policy are upcast), or in
    float64 if one of them is float64."""
    dtype = at_least_float32(keras.backend.result_type(*(x.dtype for x in tensors)))
    cast = [ops.cast(x, dtype) for x in tensors]
    return cast if len(cast) > 1 else cast[0]


def _reduce(elementwise, per_sample):
    """Mean over all non-batch axes, then over the batch unless ``per_sample``."""
    axes = tuple(range(1, len(elementwise.shape)))
    values = ops.mean(elementwise, axis=axes) if axes else elementwise
    return values if per_sample else ops.mean(values)


def lsgan_real(logits, per_sample=False):
    """LSGAN term for logits that should say 'real': mean((logits - 1)^2)."""
    return _reduce(ops.square(_f32(logits) - 1.0), per_sample)


def lsgan_fake(logits, per_sample=False):
    """LSGAN term for logits that should say 'fake': mean(logits^2)."""
    return _reduce(ops.square(_f32(logits)), per_sample)


def discriminator_adversarial(real_logits, fake_logits, per_sample=False):
    """LSGAN discriminator loss: real -> 1, fake -> 0."""
    return lsgan_real(real_logits, per_sample) + lsgan_fake(fake_logits, per_sample)


def generator_adversarial(fake_logits, per_sample=False):
    """LSGAN generator loss: make the discriminator say 'real' on fakes."""
    return lsgan_real(fake_logits, per_sample)


def l1(a, b, per_sample=False):
    """Mean absolute difference (cycle and identity losses)."""
    return _reduce(ops.abs(ops.subtract(*_f32(a, b))), per_sample)


def gradient_l1(a, b, per_sample=False):
    """L1 between the horizontal and vertical finite differences of two image batches.

    Penalises blur that a plain L1 tolerates: a soft edge has a smaller gradient than
    the crisp one it should match.
    """
    a, b = _f32(a, b)

    def diffs(x):
        return x[:, 1:, :, :] - x[:, :-1, :, :], x[:, :, 1:, :] - x[:, :, :-1, :]

    (ay, ax), (by, bx) = diffs(a), diffs(b)
    return 0.5 * (_reduce(ops.abs(ay - by), per_sample) + _reduce(ops.abs(ax - bx), per_sample))


def gradient_energy_l1(a, b, patch=8, per_sample=False):
    """L1 between the local amounts of detail of two image batches.

    The amount of detail is the mean absolute image gradient over each ``patch`` x
    ``patch`` tile. Unlike ``gradient_l1`` it does not ask an edge to sit on the exact
    pixel of the target's, so where a line's position is uncertain (hair strands) it
    rewards drawing a crisp line somewhere near rather than a flat blur.
    """
    a, b = _f32(a, b)

    def detail(x):
        dy = ops.abs(x[:, 1:, :-1, :] - x[:, :-1, :-1, :])
        dx = ops.abs(x[:, :-1, 1:, :] - x[:, :-1, :-1, :])
        return ops.average_pool(0.5 * (dx + dy), patch, strides=patch, padding="valid")

    return _reduce(ops.abs(detail(a) - detail(b)), per_sample)


def cam_bce(logits, target, per_sample=False):
    """Binary cross-entropy with logits against a constant target (1 or 0)."""
    logits = _f32(logits)
    labels = ops.full_like(logits, float(target))
    return _reduce(ops.binary_crossentropy(labels, logits, from_logits=True), per_sample)


def face_id(real_embedding, fake_embedding, per_sample=False):
    """1 - cosine similarity of two embeddings (B, D)."""
    real, fake = (ops.normalize(x, axis=-1) for x in _f32(real_embedding, fake_embedding))
    values = 1.0 - ops.sum(real * fake, axis=-1)
    return values if per_sample else ops.mean(values)


def group_classification(logits, group, n_groups, per_sample=False):
    """MSE between group logits (B, n_groups) and the one-hot of ``group`` (B,)."""
    logits = _f32(logits)
    target = ops.one_hot(ops.cast(group, "int32"), n_groups, dtype=logits.dtype)
    return _reduce(ops.square(logits - target), per_sample)
