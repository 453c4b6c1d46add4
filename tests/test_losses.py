import numpy as np
import pytest

from tfcartoon import losses


def test_lsgan_terms_pin_hand_computed_values():
    real = np.array([[1.0, 0.0], [2.0, 1.0]], "float32")  # (x-1)^2: 0, 1, 1, 0
    fake = np.array([0.5, -1.0], "float32")  # x^2: 0.25, 1
    assert float(losses.lsgan_real(real)) == pytest.approx(0.5)
    assert float(losses.lsgan_fake(fake)) == pytest.approx(0.625)
    assert float(losses.discriminator_adversarial(real, fake)) == pytest.approx(1.125)
    assert float(losses.generator_adversarial(fake)) == pytest.approx((0.25 + 4.0) / 2)


def test_l1_is_mean_absolute_difference():
    a = np.array([[0.0, 1.0], [2.0, -1.0]], "float32")
    b = np.array([[1.0, 1.0], [0.0, 1.0]], "float32")
    assert float(losses.l1(a, b)) == pytest.approx((1 + 0 + 2 + 2) / 4)


def test_cam_bce_against_constant_target():
    logits = np.array([[0.0, 2.0]], "float32")
    expected_one = (np.log(2.0) + np.log1p(np.exp(-2.0))) / 2
    expected_zero = (np.log(2.0) + np.log1p(np.exp(2.0))) / 2
    assert float(losses.cam_bce(logits, 1)) == pytest.approx(expected_one, rel=1e-5)
    assert float(losses.cam_bce(logits, 0)) == pytest.approx(expected_zero, rel=1e-5)


def test_face_id_is_one_minus_cosine_and_ignores_scale():
    real = np.array([[1.0, 0.0], [3.0, 4.0]], "float32")
    fake = np.array([[0.0, 2.0], [6.0, 8.0]], "float32")  # cos 0 and cos 1
    assert float(losses.face_id(real, fake)) == pytest.approx(0.5, abs=1e-6)


def test_group_classification_is_mse_against_one_hot():
    logits = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], "float32")
    group = np.array([0, 2])
    # row 0: exact; row 1: (0.25 + 0.25 + 1) -> mean over 6 entries
    assert float(losses.group_classification(logits, group, 3)) == pytest.approx(1.5 / 6)


def test_losses_are_float32_for_float16_inputs():
    logits = np.array([0.5, 2.0], "float16")
    assert losses.lsgan_real(logits).dtype == "float32"
    assert losses.l1(logits, logits).dtype == "float32"


def test_per_sample_values_average_to_the_batch_loss():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4, 4, 3)).astype("float32")
    b = rng.normal(size=(3, 4, 4, 3)).astype("float32")
    per_sample = losses.l1(a, b, per_sample=True).numpy()
    np.testing.assert_allclose(per_sample, np.abs(a - b).mean(axis=(1, 2, 3)), rtol=1e-6)
    assert float(losses.l1(a, b)) == pytest.approx(per_sample.mean(), rel=1e-6)
    logits = rng.normal(size=(3, 2)).astype("float32")
    np.testing.assert_allclose(losses.cam_bce(logits, 1, per_sample=True).numpy(),
                               np.log1p(np.exp(-logits)).mean(axis=1), rtol=1e-5)
