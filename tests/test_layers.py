import keras
import numpy as np

from tfcartoon.layers import (
    CAMScore, GroupSwitch, InstanceNorm, LIN, ReflectionPad2D, SoftAdaLIN, UnitInterval)

RNG = np.random.default_rng(0)


def _numpy_norm(x, axes, ddof):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    return (x - mean) / np.sqrt(var + 1e-5)


def test_instance_norm_uses_biased_variance_per_sample_and_channel():
    x = RNG.normal(3.0, 2.0, (2, 5, 6, 4)).astype("float32")
    out = InstanceNorm()(x).numpy()
    np.testing.assert_allclose(out, _numpy_norm(x, (1, 2), ddof=0), atol=1e-5)


def test_lin_blends_instance_and_layer_norm_with_unbiased_variance():
    x = RNG.normal(1.0, 3.0, (2, 4, 4, 3)).astype("float32")
    layer = LIN()
    layer.build(x.shape)
    np.testing.assert_allclose(layer(x).numpy(), _numpy_norm(x, (1, 2, 3), ddof=1), atol=1e-5)
    layer.rho.assign(np.full(3, 0.25, "float32"))
    layer.gamma.assign(np.array([1.0, 2.0, 3.0], "float32"))
    layer.beta.assign(np.array([0.5, 0.0, -1.0], "float32"))
    mixed = 0.25 * _numpy_norm(x, (1, 2), 1) + 0.75 * _numpy_norm(x, (1, 2, 3), 1)
    np.testing.assert_allclose(layer(x).numpy(), mixed * [1, 2, 3] + [0.5, 0, -1], atol=1e-5)


def test_soft_adalin_blends_style_and_content_parameters():
    x = RNG.normal(size=(2, 4, 4, 3)).astype("float32")
    content = RNG.normal(size=(2, 3)).astype("float32")
    style = RNG.normal(size=(2, 3)).astype("float32")
    layer = SoftAdaLIN()
    out = layer([x, content, style]).numpy()
    assert len(layer.trainable_weights) == 2 * 4 + 2 * 2 + 3
    normed = 0.9 * _numpy_norm(x, (1, 2), 1) + 0.1 * _numpy_norm(x, (1, 2, 3), 1)
    style_gamma = layer.style_gamma(style).numpy()
    style_beta = layer.style_beta(style).numpy()
    # w = 0 at init: only the style estimate counts.
    np.testing.assert_allclose(out, normed * style_gamma[:, None, None] + style_beta[:, None, None],
                               atol=1e-5)
    layer.w_gamma.assign(np.ones(3, "float32"))
    content_gamma = layer.content_gamma[1](layer.content_gamma[0](content)).numpy()
    out = layer([x, content, style]).numpy()
    np.testing.assert_allclose(out, normed * content_gamma[:, None, None] + style_beta[:, None, None],
                               atol=1e-5)


def test_norm_weights_are_clipped_to_unit_interval_after_each_update():
    layer = SoftAdaLIN()
    layer.build([(None, 4, 4, 3), (None, 3), (None, 3)])
    for weight in (layer.rho, layer.w_gamma, layer.w_beta):
        assert isinstance(weight.constraint, UnitInterval)
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    optimizer.apply([np.full(3, -5.0, "float32"), np.full(3, 5.0, "float32")],
                    [layer.rho, layer.w_gamma])
    np.testing.assert_array_equal(layer.rho.numpy(), np.ones(3))
    np.testing.assert_array_equal(layer.w_gamma.numpy(), np.zeros(3))


def test_norm_statistics_stay_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    x = RNG.normal(0.0, 1000.0, (1, 8, 8, 2)).astype("float32")  # variance overflows fp16
    out = InstanceNorm()(x.astype("float16"))
    assert out.dtype == "float16"
    expected = _numpy_norm(x.astype("float16").astype("float32"), (1, 2), ddof=0)
    np.testing.assert_allclose(out.numpy().astype("float32"), expected, atol=2e-3)
    lin = LIN()
    assert np.isfinite(lin(x.astype("float16")).numpy().astype("float32")).all()


def test_reflection_pad_matches_numpy_reflect():
    x = RNG.normal(size=(1, 5, 4, 2)).astype("float32")
    out = ReflectionPad2D(2)(x).numpy()
    np.testing.assert_array_equal(out, np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect"))


def test_cam_score_scales_features_by_the_scoring_kernels():
    x = RNG.normal(size=(2, 3, 3, 4)).astype("float32")
    cam = CAMScore()
    features, logits = cam(x)
    gap_k, gap_b = (w.numpy() for w in cam.gap_fc.weights)
    gmp_k, gmp_b = (w.numpy() for w in cam.gmp_fc.weights)
    np.testing.assert_allclose(logits.numpy()[:, 0], x.mean((1, 2)) @ gap_k[:, 0] + gap_b, atol=1e-5)
    np.testing.assert_allclose(logits.numpy()[:, 1], x.max((1, 2)) @ gmp_k[:, 0] + gmp_b, atol=1e-5)
    np.testing.assert_allclose(features.numpy(),
                               np.concatenate([x * gap_k[:, 0], x * gmp_k[:, 0]], -1), atol=1e-6)


def test_group_switch_routes_each_sample_to_its_branch_in_order():
    branches = [keras.layers.Lambda(lambda t, k=k: t * 10.0 + k) for k in range(3)]
    x = np.arange(5, dtype="float32")[:, None]
    group = np.array([2, 0, 2, 1, 0], "int32")
    out = GroupSwitch(branches)(x, group).numpy()[:, 0]
    np.testing.assert_array_equal(out, x[:, 0] * 10.0 + group)
