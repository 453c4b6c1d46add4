"""Dataset layout, tf.data pipeline and face preprocessing."""
