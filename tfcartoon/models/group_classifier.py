"""The group classifier: which branch should draw this face?

A small CNN reads an aligned face crop, the same float32 (B, S, S, 3) image in
[-1, 1] that the generator takes, and returns one probability per group, in the
order of the model's groups. It average-pools the face to ``input_size`` first,
then runs four stride-2 conv / batch-norm / ReLU blocks (``width`` channels, doubled
at each), global average pooling and a dense layer. At width 16 that is about 0.1 M
parameters and ~4 M multiply-adds at 64 px, next to the generator's billions: it
costs little in a camera filter. Pooling has no weights, so one set of weights
serves every face size that is a multiple of ``input_size``.

Routing is the rule ``route_index``: the most probable group, or the base group
(index 0) when that probability is below the threshold. The exporters build the
same rule into their graphs.
"""

import keras
import numpy as np
from keras import layers

BLOCKS = 4


def build_group_classifier(groups, image_size=256, input_size=64, width=16, dropout=0.2,
                           name="group_classifier"):
    """The classifier for ``groups``: (B, image_size, image_size, 3) in [-1, 1] -> (B, G) probabilities.

    Raises:
        ValueError: ``image_size`` is not a multiple of ``input_size``, or ``input_size``
            is not a multiple of 16 (four stride-2 blocks).
    """
    groups = list(groups)
    if not groups:
        raise ValueError("the group classifier needs at least one group, got []")
    if input_size < 16 or input_size % 16 or image_size % input_size:
        raise ValueError(f"group classifier: input_size must be a multiple of 16 that divides "
                         f"the face size {image_size}, got {input_size}")
    face = keras.Input((image_size, image_size, 3), name="face")
    x = face
    if image_size != input_size:
        factor = image_size // input_size
        x = layers.AveragePooling2D(factor, name="downsample")(x)
    for block in range(BLOCKS):
        x = layers.Conv2D(width * 2 ** block, 3, strides=2, padding="same", use_bias=False,
                          name=f"conv{block}")(x)
        x = layers.BatchNormalization(name=f"norm{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(len(groups), name="logits")(x)
    probabilities = layers.Softmax(dtype="float32", name="probabilities")(logits)
    return keras.Model(face, probabilities, name=name)


def resized(classifier, image_size, input_size):
    """A copy of ``classifier`` taking faces of side ``image_size`` (same weights)."""
    groups = classifier.output.shape[-1]
    width = classifier.get_layer("conv0").filters
    copy = build_group_classifier(range(groups), image_size, input_size, width,
                                  name=classifier.name)
    for layer in copy.layers:
        if layer.weights:
            layer.set_weights(classifier.get_layer(layer.name).get_weights())
    return copy


def route_index(probabilities, threshold, base_index=0):
    """(index, probability, fallback) per row of (B, G) ``probabilities``.

    ``index`` is the most probable group, or ``base_index`` when its probability is
    below ``threshold`` (``fallback`` is True when that changed the group).
    ``probability`` is the top one.
    """
    probabilities = np.asarray(probabilities, np.float32)
    top = probabilities.argmax(axis=-1)
    confidence = probabilities.max(axis=-1)
    unsure = confidence < threshold
    return np.where(unsure, base_index, top), confidence, unsure & (top != base_index)
