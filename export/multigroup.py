"""All groups in one graph, the shared trunk stored once.

``multigroup_core(generator)`` returns ``core(image, group)``: the group heads, CAM
scorers and tails are branches of ``tf.cond`` (TFLite IF ops, each branch its own
subgraph) selected by a group-index input, around one copy of the trunk.

Why one signature with a group input rather than one signature per group: TFLite
does store identical constants once, so per-group signatures share the trunk
weights, but every signature repeats the trunk's ~2,400 tensors and ~2,200 ops of
graph metadata (about 0.3 MB each); at ngf=32 four such signatures came to 1.28x a
single-group file, against 1.20x for this layout.
"""

import tensorflow as tf

from tfcartoon.models.generator import group_path


def select_branch(index, branches):
    """``branches[index]()`` as nested ``tf.cond`` (TFLite has IF but no CASE).

    An index outside ``[0, len(branches))`` runs the last branch.
    """
    if len(branches) == 1:
        return branches[0]()
    return tf.cond(tf.equal(index, 0), branches[0],
                   lambda: select_branch(index - 1, branches[1:]))


def multigroup_core(generator, wrap):
    """``core(image, group)``: image (1, S, S, 3) in [-1, 1], group (1,) int32 -> cartoon.

    ``group`` indexes ``generator.groups``. Each part of the generator is called
    through ``wrap(layer)`` (e.g. ``export.common.frozen_call``, which bakes the
    weights in as constants).
    """
    heads = [wrap(head) for head in generator.heads]
    cams = [wrap(cam) for cam in generator.cams]
    tails = [wrap(tail) for tail in generator.tails]
    encoder, decoder = wrap(generator.encoder), wrap(generator.decoder)

    def core(image, group):
        index = group[0]

        def switch(layers, pick=lambda out: out):
            # the input's static shape restated inside each branch: ONNX converters infer
            # the shapes of an If branch's ops from it (TFLite does not need it)
            return lambda x: select_branch(
                index, [lambda f=f: pick(f(tf.ensure_shape(x, x.shape))) for f in layers])

        def cam(x):  # the CAM logits are not an output of the export
            return switch(cams, pick=lambda out: out[0])(x), None

        cartoon, _, _ = group_path(image, switch(heads), encoder, cam, decoder, switch(tails))
        return cartoon

    return core


def auto_core(generator, classifier, threshold, wrap):
    """``core(image)`` -> (cartoon, probabilities): the classifier picks the group index.

    The rule is ``tfcartoon.models.group_classifier.route_index``: the most probable
    group, or the base group (index 0) when its probability is below ``threshold``.
    ``classifier`` takes the generator's image size and groups, in its order.
    """
    core, classify = multigroup_core(generator, wrap), wrap(classifier)

    def auto(image):
        probabilities = tf.cast(classify(image), tf.float32)
        top = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        confident = tf.reduce_max(probabilities, axis=-1) >= threshold
        index = tf.where(confident, top, tf.zeros_like(top))
        return core(image, index), probabilities

    return auto
