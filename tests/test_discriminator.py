import keras
import numpy as np
import pytest

from tfcartoon.models.discriminator import build_discriminator
from tests.helpers import GROUPS


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.parametrize("kind, base, per_group, patch", [
    ("global", 13_294_048, 1_024, 6),
    ("local", 826_080, 256, 30),
])
def test_parameter_counts_and_output_shapes(kind, base, per_group, patch):
    for groups in (GROUPS, GROUPS + ["teens"]):
        disc = build_discriminator(kind, groups)
        assert _trainable(disc) == base + per_group * len(groups)
    out = disc(np.zeros((2, 256, 256, 3), "float32"))
    assert out["patch_logit"].shape == (2, patch, patch, 1)
    assert out["cam_logit"].shape == (2, 2)
    assert out["group_logit"].shape == (2, len(groups))


def test_discriminator_stays_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    disc = build_discriminator("local", GROUPS, ndf=8)
    out = disc(np.zeros((1, 64, 64, 3), "float32"))
    assert all(t.dtype == "float32" for t in out.values())
    assert all(v.dtype == "float32" for v in disc.weights)


def test_spectral_norm_bounds_the_kernels_after_training_calls():
    disc = build_discriminator("local", GROUPS, ndf=8)
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    for _ in range(30):
        disc(images, training=True)
    conv = disc.get_layer("conv1_sn").layer.kernel.numpy()
    sigma = np.linalg.svd(conv.reshape(-1, conv.shape[-1]), compute_uv=False)[0]
    assert sigma == pytest.approx(1.0, abs=0.05)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="'global', 'local'"):
        build_discriminator("patch", GROUPS)


def test_too_small_images_are_rejected_and_a_shallower_model_fits():
    with pytest.raises(ValueError, match="at least 96 px"):
        build_discriminator("global", GROUPS, ndf=8, image_size=64)
    disc = build_discriminator("global", GROUPS, ndf=8, image_size=64, n_layers=6)
    assert disc(np.zeros((1, 64, 64, 3), "float32"))["patch_logit"].shape == (1, 2, 2, 1)


def test_save_and_load_reproduce_outputs(tmp_path):
    disc = build_discriminator("global", GROUPS, ndf=8, n_layers=6)
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    disc.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    np.testing.assert_array_equal(loaded(images)["patch_logit"].numpy(),
                                  disc(images)["patch_logit"].numpy())


def test_spectral_norm_writes_w_over_sigma_and_is_not_differentiated_through_sigma():
    """Deviation kept (README, "Deviations"): Keras's SpectralNormalization normalises the
    kernel variable in place during training calls, and the gradient treats sigma as a
    constant. PyTorch's spectral_norm differentiates through sigma."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    layer = keras.layers.SpectralNormalization(keras.layers.Dense(3, use_bias=False),
                                               power_iterations=50)
    x = rng.normal(size=(5, 4)).astype("float32")
    weights = rng.normal(size=(5, 3)).astype("float32")
    layer.build(x.shape)
    kernel = layer.layer.kernel
    kernel.assign(rng.normal(size=(4, 3)).astype("float32") * 3.0)
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * weights)
    grad = tape.gradient(loss, kernel)
    # the variable now holds W / sigma: its largest singular value is 1
    assert np.linalg.svd(kernel.numpy(), compute_uv=False)[0] == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(y.numpy(), x @ kernel.numpy(), atol=1e-5)
    # and the gradient is that of x @ K for a constant K: no term through sigma
    np.testing.assert_allclose(grad.numpy(), x.T @ weights, atol=1e-4)
