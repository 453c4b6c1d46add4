"""Per-sample routing of a batch through group-specific branches."""

import keras
import tensorflow as tf


class GroupSwitch(keras.layers.Layer):
    """Sends each sample through the branch of its group and restores batch order.

    Called as ``GroupSwitch(branches)(x, group)`` with ``group`` an int tensor (B,)
    of indices into ``branches``. A batch may mix groups; each branch runs only on
    its own samples and a branch with none is skipped, so a mixed batch costs the
    same as a single-group one. Branches may return a tensor or a tuple.
    """

    def __init__(self, branches, **kwargs):
        super().__init__(**kwargs)
        self.branches = list(branches)
        # Output specs of each branch per input shape, computed once (kept untracked).
        object.__setattr__(self, "_specs", {})

    def call(self, x, group):
        count = len(self.branches)
        group = tf.cast(group, tf.int32)
        positions = tf.dynamic_partition(tf.range(tf.shape(group)[0]), group, count)
        parts = tf.dynamic_partition(x, group, count)
        outputs = [self._run(branch, part) for branch, part in zip(self.branches, parts)]
        flat = [tf.nest.flatten(out) for out in outputs]
        stitched = [
            tf.dynamic_stitch(positions, [f[i] for f in flat]) for i in range(len(flat[0]))
        ]
        return tf.nest.pack_sequence_as(outputs[0], stitched)

    def _run(self, branch, part):
        """``branch(part)``, or empty outputs of the right shapes when ``part`` is empty.

        Skipping matters: the work is saved, and reflection padding rejects empty batches.
        """
        key = (id(branch), tuple(part.shape[1:]), part.dtype)
        if key not in self._specs:
            self._specs[key] = branch.compute_output_spec(
                keras.KerasTensor((None, *part.shape[1:]), dtype=part.dtype))
        spec = self._specs[key]
        empty = tf.nest.map_structure(
            lambda s: tf.zeros((0, *s.shape[1:]), dtype=s.dtype), spec)
        return tf.cond(tf.shape(part)[0] > 0, lambda: branch(part), lambda: empty)
